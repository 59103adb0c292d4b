"""Convergence in simulated time, in the FeTS 2021 challenge's spirit: which plan reaches a
good Dice soonest when each round lasts as long as its slowest trainer would at real sites.

Data: ``fedseg data synth OUT --sites N --cases C --sizes lognormal:1.2 --held-out H
--spacing S`` (the study's skewed site sizes; the held-out sites never train nor validate,
they score the best model at the end). Each plan runs in this process (``Coordinator`` +
``compare_plans.local_transport.LocalTransport``, as ``fedseg compare``; no engine),
under a simulated clock (``federation.rounds.sim_time``; its assumptions are stated there:
one epoch of the median site about one hour, lognormal spread of the sites' speeds,
drawn from ``--seed``):

- a round's simulated time is its slowest trainer's download + validation of the global
  model + training + validation of its local model + upload (the issue's rule; the
  challenge also counts the validation-only sites' download and validation, left out
  here unless ``--clock-validators``: every site validates every round's model so that
  every plan is scored on the same cases, ``validators: all``, and that measurement is
  kept off the clock);
- a plan stops when its clock has passed the budget (one simulated week) before a round,
  or after ``--rounds`` rounds (cyclic: visits); a plan stopped that way never validates
  its last model, as in the challenge;
- the score is the challenge's convergence score (``sim_time.convergence_score``): the
  area under the best-so-far mean validation Dice (ET, TC, WT: the one round-score rule,
  every training site's validation cases) over the budget, each round's best credited over
  that round's own duration (the right endpoint), the last best carried to the budget's end.

Plans (``--plans``, compare's syntax ``NAME[:k=v,...]``): fedavg, fedprox (mu 0.01),
fedadam, fedyogi, cyclic, and the two selecting plans ``fastest-k`` and ``select-utility``
with ``sites_per_round = --k`` (their speeds from the clock's seed). Printed: a table (score,
best validation Dice, held-out Dice of the best model, simulated days until the best-so-far
Dice reached 95 % of its final value, rounds within the budget, simulated days used, wall
time); written to the work folder: ``curves.png`` (best-so-far Dice over simulated days, one
line per plan), ``results.csv`` (the table) and ``curves.csv`` (per round).

The study's scale (hours on one core; ``--workers`` runs plans side by side)::

    python benchmarks/convergence.py --sites 71 --cases 600 --held-out 6 --workers 2

The round cap (``--rounds``, default 400) is a wall-time guard, not the budget: at 71 sites
the selecting plans' rounds are short (fastest-k with k 8 ran 136 rounds in the week, on
300 cases; a cap of 24 had stopped it at 1.2 simulated days and ranked it third).

Smoke settings (81 s of CPU in all: about a minute on a quiet 2-core machine; 4 min 17 s
measured under a load average of 14)::

    python benchmarks/convergence.py --sites 12 --cases 48 --held-out 2 --rounds 3 --k 4 \
        --workers 2
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.cases import discover_cases
from fedseg.federation.commands.compare_plans.arguments import PlanArg, parse_plan_arg
from fedseg.federation.rounds.coordinator import Exchanged
from fedseg.federation.rounds.sim_time import (
    WEEK_S,
    best_so_far,
    convergence_score,
    round_time,
    site_round_time,
    site_speeds,
    time_to_fraction,
)
from fedseg.federation.rounds.strategies.registry import make_strategy
from fedseg.federation.rounds.strategies.sequential import SequentialStrategy
from fedseg.federation.rounds.tasks import TaskRequest
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, SiteConfig, StrategyConfig
from fedseg.train.config import TrainConfig

DAY_S = 86400.0
PROGRESS_FILE = "progress.txt"


def default_plans(k: int) -> list[str]:
    return ["fedavg", "fedprox:mu=0.01", "fedadam", "fedyogi", "cyclic",
            f"fastest-k:sites_per_round={k}", f"select-utility:sites_per_round={k}"]  # fmt: skip


def short_labels(plan_args: list[PlanArg]) -> list[PlanArg]:
    """Each plan labelled by its strategy's name where that name is unique among them."""
    names = [a.strategy.name for a in plan_args]
    return [a.model_copy(update={"label": a.strategy.name}) if names.count(a.strategy.name) == 1
            else a for a in plan_args]  # fmt: skip


# -- the data --------------------------------------------------------------------------
def make_data(
    out: Path, args: argparse.Namespace, console: Console
) -> tuple[dict[str, Path], dict[str, Path]]:
    """``fedseg data synth``'s data set in ``out`` (kept when it is there): (training sites,
    held-out sites), name -> folder."""
    from fedseg.data.synth.config import SynthConfig
    from fedseg.data.synth.generate import (
        SYNTH_YAML,
        generate_dataset,
        read_held_out,
        read_record,
    )
    from fedseg.data.synth.sizes import synth_counts

    if not (out / SYNTH_YAML).is_file():
        counts = synth_counts(sites=args.sites, cases=args.cases, sizes=args.sizes, seed=args.seed)
        config = SynthConfig(sites=counts.sites, cases_per_site=counts.cases_per_site,
                             held_out=args.held_out, seed=args.seed,
                             spacing=args.spacing)  # fmt: skip
        t0 = time.perf_counter()
        generate_dataset(out, config, workers=args.workers)
        console.print(f"synthesized {sum(config.case_counts())} cases at {config.sites} "
                      f"sites in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    held = set(read_held_out(out))
    names = read_record(out).site_names()
    train = {s: out / s for s in names if s not in held}
    return train, {s: out / s for s in names if s in held}


# -- the simulated clock ------------------------------------------------------------------
class BudgetSpent(Exception):
    """The plan's clock passed the budget (or its round cap) before a training round."""


@dataclass
class SimClock:
    """The simulated clock of one run: each training exchange's round time (``sim_time``)
    from the sites' declared cases and speeds, recorded per round."""

    seed: int
    budget_s: float
    max_rounds: int
    #: count the validation-only sites' download and validation too (the challenge's rule)
    validators: bool = False
    t: float = 0.0
    rounds: list[tuple[int, float, list[str]]] = field(default_factory=list)
    speeds: dict[str, Any] = field(default_factory=dict)


class ClockedTransport:
    """``coordinator.Transport`` around ``LocalTransport``: before each training exchange it
    stops the run (``BudgetSpent``) when the clock has passed the budget or the round cap,
    else advances the clock by the round's simulated time; progress goes to a file."""

    def __init__(self, inner: Any, clock: SimClock, progress: Path) -> None:
        self.inner, self.clock, self.progress = inner, clock, progress

    def connected_sites(self, wanted: Sequence[str], wait_s: float) -> list[str]:
        return self.inner.connected_sites(wanted, wait_s)

    def declared_cases(self) -> dict:
        return self.inner.declared_cases()

    def pull_late(self) -> set[str]:
        return self.inner.pull_late()

    def query(self, kind: str, payloads: dict, timeout_s: float) -> dict:
        return self.inner.query(kind, payloads, timeout_s)

    def exchange(self, requests: dict[str, TaskRequest], timeout_s: float,
                 on_result: Callable[[str, Exchanged], None],
                 stop_when: Callable[[set[str]], bool] | None = None) -> None:  # fmt: skip
        c = self.clock
        trainers = [s for s, r in requests.items() if r.epochs > 0]
        if trainers:
            if c.t >= c.budget_s or len(c.rounds) >= c.max_rounds:
                raise BudgetSpent(f"stopped before round {len(c.rounds) + 1}")
            declared = self.inner.declared_cases()
            if not c.speeds:
                c.speeds = site_speeds({s: d.n_train for s, d in declared.items()}, c.seed)
            first = requests[trainers[0]]
            times = [site_round_time(c.speeds[s], declared[s].n_train, declared[s].n_val,
                                     first.epochs, steps=first.steps)
                     for s in trainers]  # fmt: skip
            if c.validators:
                times += [site_round_time(c.speeds[s], declared[s].n_train, declared[s].n_val, 0)
                          for s, r in requests.items() if r.epochs == 0]  # fmt: skip
            rnd = next(iter(requests.values())).round
            c.t += round_time(times)
            c.rounds.append((rnd, c.t, sorted(trainers)))
        self.inner.exchange(requests, timeout_s, on_result, stop_when)
        self.progress.write_text(f"{len(c.rounds)} {c.t / DAY_S:.2f}")


# -- one plan ------------------------------------------------------------------------------
def make_plan(arg: PlanArg, sites: dict[str, Path], args: argparse.Namespace) -> PlanConfig:
    """The plan of one compared run: the shared recipe; cyclic gets enough cycles for
    ``--rounds`` visits; the selecting plans take the clock's seed."""
    params = dict(arg.strategy.params)
    strat = make_strategy(arg.strategy, arg.local_epochs, arg.local_steps)
    if isinstance(strat, SequentialStrategy) and "cycles" in strat.params_model.model_fields:
        params.setdefault("cycles", max(1, math.ceil(args.rounds / len(sites))))
    if "speed_seed" in strat.params_model.model_fields:
        params.setdefault("speed_seed", args.seed)
    patch = (args.patch,) * 3
    return PlanConfig(
        name=arg.label, sites={s: SiteConfig(data=p) for s, p in sites.items()},
        rounds=args.rounds, local_epochs=arg.local_epochs, local_steps=arg.local_steps,
        min_sites=1, seed=args.seed,
        round_timeout_s=86400, network=NetworkConfig(base_filters=args.base_filters, depth=2),
        train=TrainConfig.cpu(lr=args.lr, patch_size=patch, val_roi=patch, val_overlap=0.0,
                              val_batch_size=4, cache_mb=256),
        strategy=StrategyConfig(name=arg.strategy.name, params=params),
        privacy={"min_summary_cases": 1}, cross_site={"enabled": False},
        alarms={"enabled": False},
    )  # fmt: skip


@dataclass
class Outcome:
    label: str
    score: float
    best_val: float
    best_holdout: float
    days_to_95: float | None
    rounds: int
    sim_days: float
    wall_s: float
    #: (simulated seconds at the round's start, Dice measured in the round) per round
    curve: list[tuple[float, float]]


def run_plan(label: str, plan_json: str, run_dir: Path, sites: dict[str, Path],
             held: dict[str, Path], seed: int, budget_s: float, max_rounds: int,
             threads: int, clock_validators: bool = False) -> Outcome:  # fmt: skip
    """One plan under the simulated clock, its score and its best model on the held-out
    sites (runs in a worker process)."""
    import torch

    from fedseg.federation.commands.compare_plans.evaluation import dice_on_sites
    from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
    from fedseg.federation.rounds.coordinator import Coordinator
    from fedseg.model.model_file import load_model
    from fedseg.plan import save_plan
    from fedseg.run_folder import BEST_MODEL, PLAN_FILE
    from fedseg.tracking.curves import round_scores
    from fedseg.tracking.store import RunStore

    torch.set_num_threads(threads)
    plan = PlanConfig.model_validate_json(plan_json)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_plan(run_dir / PLAN_FILE, plan)
    with RunStore(run_dir) as store:
        store.meta.set_run_id(f"convergence-{label}")
    clock = SimClock(seed, budget_s, max_rounds, clock_validators)
    inner = LocalTransport(sites, {s: run_dir / "sites" / s for s in sites})
    transport = ClockedTransport(inner, clock, run_dir / PROGRESS_FILE)
    t0 = time.perf_counter()
    try:
        Coordinator(run_dir, transport).run()
        finished = True
    except BudgetSpent:
        finished = False
    wall = time.perf_counter() - t0
    with RunStore(run_dir) as store:
        scores = {m: s.mean for m, s in round_scores(store).items()}
    # round r validated model r - 1; the final validation (a finished run) scores the last
    # model, credited from the end of the last round (a zero-length step)
    times, dice, starts = [], [], []
    previous = 0.0
    for rnd, end, _ in clock.rounds:
        times.append(end - previous)
        dice.append(scores.get(rnd - 1, math.nan))
        starts.append(previous)
        previous = end
    if finished and clock.rounds:
        times.append(0.0)
        dice.append(scores.get(clock.rounds[-1][0], math.nan))
        starts.append(previous)
    best = best_so_far(dice)
    holdout = math.nan
    best_path = run_dir / BEST_MODEL
    if held and best_path.is_file():
        weights = load_model(best_path).weights
        cases = {s: discover_cases(p) for s, p in held.items()}
        pooled, _ = dice_on_sites(plan.network, plan.train, weights, cases)
        holdout = pooled.get("mean", math.nan)
    within = sum(1 for s in starts[: len(clock.rounds)] if s < budget_s)
    return Outcome(
        label=label, score=convergence_score(times, dice, budget_s),
        best_val=best[-1] if best else math.nan, best_holdout=holdout,
        days_to_95=(None if (d := time_to_fraction(times, dice, 0.95, budget_s)) is None
                    else d / DAY_S),
        rounds=within, sim_days=min(previous, budget_s) / DAY_S, wall_s=wall,
        curve=list(zip(starts, dice, strict=True)),
    )  # fmt: skip


# -- outputs ------------------------------------------------------------------------------
def results_table(outcomes: Sequence[Outcome], title: str) -> Table:
    table = Table(title=title)
    for col in ("plan", "score", "best val Dice", "held-out Dice (best model)",
                "days to 95 %", "rounds", "sim days", "wall s"):  # fmt: skip
        table.add_column(col, justify="left" if col == "plan" else "right")
    for o in sorted(outcomes, key=lambda o: -o.score):
        table.add_row(o.label, f"{o.score:.4f}", _f(o.best_val), _f(o.best_holdout),
                      "-" if o.days_to_95 is None else f"{o.days_to_95:.2f}", str(o.rounds),
                      f"{o.sim_days:.2f}", f"{o.wall_s:.0f}")  # fmt: skip
    return table


def _f(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.4f}"


def write_outputs(work: Path, outcomes: Sequence[Outcome], budget_s: float) -> None:
    with open(work / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["plan", "score", "best_val_dice", "best_holdout_dice", "days_to_95",
                    "rounds", "sim_days", "wall_s"])  # fmt: skip
        for o in outcomes:
            w.writerow([o.label, o.score, o.best_val, o.best_holdout, o.days_to_95,
                        o.rounds, o.sim_days, o.wall_s])  # fmt: skip
    with open(work / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["plan", "round", "sim_days_start", "dice", "best_so_far"])
        for o in outcomes:
            best = best_so_far([d for _, d in o.curve])
            for i, ((t, d), b) in enumerate(zip(o.curve, best, strict=True), start=1):
                w.writerow([o.label, i, t / DAY_S, d, b])
    plot_curves(work / "curves.png", outcomes, budget_s)


def plot_curves(path: Path, outcomes: Sequence[Outcome], budget_s: float) -> None:
    """Best-so-far Dice over simulated days: each round's best from that round's start (the
    score's right endpoint), the last carried to the budget's end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    for o in outcomes:
        if not o.curve:
            continue
        xs = [t / DAY_S for t, _ in o.curve if t < budget_s]
        ys = best_so_far([d for t, d in o.curve if t < budget_s])
        ax.step([*xs, budget_s / DAY_S], [*ys, ys[-1]], where="post",
                label=f"{o.label} ({o.score:.3f})")  # fmt: skip
    ax.set_xlabel("simulated days")
    ax.set_ylabel("best-so-far mean validation Dice (ET, TC, WT)")
    ax.set_xlim(0, budget_s / DAY_S)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="plan (score)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=71, help="sites synthesized (held-out included)")
    ap.add_argument("--cases", type=int, default=600, help="cases over all sites")
    ap.add_argument("--sizes", default="lognormal:1.2", help="site size distribution (synth)")
    ap.add_argument("--held-out", type=int, default=6, help="sites held out (never train)")
    ap.add_argument("--spacing", type=float, default=8.0, help="voxel size of the data, mm")
    ap.add_argument("--rounds", type=int, default=400,
                    help="round cap per plan (cyclic: visits); the budget ends them")  # fmt: skip
    ap.add_argument("--budget-days", type=float, default=WEEK_S / DAY_S)
    ap.add_argument("--k", type=int, default=8, help="sites per round of the selecting plans")
    ap.add_argument("--plans", nargs="*", default=None, help="NAME[:k=v,...] (default: all 7)")
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0, help="data, training and speeds")
    ap.add_argument("--workers", type=int, default=1, help="plans run side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument(
        "--clock-validators",
        action="store_true",
        help="the round also waits for the validation-only sites (the challenge)",
    )
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-convergence-"))
    work.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_days * DAY_S
    sites, held = make_data(work / "data", args, console)
    plan_args = short_labels([parse_plan_arg(p) for p in (args.plans or default_plans(args.k))])
    plans = {a.label: make_plan(a, sites, args) for a in plan_args}
    n_cases = sum(len(discover_cases(p)) for p in sites.values())
    console.print(f"work folder {work}: {len(sites)} training sites ({n_cases} cases), "
                  f"{len(held)} held out; budget {args.budget_days:g} simulated days, at "
                  f"most {args.rounds} rounds per plan; clock: sim_time's stated "
                  "assumptions (median site's epoch 1 h)")  # fmt: skip
    runs = work / "runs"
    ctx = get_context("spawn")
    outcomes: list[Outcome] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar,\
         ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:  # fmt: skip
        tasks = {label: bar.add_task(label, total=args.rounds) for label in plans}
        futures = {
            label: pool.submit(run_plan, label, plan.model_dump_json(), runs / label, sites,
                               held, args.seed, budget_s, args.rounds, args.threads,
                               args.clock_validators)
            for label, plan in plans.items()
        }  # fmt: skip
        while futures:
            for label, fut in list(futures.items()):
                prog = runs / label / PROGRESS_FILE
                if prog.is_file():
                    parts = prog.read_text().split()
                    if len(parts) == 2:
                        bar.update(tasks[label], completed=int(parts[0]),
                                   description=f"{label} ({parts[1]} sim days)")  # fmt: skip
                if fut.done():
                    o = fut.result()
                    outcomes.append(o)
                    bar.update(
                        tasks[label],
                        completed=args.rounds,
                        description=f"{label} ({o.sim_days:.2f} sim days, done)",
                    )
                    del futures[label]
            time.sleep(0.5)
    order = list(plans)
    outcomes.sort(key=lambda o: order.index(o.label))
    write_outputs(work, outcomes, budget_s)
    title = (
        f"{len(sites)} sites (+{len(held)} held out), budget {args.budget_days:g} "
        f"simulated days, at most {args.rounds} rounds; score = challenge's AUC"
    )
    console.print(results_table(outcomes, title))
    console.print(f"curves: {work / 'curves.png'}; table: {work / 'results.csv'}")


if __name__ == "__main__":
    main()
