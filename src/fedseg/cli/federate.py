"""`fedseg plan init`, `fedseg simulate`, `fedseg resume`: write a plan, run a federation on
one machine, continue one whose aggregator stopped."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedseg.cli.compute_options import (
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PRECISION,
    compute_overrides,
)
from fedseg.cli.dashboard import DASHBOARD, DASHBOARD_PORT, dashboard_or_not

if TYPE_CHECKING:
    from fedseg.federation.commands.engine_run import RunResult

plan_app = typer.Typer(no_args_is_help=True, help="Write and check federation plans.")


@plan_app.command("init")
def plan_init(
    plan: Path = typer.Argument(..., help="Plan file to write (YAML)."),
    sites: list[Path] = typer.Option(
        None, "--sites", help="Site data folders (repeat the option); default: placeholders."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    task: str = typer.Option(
        "segmentation", "--task", help="segmentation, or synthesis (a ModalityBank generator)."
    ),
) -> None:
    """Write a commented example plan."""
    from fedseg.errors import FedsegError
    from fedseg.plan import example_plan

    if task not in ("segmentation", "synthesis"):
        raise FedsegError(f"--task {task}: use segmentation or synthesis")
    if plan.exists() and not force:
        raise FedsegError(f"{plan} exists; pass --force to overwrite it")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(example_plan([p.resolve() for p in sites] if sites else None, task))
    typer.echo(f"wrote {plan}; edit it, then run `fedseg simulate {plan} --out RUN`")


WORKERS = typer.Option(
    None, "--workers",
    help="Simulation engine: site workers (processes) running the sites' tasks; memory grows "
    "with them, not with the sites (default: min(cores, sites)).",
)  # fmt: skip


def simulate(
    plan: Path = typer.Argument(..., help="Federation plan (YAML)."),
    out: Path = typer.Option(..., "--out", help="New run folder."),
    no_live: bool = typer.Option(False, "--no-live", help="No live table (logs only)."),
    threads: int = typer.Option(1, "--threads", help="Torch threads per site process."),
    engine: str = typer.Option(
        "deployment",
        "--engine",
        help="deployment: one SuperNode per site; simulation: Flower's simulation engine "
        "(Ray), --workers site workers for all sites (pip install 'fedseg[simulation]').",
    ),
    workers: int | None = WORKERS,
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
    channels_last: bool | None = CHANNELS_LAST,
    compile_: bool | None = COMPILE,
    dashboard: bool = DASHBOARD,
    dashboard_port: int = DASHBOARD_PORT,
) -> None:
    """Run the whole federation on this machine (one SuperLink, one SuperNode per site;
    --engine simulation: Flower's simulation engine with --workers site workers).

    --device/--precision apply to every site (one machine)."""
    compute = compute_overrides(device, precision, channels_last, compile_)
    from fedseg.errors import FedsegError
    from fedseg.federation.commands.simulate import simulate as run
    from fedseg.run_folder import Engine

    if engine not in tuple(Engine):
        raise FedsegError(f"--engine {engine}: use {' or '.join(Engine)}")
    with dashboard_or_not(dashboard, out, dashboard_port):
        res = run(plan, out, live=not no_live, threads_per_site=threads, compute=compute,
                  engine=Engine(engine), workers=workers)  # fmt: skip
    _print_result(res)


def resume(
    run: Path = typer.Argument(..., help="Run folder of a stopped federation."),
    no_live: bool = typer.Option(False, "--no-live", help="No live table (logs only)."),
    threads: int = typer.Option(1, "--threads", help="Torch threads per site process."),
    workers: int | None = WORKERS,
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
    channels_last: bool | None = CHANNELS_LAST,
    compile_: bool | None = COMPILE,
) -> None:
    """Continue a federation from its last completed round, on the engine it started on
    (--device/--precision: as for simulate; not kept from the first start)."""
    compute = compute_overrides(device, precision, channels_last, compile_)
    from fedseg.federation.commands.resume import resume as run_resume

    res = run_resume(run, live=not no_live, threads_per_site=threads, compute=compute,
                     workers=workers)  # fmt: skip
    _print_result(res)


def _print_result(res: RunResult) -> None:
    from rich.console import Console

    c = Console()
    for line in res.summary():
        c.print(line)


def register(app: typer.Typer) -> None:
    """Add the federation verbs to the `fedseg` app."""
    app.add_typer(plan_app, name="plan", help="Write federation plans.")
    app.command("simulate")(simulate)
    app.command("resume")(resume)
