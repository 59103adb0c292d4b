"""What makes FedAvg converge fast: a grid of recipes through ``fedseg compare``.

The setting of issue 19 item 5: ``--sites`` synthetic sites (``fedseg data synth``, 4 mm)
that train plus one more that never does (held out), a budget of ``--budget`` local epochs
per site (12), compare's default recipe (``RecipeConfig.cpu()``: 8 filters, depth 3, 32^3
patches, Adam 1e-3). Every recipe runs the real round loop and site code in this process
(``compare_plans.run_compare``), one compare per lr schedule: its plans and the
centralized model trained with the same schedule over its epochs (``train.lr_schedule``,
an epoch being a centralized round). The recipes:

* local epochs per round E (a parallel plan then runs ``budget / E`` rounds);
* the lr schedule over the rounds: constant or cosine (``train.lr_schedule``);
* the server step: FedAvg, FedAvgM (``server_lr`` 2, momentum 0.9), FedAdam (defaults);
* the sites' Adam state between rounds: ``reset`` or ``average`` (and today's default,
  ``keep-local``, in the plain FedAvg row every grid has: compare's own recipe).

``--grid small``: E 1, both schedules, the three server steps, ``reset``, plus today's
FedAvg (9 runs with the two centralized ones). ``--grid full``: E 1 and 3, both schedules,
the three server steps, ``reset`` and ``average``, plus today's FedAvg (27 runs).

Tuning reads the validation Dice (the training sites' validation cases): the table is
sorted by it and the winner is the plan with the best final validation mean Dice. The
held-out site's Dice is reported next to it, never used to choose. "% central" is the
held-out mean Dice as a share of the centralized model's with a constant lr (today's
recipe), the issue's 14.5 %.

Output (``--keep DIR``, else a temporary folder): ``data/`` (the sites), one compare folder
per schedule (``compare-constant/``, ``compare-cosine/``: its results.md, curves.png and
runs), ``results.csv`` (one row per run) and ``curves.png`` (mean validation Dice against
local epochs per site, every run of the grid).

    python benchmarks/fedavg_recipe.py [--grid small|full] [--keep DIR] [--budget 12]
        [--sites 4] [--cases 8] [--spacing 4] [--seed 0] [--jobs 1]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.synth.config import SynthConfig
from fedseg.data.synth.generate import generate_dataset
from fedseg.federation.commands.compare_plans.arguments import CompareConfig, PlanArg
from fedseg.federation.commands.compare_plans.outputs import RunOutcome, plot_curves
from fedseg.federation.commands.compare_plans.run import run_compare
from fedseg.plan import StrategyConfig
from fedseg.train.config import LrScheduleConfig, RecipeConfig

#: server steps: label -> (strategy, its parameters)
SERVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "fedavg": ("fedavg", {}),
    "fedavgm2": ("fedavgm", {"server_lr": 2.0}),
    "fedadam": ("fedadam", {}),
}
SCHEDULES = ("constant", "cosine")
#: compare's own FedAvg (the strategy's defaults: optimizer_state keep-local, E 1)
TODAY = "today-fedavg"


@dataclass(frozen=True)
class Recipe:
    """One federated recipe of the grid."""

    epochs: int
    server: str
    optimizer: str

    @property
    def label(self) -> str:
        return f"E{self.epochs}-{self.server}-{self.optimizer}"

    def plan(self) -> PlanArg:
        name, params = SERVERS[self.server]
        strategy = StrategyConfig(name=name, params={**params, "optimizer_state": self.optimizer})
        return PlanArg(label=self.label, strategy=strategy, local_epochs=self.epochs)


def grid(which: str) -> list[Recipe]:
    epochs, optimizers = ((1,), ("reset",)) if which == "small" else ((1, 3), ("reset", "average"))
    return [Recipe(e, s, o) for e, s, o in itertools.product(epochs, SERVERS, optimizers)]


def compare_config(args: argparse.Namespace, sites: dict[str, Path], held: dict[str, Path],
                   schedule: str, recipes: list[Recipe]) -> CompareConfig:  # fmt: skip
    """One compare: the recipes under ``schedule`` (and today's FedAvg under the constant
    one), the centralized model trained with the same schedule, no single-site models."""
    plans = [r.plan() for r in recipes]
    if schedule == "constant":
        plans.insert(0, PlanArg(label=TODAY, strategy=StrategyConfig(name="fedavg")))
    rec = RecipeConfig.cpu()
    train = rec.train.model_copy(update={"lr_schedule": LrScheduleConfig(kind=schedule)})
    return CompareConfig(plans=plans, sites=sites, holdout=held, budget=args.budget,
                         seed=args.seed, network=rec.network, train=train,
                         single_sites=False, threads=1)  # fmt: skip


def run_one(cfg: CompareConfig, out: Path, quiet: bool) -> list[RunOutcome]:
    """One ``fedseg compare`` into ``out`` (its progress on stderr unless ``quiet``)."""
    return run_compare(cfg, out, Console(stderr=True, quiet=quiet))


def make_sites(args: argparse.Namespace, data: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The training sites and the held-out one (the last), synthesized once per folder."""
    n = args.sites + 1
    if not (data / f"site{n}").is_dir():
        generate_dataset(data, SynthConfig(sites=n, cases_per_site=args.cases,
                                           spacing=args.spacing, seed=args.seed))  # fmt: skip
    sites = {f"site{i}": data / f"site{i}" for i in range(1, n)}
    return sites, {f"site{n}": data / f"site{n}"}


def rows_of(schedule: str, outcomes: list[RunOutcome], recipes: list[Recipe]) -> list[dict]:
    by_label = {r.label: r for r in recipes}
    rows = []
    for o in outcomes:
        r = by_label.get(o.label)
        final, best = o.scores.get("final", {}), o.scores.get("best", {})
        rows.append({
            "run": o.label if o.kind == "plan" else "central",
            "schedule": schedule,
            "local_epochs": r.epochs if r else (1 if o.label == TODAY else "-"),
            "server": r.server if r else ("fedavg" if o.label == TODAY else "-"),
            "optimizer_state": r.optimizer if r else ("keep-local" if o.label == TODAY else "-"),
            "val_final": final.get("val", {}).get("mean"),
            "val_best": best.get("val", {}).get("mean"),
            "held_out_final": final.get("holdout", {}).get("mean"),
            "held_out_best": best.get("holdout", {}).get("mean"),
            "wall_s": round(o.wall_s, 1),
        })  # fmt: skip
    return rows


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def report(rows: list[dict], args: argparse.Namespace, console: Console) -> Table:
    ref = next((r["held_out_final"] for r in rows
                if r["run"] == "central" and r["schedule"] == "constant"), None)  # fmt: skip
    for r in rows:
        r["pct_central"] = r["held_out_final"] / ref if ref and r["held_out_final"] else None
    rows.sort(key=lambda r: -(r["val_final"] if r["val_final"] is not None else -1.0))
    title = (f"FedAvg recipes: {args.sites} sites + 1 held out, {args.budget} local epochs "
             "per site, sorted by final validation Dice")  # fmt: skip
    table = Table(title=title, title_justify="left")
    cols = ("run", "lr", "E", "server", "Adam", "val Dice", "val best", "held-out Dice",
            "% central", "wall s")  # fmt: skip
    for c in cols:
        table.add_column(c, justify="left" if c in ("run", "lr", "server", "Adam") else "right")
    for r in rows:
        table.add_row(r["run"], r["schedule"], str(r["local_epochs"]), r["server"],
                      r["optimizer_state"], _f(r["val_final"]), _f(r["val_best"]),
                      _f(r["held_out_final"]), _f(r["pct_central"], pct=True),
                      f"{r['wall_s']:.0f}")  # fmt: skip
    plans = [r for r in rows if r["run"] != "central" and r["val_final"] is not None]
    if plans:
        win, today = plans[0], next((r for r in rows if r["run"] == TODAY), None)
        console.print(f"winner by validation Dice: {win['run']} ({win['schedule']} lr): "
                      f"{_f(win['val_final'])}, held out {_f(win['held_out_final'])} "
                      f"({_f(win['pct_central'], pct=True)} of central)"
                      + (f"; today's FedAvg {_f(today['val_final'])}, held out "
                         f"{_f(today['held_out_final'])}" if today else ""))  # fmt: skip
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=("small", "full"), default="small")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    ap.add_argument("--budget", type=int, default=12, help="local epochs per site")
    ap.add_argument("--sites", type=int, default=4, help="training sites (one more is held out)")
    ap.add_argument("--cases", type=int, default=8, help="cases per site")
    ap.add_argument("--spacing", type=float, default=4.0, help="voxel size of the sites, mm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1,
                    help="compares (one per lr schedule) at once, one process each")  # fmt: skip
    args = ap.parse_args()
    console = Console(width=130)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-fedavg-recipe-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sites, held = make_sites(args, work / "data")
    recipes = grid(args.grid)
    configs = {s: compare_config(args, sites, held, s, recipes) for s in SCHEDULES}
    runs = sum(len(c.plans) + 1 for c in configs.values())
    console.print(f"work folder {work}: {args.grid} grid, {runs} runs in {len(configs)} "
                  f"compares; sites {', '.join(sites)}, held out {', '.join(held)}")  # fmt: skip
    results: dict[str, list[RunOutcome]] = {}
    if args.jobs <= 1:
        for i, (s, cfg) in enumerate(configs.items(), 1):
            console.print(f"[{i}/{len(configs)}] lr schedule {s}: {len(cfg.plans)} plans + central")
            results[s] = run_one(cfg, work / f"compare-{s}", quiet=False)
    else:
        with ProcessPoolExecutor(args.jobs) as pool, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task("compares", total=len(configs))
            futures = {s: pool.submit(run_one, cfg, work / f"compare-{s}", True)
                       for s, cfg in configs.items()}  # fmt: skip
            for s, fut in futures.items():
                results[s] = fut.result()
                bar.advance(task)
    rows = [row for s, outs in results.items() for row in rows_of(s, outs, recipes)]
    table = report(rows, args, console)
    console.print(table)
    with (work / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    named = [RunOutcome(f"{o.label} ({s})", o.kind, o.run_dir, o.epochs, o.curve, o.final,
                        o.best, o.wall_s) for s, outs in results.items() for o in outs]  # fmt: skip
    plot_curves(work / "curves.png", named)
    console.print(
        f"wrote {work / 'results.csv'} and {work / 'curves.png'} ({time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
