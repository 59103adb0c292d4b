"""``fedseg compare``: several federation plans on the same sites, seed and epoch budget,
next to the centralized model (all training cases pooled) and one model per site alone.

Every plan runs the real round loop (``Coordinator``) and the real site code (``run_task``)
in this process, one site after the other (``LocalTransport``): the same math and files
as a simulation, without the engine's process start-up, so a comparison fits on a laptop.
The baselines use the centralized runner (``train.runner.run_training``).

Budget: ``budget`` local epochs per site. A parallel plan runs
``ceil(budget * sites / (local_epochs * sites_per_round))`` rounds; ``cyclic`` runs
``budget / epochs_per_visit`` cycles; ``single-pass`` trains ``budget`` epochs per visit;
the centralized model trains ``budget`` epochs over the pooled cases (the same case-epochs);
a single-site model trains ``budget`` epochs on its site.

Every final and best model is then validated on every site's validation cases (the clean
ones, even when a site was poisoned) and on the held-out sites' cases (sites that never
trained). Output folder::

    compare.yaml       the settings          runs/<label>/     each run's folder
    results.csv        one row per run       results.md        the same as a markdown table
    per_site.csv       Dice per run, model, site and region
    curves.png         mean validation Dice against local epochs per site, every run
"""

from __future__ import annotations

import csv
import filecmp
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedseg.data.cases import Case, discover_cases, load_case, write_case
from fedseg.data.labels import REGIONS
from fedseg.data.splits import SPLIT_FILE, load_split
from fedseg.errors import FedsegError
from fedseg.federation.rounds.aggregation import n_bytes
from fedseg.federation.rounds.coordinator import (
    BEST,
    Coordinator,
    Exchanged,
    SiteFailure,
    model_path,
)
from fedseg.federation.rounds.participation import n_participants
from fedseg.federation.rounds.site import run_task
from fedseg.federation.rounds.strategies.sequential import Cyclic, SinglePass
from fedseg.federation.rounds.strategy import STRATEGIES, make_strategy
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.config import NetworkConfig
from fedseg.model.evaluate import CaseResult, Summaries, summarize_cases
from fedseg.model.model_file import load_model
from fedseg.model.weights import Weights
from fedseg.plan import PLAN_FILE, PlanConfig, SiteConfig, StrategyConfig, save_plan
from fedseg.tracking.store import RunStore
from fedseg.train.config import RecipeConfig, TrainConfig
from fedseg.train.validate import validate_cases

#: BraTS label values a scrambled site writes instead of (1, 2, 4): NCR->ED->ET->NCR.
SCRAMBLE = {1: 2, 2: 4, 4: 1}
COLUMNS = ("ET", "TC", "WT", "mean")


class Poison(BaseModel):
    """A poisoned site: its update scaled (``w_global + scale * (w - w_global)``) or its
    training labels scrambled (NCR->ED->ET->NCR, a mislabeled site)."""

    model_config = ConfigDict(extra="forbid")

    site: str
    kind: Literal["scale", "scramble"]
    scale: float = 50.0


def parse_poison(text: str) -> Poison:
    """``SITE:scale=50``, ``SITE:scale`` (50) or ``SITE:scramble``."""
    site, _, rest = text.partition(":")
    kind, _, value = rest.partition("=")
    if not site or kind not in ("scale", "scramble") or (kind == "scramble" and value):
        raise FedsegError(f"--poison {text!r}: write SITE:scale=FACTOR or SITE:scramble")
    if kind == "scramble":
        return Poison(site=site, kind="scramble")
    try:
        return Poison(site=site, kind="scale", scale=float(value) if value else 50.0)
    except ValueError:
        raise FedsegError(f"--poison {text!r}: the scale must be a number") from None


class PlanArg(BaseModel):
    """One plan to compare: a label and its strategy (local epochs from the plan file)."""

    model_config = ConfigDict(extra="forbid")

    label: str
    strategy: StrategyConfig
    local_epochs: int = Field(1, ge=1)


def parse_plan_arg(text: str) -> PlanArg:
    """A plan file (its strategy and local_epochs are used) or ``NAME[:k=v,k=v]``, e.g.
    ``fedprox:mu=0.01`` or ``cyclic:order=shuffled,epochs_per_visit=2``."""
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from fedseg.plan import load_plan

        plan = load_plan(path)
        return PlanArg(label=path.stem, strategy=plan.strategy, local_epochs=plan.local_epochs)
    make_strategy(StrategyConfig(), 1)  # loads the registry
    name, _, rest = text.partition(":")
    if name not in STRATEGIES:
        raise FedsegError(
            f"plan {text!r}: not a plan file nor a strategy; strategies: "
            f"{', '.join(sorted(STRATEGIES))}"
        )
    params: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise FedsegError(f"plan {text!r}: parameters are k=v pairs separated by commas")
        params[key.strip()] = yaml.safe_load(value)
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)
    return PlanArg(label=label, strategy=StrategyConfig(name=name, params=params))


class CompareConfig(BaseModel):
    """What ``compare`` runs (recorded as ``compare.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    plans: list[PlanArg]
    sites: dict[str, Path]
    holdout: dict[str, Path] = Field(default_factory=dict)
    budget: int = Field(4, ge=1, description="local epochs per site")
    seed: int = 0
    network: NetworkConfig = NetworkConfig(base_filters=8, depth=3)
    train: TrainConfig = TrainConfig.cpu()
    poison: Poison | None = None
    baselines: bool = True
    threads: int = Field(1, ge=1, description="torch CPU threads")


# -- budget -----------------------------------------------------------------------------
def plan_for(cfg: CompareConfig, arg: PlanArg, sites: dict[str, Path]) -> PlanConfig:
    """The plan of one compared run: its strategy on the compared sites with the shared
    recipe and seed, its rounds (or cycles / epochs per visit) set by the budget."""
    n = len(sites)
    strat = make_strategy(arg.strategy, arg.local_epochs)
    params = dict(arg.strategy.params)
    rounds = 1
    if isinstance(strat, SinglePass):
        params["epochs_per_visit"] = cfg.budget
    elif isinstance(strat, Cyclic):
        per_visit = params.get("epochs_per_visit") or arg.local_epochs
        if cfg.budget % per_visit:
            raise FedsegError(
                f"plan {arg.label}: a budget of {cfg.budget} epochs is not a whole number of "
                f"cycles of {per_visit} epochs per visit; change --budget or epochs_per_visit"
            )
        params["cycles"] = cfg.budget // per_visit
    else:
        p = strat.params
        k = n_participants(n, getattr(p, "fraction", None), getattr(p, "sites_per_round", None))
        rounds = math.ceil(cfg.budget * n / (arg.local_epochs * k))
    return PlanConfig(
        name=arg.label, sites={s: SiteConfig(data=p) for s, p in sites.items()}, rounds=rounds,
        local_epochs=arg.local_epochs, network=cfg.network, train=cfg.train, min_sites=1,
        seed=cfg.seed, strategy=StrategyConfig(name=arg.strategy.name, params=params),
    )  # fmt: skip


def epochs_axis(plan: PlanConfig) -> list[float]:
    """Local epochs per site (averaged over the sites) spent before each model 0..R,
    replayed from the strategy's tasks."""
    strat = make_strategy(plan.strategy, plan.local_epochs)
    rounds = strat.planned_rounds(plan.rounds, len(plan.sites))
    xs, total = [0.0], 0.0
    for rnd in range(1, rounds + 1):
        tasks = strat.configure_round(rnd, plan.site_names)
        total += sum(t.epochs for t in tasks.values()) / len(plan.sites)
        xs.append(total)
    return xs


# -- the in-process transport ---------------------------------------------------------------
class LocalTransport:
    """``coordinator.Transport`` that runs each site's task here, one after the other, with
    the site's private state in ``workspaces[site]``. A poisoned site's update is scaled."""

    def __init__(self, data: dict[str, Path], workspaces: dict[str, Path],
                 poison: Poison | None = None,
                 on_site: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.data, self.workspaces, self.poison, self.on_site = data, workspaces, poison, on_site

    def connected_sites(self, wanted: Sequence[str], wait_s: float) -> list[str]:
        return [s for s in wanted if s in self.data]

    def exchange(self, requests: dict[str, TaskRequest], timeout_s: float,
                 on_result: Callable[[str, Exchanged], None]) -> dict[str, Exchanged]:  # fmt: skip
        out: dict[str, Exchanged] = {}
        for site, req in requests.items():
            t0 = time.perf_counter()
            sent = n_bytes(req.weights)
            try:
                rep = run_task(site, self.data[site], req, self.workspaces[site])
                self._poison(site, req, rep)
                got = n_bytes(rep.weights) if rep.weights is not None else 0
                ex = Exchanged(rep, sent, got, time.perf_counter() - t0)
            except Exception as exc:  # a site's failure is its round's result, not ours
                line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                ex = Exchanged(SiteFailure("failed", line), sent, 0, time.perf_counter() - t0)
            out[site] = ex
            on_result(site, ex)
            if self.on_site is not None:
                self.on_site(site)
        return out

    def _poison(self, site: str, req: TaskRequest, rep: TaskReply) -> None:
        p = self.poison
        if p is None or p.kind != "scale" or p.site != site or rep.weights is None:
            return
        rep.weights = scale_update(req.weights, rep.weights, p.scale)


def scale_update(global_weights: Weights, update: Weights, factor: float) -> Weights:
    """``g + factor * (w - g)`` on the floating arrays (dtypes kept)."""
    return {k: (g + factor * (update[k].astype(np.float64) - g)).astype(update[k].dtype)
            if update[k].dtype.kind == "f" else update[k]
            for k, g in ((k, global_weights[k].astype(np.float64)) for k in update)}  # fmt: skip


def scramble_site(src: Path, dst: Path) -> Path:
    """A copy of site folder ``src`` in ``dst`` with its labels scrambled (``SCRAMBLE``)
    and the same train/validation split."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    load_split(src)  # make sure the split file exists, then keep it
    for case in discover_cases(src):
        vol = load_case(case)
        if vol.label is None:
            raise FedsegError(f"case {case.case_id} in {src} has no label map to scramble")
        lab = vol.label.copy()
        for a, b in SCRAMBLE.items():
            lab[vol.label == a] = b
        write_case(dst, case.case_id, vol.image, lab, vol.affine)
    shutil.copyfile(src / SPLIT_FILE, dst / SPLIT_FILE)
    return dst


# -- results ------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """One compared run: its kind (plan/central/single), local epochs per site, the
    validation curve ``[(epochs, mean Dice)]`` and its final and best model files."""

    label: str
    kind: str
    run_dir: Path
    epochs: float
    curve: list[tuple[float, float]]
    final: Path
    best: Path | None
    wall_s: float
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_site: list[dict[str, Any]] = field(default_factory=list)


def mean_dice_by_model(store: RunStore, site: str | None = None) -> dict[int, float]:
    """Mean Dice (region ``mean``) per model round, pooled over sites by validation cases
    (``site``: that site's rows only)."""
    acc: dict[int, list[float]] = {}
    for r in store.validation(metric="dice", region="mean", site=site):
        if r.n > 0 and r.mean == r.mean:
            a = acc.setdefault(r.model_round, [0.0, 0.0])
            a[0] += r.mean * r.n
            a[1] += r.n
    return {m: s / n for m, (s, n) in sorted(acc.items()) if n > 0}


RegionDice = dict[str, float]


def evaluate(
    network: NetworkConfig, train: TrainConfig, weights: Weights, cases: dict[str, list[Case]]
) -> tuple[RegionDice, dict[str, RegionDice]]:
    """Dice per region pooled over every case of ``cases`` and per site:
    (pooled ``{region: dice}``, ``{site: {region: dice}}``)."""
    pooled: list[CaseResult] = []
    by_site: dict[str, RegionDice] = {}
    for site, cs in cases.items():
        if not cs:
            continue
        res = validate_cases(network, train, weights, cs)
        pooled += res
        by_site[site] = _dice(summarize_cases(res))
    return (_dice(summarize_cases(pooled)) if pooled else {}), by_site


def _dice(summaries: Summaries) -> RegionDice:
    return {r: float(summaries[r]["dice"].mean) for r in COLUMNS if r in summaries}


# -- the comparison -------------------------------------------------------------------------
def run_compare(cfg: CompareConfig, out: Path, console: Console | None = None) -> list[RunOutcome]:
    """Run every plan and baseline of ``cfg`` into ``out`` and write the table and plot."""
    console = console or Console(stderr=True)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FedsegError(f"{out} exists and is not empty; pick a new --out")
    _check_sites(cfg)
    _check_labels([plan_for(cfg, a, cfg.sites).name for a in cfg.plans])  # bad params: now
    import torch

    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    train_sites = dict(cfg.sites)
    if cfg.poison is not None and cfg.poison.kind == "scramble":
        train_sites[cfg.poison.site] = scramble_site(
            cfg.sites[cfg.poison.site], out / "poisoned" / cfg.poison.site
        )
    outcomes: list[RunOutcome] = []
    plans = [plan_for(cfg, a, train_sites) for a in cfg.plans]
    with _progress(console) as bar:
        for plan in plans:
            outcomes.append(_run_plan(cfg, plan, out / "runs" / plan.name, train_sites, bar))
        if cfg.baselines:
            outcomes.append(_run_central(cfg, out / "runs" / "central", train_sites, bar))
            for site, path in train_sites.items():
                outcomes.append(
                    _run_central(cfg, out / "runs" / f"single-{site}", {site: path}, bar)
                )
        _evaluate_all(cfg, outcomes, bar)
    write_results(out, outcomes, cfg)
    console.print(results_table(outcomes, cfg))
    return outcomes


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
    run_dir.mkdir(parents=True)
    save_plan(run_dir / PLAN_FILE, plan)
    with RunStore(run_dir) as store:
        store.set_meta("run_id", f"compare-{plan.name}")
    xs = epochs_axis(plan)
    rounds = len(xs) - 1
    steps = (rounds + 1) * len(sites)
    task = bar.add_task(f"{plan.name}", total=steps)
    ws = {s: run_dir / "sites" / s for s in sites}
    transport = LocalTransport(sites, ws, cfg.poison, lambda _s: bar.advance(task))
    t0 = time.perf_counter()
    Coordinator(run_dir, transport).run()
    wall = time.perf_counter() - t0
    bar.update(task, completed=steps)
    with RunStore(run_dir) as store:
        dice = mean_dice_by_model(store)
    curve = [(xs[m], d) for m, d in dice.items() if m < len(xs)]
    best = run_dir / BEST
    return RunOutcome(plan.name, "plan", run_dir, xs[-1], curve, model_path(run_dir, rounds),
                      best if best.is_file() else None, wall)  # fmt: skip


def _run_central(cfg: CompareConfig, run_dir: Path, sites: dict[str, Path],
                 bar: Progress) -> RunOutcome:  # fmt: skip
    from fedseg.train.runner import CENTRAL, SiteData, run_training

    data = []
    for name, path in sites.items():
        split = load_split(path)
        data.append(SiteData(name, list(split.train), list(split.val), path))
    label = "central" if len(sites) > 1 else f"single-{next(iter(sites))}"
    task = bar.add_task(label, total=cfg.budget)
    recipe = RecipeConfig(
        network=cfg.network, train=cfg.train.model_copy(update={"seed": cfg.seed})
    )
    t0 = time.perf_counter()
    run_training(run_dir, data, cfg.budget, recipe=recipe, progress=False,
                 console=Console(quiet=True))  # fmt: skip
    wall = time.perf_counter() - t0
    bar.update(task, completed=cfg.budget)
    with RunStore(run_dir) as store:
        dice = mean_dice_by_model(store, CENTRAL if len(sites) > 1 else None)
    curve = [(float(e), d) for e, d in dice.items()]
    best = run_dir / "best.pt"
    kind = "central" if len(sites) > 1 else "single"
    return RunOutcome(label, kind, run_dir, float(cfg.budget), curve, run_dir / "last.pt",
                      best if best.is_file() else None, wall)  # fmt: skip


def _evaluate_all(cfg: CompareConfig, outcomes: list[RunOutcome], bar: Progress) -> None:
    val = {s: list(load_split(p).val) for s, p in cfg.sites.items()}
    held = {s: discover_cases(p) for s, p in cfg.holdout.items()}
    task = bar.add_task("evaluation", total=len(outcomes))
    for o in outcomes:
        for which, path in (("final", o.final), ("best", o.best or o.final)):
            if which == "best" and (o.best is None or filecmp.cmp(o.best, o.final, False)):
                o.scores["best"] = o.scores["final"]  # the final model was the best: same file
                o.per_site += [{**r, "model": "best"} for r in o.per_site]
                continue
            weights = load_model(path).weights
            pooled, by_site = evaluate(cfg.network, cfg.train, weights, val)
            o.scores[which] = {"val": pooled}
            if held:
                hp, hs = evaluate(cfg.network, cfg.train, weights, held)
                o.scores[which]["holdout"] = hp
                by_site.update({f"{s} (held out)": v for s, v in hs.items()})
            o.per_site += [{"run": o.label, "model": which, "site": s, "region": r, "dice": d}
                           for s, v in by_site.items() for r, d in v.items()]  # fmt: skip
        bar.advance(task)


# -- output -----------------------------------------------------------------------------
def result_rows(outcomes: Sequence[RunOutcome]) -> list[dict[str, Any]]:
    """One flat row per run: final/best Dice per region on the sites' validation cases and
    on the held-out sites, and the final mean Dice as a share of the centralized model's."""
    central = next((o for o in outcomes if o.kind == "central"), None)
    ref = central.scores.get("final", {}).get("val", {}).get("mean") if central else None
    singles = [o.scores["final"]["val"]["mean"] for o in outcomes if o.kind == "single"]
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"run": o.label, "kind": o.kind, "epochs_per_site": o.epochs}
        for which in ("final", "best"):
            for part in ("val", "holdout"):
                for r in COLUMNS:
                    v = o.scores.get(which, {}).get(part, {}).get(r)
                    row[f"{which}_{part}_{r}"] = v
        mean = row["final_val_mean"]
        row["share_of_central"] = mean / ref if ref and mean is not None else None
        row["beats_all_single"] = (
            bool(singles) and mean is not None and all(mean > s for s in singles)
        )
        row["wall_s"] = round(o.wall_s, 1)
        rows.append(row)
    return rows


def write_results(out: Path, outcomes: Sequence[RunOutcome], cfg: CompareConfig) -> None:
    rows = result_rows(outcomes)
    with (out / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with (out / "per_site.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["run", "model", "site", "region", "dice"])
        w.writeheader()
        for o in outcomes:
            w.writerows(o.per_site)
    (out / "results.md").write_text(markdown_table(rows, cfg))
    plot_curves(out / "curves.png", outcomes)


def _f(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def markdown_table(rows: Sequence[dict[str, Any]], cfg: CompareConfig) -> str:
    held = bool(cfg.holdout)
    head = ["run", "kind", "epochs/site", "final ET", "final TC", "final WT", "final mean",
            "best mean"]  # fmt: skip
    if held:
        head += ["held-out ET", "held-out TC", "held-out WT", "held-out mean", "held-out best"]
    head += ["vs central", "beats every single site", "wall s"]
    lines = [
        f"Dice on the {len(cfg.sites)} sites' validation cases"
        + (f" and on held-out {', '.join(cfg.holdout)}" if held else "")
        + f"; budget {cfg.budget} local epochs per site, seed {cfg.seed}"
        + (f", poisoned: {cfg.poison.site} ({cfg.poison.kind})" if cfg.poison else "")
        + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in rows:
        cells = [r["run"], r["kind"], f"{r['epochs_per_site']:g}",
                 *(_f(r[f"final_val_{c}"]) for c in COLUMNS), _f(r["best_val_mean"])]  # fmt: skip
        if held:
            cells += [*(_f(r[f"final_holdout_{c}"]) for c in COLUMNS), _f(r["best_holdout_mean"])]
        cells += [_f(r["share_of_central"], pct=True),
                  "yes" if r["beats_all_single"] else "no", f"{r['wall_s']:g}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_table(outcomes: Sequence[RunOutcome], cfg: CompareConfig) -> Table:
    rows = result_rows(outcomes)
    table = Table(title="fedseg compare: mean Dice (final model; best in brackets)",
                  title_justify="left")  # fmt: skip
    for col in ("run", "kind", "ET", "TC", "WT", "mean", "held-out mean", "vs central"):
        table.add_column(col, justify="left" if col in ("run", "kind") else "right")
    for r in rows:
        table.add_row(
            r["run"], r["kind"], *(_f(r[f"final_val_{c}"]) for c in REGIONS),
            f"{_f(r['final_val_mean'])} ({_f(r['best_val_mean'])})",
            _f(r["final_holdout_mean"]), _f(r["share_of_central"], pct=True),
        )  # fmt: skip
    return table


def plot_curves(path: Path, outcomes: Sequence[RunOutcome]) -> Path:
    """Mean validation Dice against local epochs per site: plans solid, the centralized
    model dashed, single-site models dotted (validated on their own site)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    style = {"plan": "-", "central": "--", "single": ":"}
    for o in outcomes:
        if not o.curve:
            continue
        xs, ys = zip(*o.curve, strict=True)
        label = o.label + (" (own site)" if o.kind == "single" else "")
        ax.plot(xs, ys, style[o.kind], marker="o" if o.kind == "plan" else None, ms=3,
                label=label, color="black" if o.kind == "central" else None)  # fmt: skip
    ax.set_xlabel("local epochs per site")
    ax.set_ylabel("mean validation Dice (ET, TC, WT)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
