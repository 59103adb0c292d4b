"""What cross-site validation costs: a small federation run in-process three times on the
same synthetic sites: without it, with the local models only (the default), and with each
local model's round model without the site too (``cross_site.leave_one_out: true``).

The real site code runs for every site (``LocalTransport``: ``run_task``'s training and
validation, one site after the other), with the aggregator's ``Coordinator``. Per run:
the mean round wall time, the sites' training and validation seconds per round (summed
over sites; validation includes the other sites' models and the home check), and the
bytes sent to the sites per round (the model each site receives, plus the other sites'
local models and the models without each site). The first round carries no other site's
models (none are parked yet), so the rounds after it show the steady cost. A one-round
warm-up run first fills the sites' case caches, so no run pays for reading the NIfTI files.

    python benchmarks/cross_site_cost.py                          # 4 sites, 3 rounds
    python benchmarks/cross_site_cost.py --demo                   # fedseg demo's data and recipe
    python benchmarks/cross_site_cost.py --sites 3 --rounds 2 --cases 4   # smoke test
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.splits import make_split
from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.compare_plans.local_transport import (
    LocalTransport,
)
from fedseg.federation.commands.demo import demo_plan, make_demo_data
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.model.config import NetworkConfig
from fedseg.plan import PLAN_FILE, PlanConfig, SiteConfig, save_plan
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig

#: the runs side by side: label -> plan ``cross_site``
MODES: dict[str, dict[str, bool]] = {
    "cross_site off": {"enabled": False},
    "local models": {"enabled": True, "leave_one_out": False},
    "+ models without": {"enabled": True, "leave_one_out": True},
}


def _plan(
    sites: dict[str, Path], rounds: int, cross: dict[str, bool], filters: int, demo: bool
) -> PlanConfig:
    if demo:  # the demo's recipe: 2 local epochs of 6 patches per case, 8 filters
        plan = demo_plan(Path("."), rounds)
        return plan.model_copy(update={
            "sites": {s: SiteConfig(data=p) for s, p in sites.items()},
            "privacy": plan.privacy.model_copy(update={"min_summary_cases": 3}),
            "cross_site": plan.cross_site.model_copy(update=cross),
        })  # fmt: skip
    return PlanConfig.model_validate({
        "name": "cross-cost", "sites": {s: SiteConfig(data=p) for s, p in sites.items()},
        "rounds": rounds, "local_epochs": 1, "min_sites": 2,
        "network": NetworkConfig(base_filters=filters, depth=2),
        "train": TrainConfig.cpu(patch_size=(16, 16, 16), val_roi=(32, 32, 32),
                                 val_overlap=0.0, val_batch_size=4, cache_mb=64),
        "privacy": {"min_summary_cases": 3},
        "cross_site": cross,
    })  # fmt: skip


def _run(
    work: Path, sites: dict[str, Path], rounds: int, mode: str, filters: int, demo: bool
) -> dict:
    cross = MODES[mode]
    run = work / f"run-{list(MODES).index(mode)}"
    run.mkdir(parents=True)
    save_plan(run / PLAN_FILE, _plan(sites, rounds, cross, filters, demo))
    ws = {s: work / f"ws-{run.name}" / s for s in sites}
    Coordinator(run, LocalTransport(sites, ws, min_summary_cases=3)).run()
    with RunStore(run) as store:
        walls = [r["wall_s"] for r in store.rounds()]
        srs = store.site_rounds()
        n_cross = len(store.cross(metric="dice_diff", region="mean"))
    later = [s for s in srs if s.round > 1]

    def per_round(values: list[float]) -> float:
        return sum(values) / max(len({s.round for s in later}), 1)

    return {
        "round wall s (mean, rounds >= 2)": sum(walls[1:]) / max(len(walls) - 1, 1),
        "site train s / round": per_round([(s.extra or {}).get("train_wall_s", 0) for s in later]),
        "site validation s / round": per_round(
            [(s.extra or {}).get("val_wall_s", 0) for s in later]
        ),
        "bytes to sites / round": per_round([s.bytes_sent for s in later]),
        "bytes from sites / round": per_round([s.bytes_received for s in later]),
        "cross-site rows (mean dice_diff)": n_cross,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--cases", type=int, default=6, help="cases per site (half validation)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--demo", action="store_true",
                    help="the demo's 3 sites and recipe (--sites, --cases ignored)")  # fmt: skip
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cross-cost-", dir=a.work))
    try:
        if a.demo:
            make_demo_data(work / "data")
        else:
            made = make_tiny_dataset(work / "data", sites=a.sites, cases_per_site=a.cases, seed=5)
            for name in made:
                make_split(work / "data" / name, val_fraction=0.5)
        sites = {p.name: p.resolve() for p in sorted((work / "data").iterdir()) if p.is_dir()}
        off = next(iter(MODES))
        _run(work / "warm-up", sites, 1, off, a.base_filters, a.demo)  # fills the case caches
        res = {m: _run(work, sites, a.rounds, m, a.base_filters, a.demo) for m in MODES}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    what = "the demo's data and recipe" if a.demo else (
        f"{a.sites} sites x {a.cases} cases, {a.base_filters} base filters")  # fmt: skip
    t = Table(title=f"{what}, {a.rounds} rounds (in-process)")
    local, both = list(MODES)[1:]
    for col in ("", *MODES, f"{local} / off", f"{both} / off"):
        t.add_column(col, justify="right" if col else "left")
    for key in res[off]:
        base = res[off][key]
        vals = [res[m][key] for m in MODES]
        ratios = [f"{v / base:.2f}" if base else "-" for v in vals[1:]]
        t.add_row(key, *(f"{v:,.2f}" for v in vals), *ratios)
    Console(width=120).print(t)


if __name__ == "__main__":
    main()
