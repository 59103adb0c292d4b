"""``run_compare``: every plan and baseline of a ``CompareConfig`` into one output folder
(the layout is in the package docstring). A compared plan runs without cross-site
validation unless it asks for it (``cross_site.enabled: true``): a comparison scores the
models, and the extra validations would only add site time to every parallel plan's wall."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedseg.config_files import first_error, read_yaml_mapping
from fedseg.data.splits import SPLIT_FILE, load_split
from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.arguments import CompareConfig
from fedseg.federation.commands.compare_plans.attacks import scramble_site
from fedseg.federation.commands.compare_plans.budget import epochs_axis, plan_for
from fedseg.federation.commands.compare_plans.evaluation import evaluate_outcomes
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.commands.compare_plans.outputs import (
    RunOutcome,
    results_table,
    write_results,
)
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.federation.security.pki import SIMULATED_PKI, throwaway_site_creds
from fedseg.model.compute import resolve_device
from fedseg.plan import PlanConfig, save_plan
from fedseg.run_folder import (
    BEST_MODEL,
    LAST_MODEL,
    PLAN_FILE,
    STORE_FILE,
    RoundStatus,
    model_path,
)
from fedseg.tracking.curves import round_scores
from fedseg.tracking.store import RunStore
from fedseg.train.config import RecipeConfig

#: the settings of a comparison, in its output folder (``--resume`` reads them)
COMPARE_FILE = "compare.yaml"


def run_compare(cfg: CompareConfig, out: Path, console: Console | None = None,
                resume: bool = False) -> list[RunOutcome]:  # fmt: skip
    """Run every plan and baseline of ``cfg`` into ``out`` and write the table and plot.
    ``resume``: ``out`` holds this comparison (:func:`load_compare`); every run continues
    after its last finished round (epoch), a finished one is only scored again."""
    console = console or Console(stderr=True)
    out = Path(out)
    if not resume and out.exists() and any(out.iterdir()):
        more = f"; continue it with --resume {out}" if (out / COMPARE_FILE).is_file() else ""
        raise FedsegError(f"{out} exists and is not empty; pick a new --out{more}")
    _check_sites(cfg)
    resolve_device(cfg.train.with_compute(cfg.compute).compute.device)  # a missing GPU: now
    _check_labels([plan_for(cfg, a, cfg.sites).name for a in cfg.plans])  # bad params: now
    import torch

    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        dump = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        (out / COMPARE_FILE).write_text(dump)
    train_sites = dict(cfg.sites)
    if cfg.poison is not None and cfg.poison.kind == "scramble":
        dst = out / "poisoned" / cfg.poison.site
        whole = resume and (dst / SPLIT_FILE).is_file()  # scramble_site writes it last
        if not whole:
            scramble_site(cfg.sites[cfg.poison.site], dst)
        train_sites[cfg.poison.site] = dst
    outcomes: list[RunOutcome] = []
    plans = [plan_for(cfg, a, train_sites) for a in cfg.plans]
    with _progress(console) as bar:
        for plan in plans:
            outcomes.append(_run_plan(cfg, plan, out / "runs" / plan.name, train_sites, bar))
        if cfg.baselines:
            outcomes.append(_run_central(cfg, out / "runs" / "central", train_sites, bar))
            singles = train_sites.items() if cfg.single_sites else ()
            for site, path in singles:
                outcomes.append(
                    _run_central(cfg, out / "runs" / f"single-{site}", {site: path}, bar)
                )
        evaluate_outcomes(cfg, outcomes, bar)
    write_results(out, outcomes, cfg)
    console.print(results_table(outcomes, cfg))
    return outcomes


def load_compare(out: Path) -> CompareConfig:
    """The settings of the comparison in ``out`` (its ``compare.yaml``), to resume it."""
    path = Path(out) / COMPARE_FILE
    if not path.is_file():
        raise FedsegError(f"{out}: no comparison to resume (no {COMPARE_FILE} there)")
    raw = read_yaml_mapping(path, "comparison's settings")
    try:
        return CompareConfig.model_validate(raw)
    except ValidationError as exc:
        raise FedsegError(f"{path}: not a comparison's settings ({first_error(exc)})") from None


def _check_sites(cfg: CompareConfig) -> None:
    if not cfg.plans:
        raise FedsegError("name at least one plan to compare (a plan file or e.g. fedavg)")
    for name, p in {**cfg.sites, **cfg.holdout}.items():
        if not Path(p).is_dir():
            raise FedsegError(f"site {name}: data folder {p} not found")
    both = set(cfg.sites) & set(cfg.holdout)
    if both:
        raise FedsegError(f"site {sorted(both)[0]} is both a training and a held-out site")
    if cfg.poison is not None and cfg.poison.site not in cfg.sites:
        raise FedsegError(
            f"--poison names site {cfg.poison.site!r}; the sites are {', '.join(cfg.sites)}"
        )


def _check_labels(labels: list[str]) -> None:
    seen = {lb for lb in labels if labels.count(lb) > 1}
    if seen:
        raise FedsegError(f"plan {sorted(seen)[0]!r} is named twice; give distinct plans")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)  # fmt: skip


def _run_plan(cfg: CompareConfig, plan: PlanConfig, run_dir: Path, sites: dict[str, Path],
              bar: Progress) -> RunOutcome:  # fmt: skip
    if plan.cross_site.enabled is None:  # its evidence is not compared: no extra site time
        plan = plan.model_copy(
            update={"cross_site": plan.cross_site.model_copy(update={"enabled": False})}
        )
    new = not (run_dir / PLAN_FILE).is_file()  # else a resumed run: its plan and store stay
    if new:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_plan(run_dir / PLAN_FILE, plan)
    with RunStore(run_dir) as store:
        if new:
            store.meta.set_run_id(f"compare-{plan.name}")
        done = store.last_done_round()
    xs = epochs_axis(plan)
    rounds = len(xs) - 1
    steps = (rounds + 1) * len(sites)
    task = bar.add_task(f"{plan.name}", total=steps, completed=done * len(sites))
    ws = {s: run_dir / "sites" / s for s in sites}
    creds = None
    if plan.privacy.secure_aggregation:  # the sites sign their round keys, as deployed ones
        creds = throwaway_site_creds(run_dir / SIMULATED_PKI, list(sites))
    transport = LocalTransport(sites, ws, cfg.poison, lambda _s: bar.advance(task),
                               compute=cfg.compute, creds=creds)  # fmt: skip
    Coordinator(run_dir, transport).run()  # continues after the last done round
    bar.update(task, completed=steps)
    with RunStore(run_dir) as store:
        scores = round_scores(store)
        last = store.last_done_round()  # before `rounds` when train.plateau stopped it
        wall = rounds_wall_s(store)
    curve = [(xs[m], s.mean) for m, s in scores.items() if m <= last]
    best = run_dir / BEST_MODEL
    return RunOutcome(plan.name, "plan", run_dir, xs[last], curve, model_path(run_dir, last),
                      best if best.is_file() else None, wall)  # fmt: skip


def _run_central(cfg: CompareConfig, run_dir: Path, sites: dict[str, Path],
                 bar: Progress) -> RunOutcome:  # fmt: skip
    from fedseg.federation.commands.central_training import CENTRAL, SiteData, run_training

    data = []
    for name, path in sites.items():
        split = load_split(path)
        data.append(SiteData(name, list(split.train), list(split.val), path))
    label = "central" if len(sites) > 1 else f"single-{next(iter(sites))}"
    task = bar.add_task(label, total=cfg.budget)
    recipe = RecipeConfig(
        network=cfg.network, train=cfg.train.model_copy(update={"seed": cfg.seed})
    )
    resume = (run_dir / STORE_FILE).is_file()
    if resume:
        with RunStore(run_dir) as store:
            bar.update(task, completed=store.last_done_round())
    run_training(run_dir, data, cfg.budget, recipe=None if resume else recipe, resume=resume,
                 progress=False, console=Console(quiet=True), compute=cfg.compute)  # fmt: skip
    bar.update(task, completed=cfg.budget)
    with RunStore(run_dir) as store:  # several sites: their pooled rows, stored as CENTRAL
        scores = round_scores(store, sites=[CENTRAL] if len(sites) > 1 else None)
        epochs = store.last_done_round()  # before the budget when train.plateau stopped it
        wall = rounds_wall_s(store)
    curve = [(float(e), s.mean) for e, s in scores.items()]
    best = run_dir / BEST_MODEL
    kind = "central" if len(sites) > 1 else "single"
    return RunOutcome(label, kind, run_dir, float(epochs), curve, run_dir / LAST_MODEL,
                      best if best.is_file() else None, wall)  # fmt: skip


def rounds_wall_s(store: RunStore) -> float:
    """A run's wall time: its finished rounds' (epochs') walls summed, so that a resumed
    run counts each round once, whatever the sessions it took."""
    done = [r for r in store.rounds() if r["status"] == RoundStatus.DONE]
    return float(sum(r["wall_s"] or 0.0 for r in done))
