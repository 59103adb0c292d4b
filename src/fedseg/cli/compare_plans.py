"""``fedseg compare``: federation plans side by side with the centralized and single-site
models, on the same sites, seed and epoch budget."""

from __future__ import annotations

from pathlib import Path

import typer
from click.core import ParameterSource

from fedseg.cli.compute_options import (
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PRECISION,
    compute_overrides,
)
from fedseg.cli.plateau_options import MIN_DELTA, UNTIL_PLATEAU, with_plateau
from fedseg.errors import FedsegError


def compare(
    ctx: typer.Context,
    plans: list[str] = typer.Argument(
        None,
        help="Plan files, or strategies by name with parameters NAME:k=v,k=v (e.g. fedavg "
        "fedprox:mu=0.01 krum:f=1 cyclic:order=shuffled single-pass).",
        show_default=False,
    ),
    data: list[Path] = typer.Option(
        None,
        "--data",
        help="Site data folders that train (repeat the option); the folder name is the site name.",
        show_default=False,
    ),
    out: Path = typer.Option(None, "--out", help="New output folder.", show_default=False),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="Continue the comparison in this folder (a run that died) with its recorded "
        "settings (compare.yaml): every run goes on after its last finished round.",
        show_default=False,
    ),
    holdout: list[Path] = typer.Option(
        None, "--holdout", help="Site folders that never train: all their cases test the models."
    ),
    budget: int = typer.Option(4, "--budget", min=1, help="Local epochs per site, every run."),
    until_plateau: int | None = UNTIL_PLATEAU,
    min_delta: float = MIN_DELTA,
    seed: int = typer.Option(0, "--seed", help="Seed of the initial model, data order, draws."),
    recipe: Path = typer.Option(
        None, "--recipe", help="Recipe YAML (network + train); default: the CPU demo recipe."
    ),
    poison: str = typer.Option(
        None,
        "--poison",
        help="A poisoned site: SITE:scale=50 (its update x50), SITE:scramble "
        "(its labels NCR->ED->ET->NCR), SITE:n_train=N (it claims N training cases) or "
        "SITE:dice=D (it claims Dice D over 10,000 cases for the initial model).",
    ),
    no_bounds: bool = typer.Option(
        False,
        "--no-bounds",
        help="Switch off the plans' report and norm bounds (plan `bounds`), to measure "
        "what they prevent.",
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch CPU threads."),
    no_baselines: bool = typer.Option(
        False, "--no-baselines", help="Skip the centralized and single-site models."
    ),
    no_single_sites: bool = typer.Option(
        False, "--no-single-sites", help="Of the baselines, the centralized model only."
    ),
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
    channels_last: bool | None = CHANNELS_LAST,
    compile_: bool | None = COMPILE,
) -> None:
    """Run several federation plans and the baselines on the same sites, seed and budget.

    PLANS are plan files or strategies by name with parameters, NAME:k=v,k=v, e.g.
    fedavg fedprox:mu=0.01 fedadam median trimmed-mean:beta=0.25 krum:f=1
    cyclic:order=shuffled single-pass. Writes results.csv/.md, per_site.csv and curves.png.
    --device/--precision apply to every run (one machine).
    """
    from fedseg.federation.commands.compare_plans.run import load_compare, run_compare

    if resume is not None:
        if given := _given(ctx, but="resume"):
            raise FedsegError(f"--resume takes the comparison's recorded settings; leave out "
                              f"{', '.join(given)}")  # fmt: skip
        run_compare(load_compare(resume), resume, resume=True)
        _wrote(resume)
        return
    if not plans or not data or out is None:
        raise FedsegError("name the plans, at least one --data site folder and --out "
                          "(or --resume DIR to continue a comparison)")  # fmt: skip
    compute = compute_overrides(device, precision, channels_last, compile_)
    from fedseg.federation.commands.central_training import site_names
    from fedseg.federation.commands.compare_plans.arguments import (
        CompareConfig,
        parse_plan_arg,
        parse_poison,
    )
    from fedseg.train.config import RecipeConfig

    rec = RecipeConfig.from_yaml(recipe) if recipe else RecipeConfig.cpu()
    train = with_plateau(rec.train, until_plateau, min_delta)
    held = list(holdout or [])
    cfg = CompareConfig(
        plans=[parse_plan_arg(p) for p in plans],
        sites={n: p.resolve() for n, p in zip(site_names(data), data, strict=True)},
        holdout={n: p.resolve() for n, p in zip(site_names(held), held, strict=True)},
        budget=budget,
        seed=seed,
        network=rec.network,
        train=train,
        poison=parse_poison(poison) if poison else None,
        bounds=not no_bounds,
        baselines=not no_baselines,
        single_sites=not no_single_sites,
        threads=threads,
        compute=compute,
    )
    run_compare(cfg, out)
    _wrote(out)


def _wrote(out: Path) -> None:
    typer.echo(f"wrote {out / 'results.md'}, {out / 'results.csv'} and {out / 'curves.png'}")


def _given(ctx: typer.Context, but: str) -> list[str]:
    """The arguments and options given on the command line, other than ``but``."""
    cli = ParameterSource.COMMANDLINE
    given = [n for n in ctx.params if n != but and ctx.get_parameter_source(n) == cli]
    return sorted("PLANS" if n == "plans" else f"--{n.rstrip('_').replace('_', '-')}"
                  for n in given)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
