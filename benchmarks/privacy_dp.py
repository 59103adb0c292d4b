"""Dice at a differential-privacy budget: ε in {1, 3, 8} and no DP, for one DP level.

Synthetic multi-site data (the demo's generator: 3 training sites and a 4th held out, never
trained on), the demo's plan (FedAvg, 8-filter depth-2 U-Net, 16^3 patches) run once per
budget with the same seed through the real round loop and the real site code in this
process (``compare_plans.local_transport``, the engine of ``fedseg compare``). Each run's
plan differs only in ``privacy.dp`` (``level``, ``epsilon``; the noise multiplier is the
smallest that keeps the planned rounds within ε). Prints a table (final model's Dice on
the training sites' validation cases and on the held-out site, the noise multiplier and
the ε spent from the run store's privacy ledger) and writes a PNG plot of Dice against ε.

    python benchmarks/privacy_dp.py --level site [--rounds 6] [--clip 1.0] [--keep DIR]
    python benchmarks/privacy_dp.py --level case     # DP-SGD at each site (privacy.dp level case)
    python benchmarks/privacy_dp.py --tiny           # smoke test: tiny data and network, seconds

Expect, at site level with 3 sites: the noise (std sigma x clip / 3 per value, sigma ~ 2
for ε = 8 over a handful of rounds) swamps the model at every ε here; site-level DP needs
many sites. Case-level DP-SGD is the one that can keep a usable model at these budgets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.cases import discover_cases
from fedseg.data.splits import load_split, make_split
from fedseg.data.synth.config import SynthConfig
from fedseg.data.synth.generate import generate_dataset, make_tiny_dataset
from fedseg.federation.commands.compare_plans.evaluation import dice_on_sites
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.commands.demo import CASES_PER_SITE, SPACING_MM, VAL_FRACTION, demo_plan
from fedseg.federation.commands.run_folder import check_plan_runs
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.model.config import NetworkConfig
from fedseg.model.model_file import load_model
from fedseg.plan import PlanConfig, SiteConfig, save_plan
from fedseg.privacy.config import DpConfig, PrivacyConfig
from fedseg.run_folder import PLAN_FILE, model_path
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig

BUDGETS: tuple[float | None, ...] = (1.0, 3.0, 8.0, None)  # None: no DP
TRAIN_SITES = ("site1", "site2", "site3")
HOLDOUT = "site4"


def make_data(data: Path, tiny: bool, seed: int = 0) -> None:
    """Four synthetic sites with a train/validation split; site4 is the held-out one."""
    if tiny:
        make_tiny_dataset(data, sites=4, cases_per_site=4, seed=seed)
    else:
        cfg = SynthConfig(sites=4, cases_per_site=CASES_PER_SITE, seed=seed, spacing=SPACING_MM)
        generate_dataset(data, cfg)
    for site in sorted(p for p in data.iterdir() if p.is_dir()):
        make_split(site, val_fraction=VAL_FRACTION)


def base_plan(data: Path, rounds: int, tiny: bool) -> PlanConfig:
    """The demo's plan on the three training sites (tiny: 4-filter network, seconds)."""
    plan = demo_plan(data, rounds)
    update: dict[str, object] = {
        "sites": {s: SiteConfig(data=data / s) for s in TRAIN_SITES},
        "privacy": PrivacyConfig(min_summary_cases=1),
    }
    if tiny:
        update |= {
            "network": NetworkConfig(base_filters=4, depth=2), "local_epochs": 1,
            "train": TrainConfig.cpu(patch_size=(16, 16, 16), patches_per_case=1,
                                     val_roi=(32, 32, 32), val_overlap=0.0, val_batch_size=4,
                                     cache_mb=64),
        }  # fmt: skip
    return plan.model_copy(update=update)


def with_dp(plan: PlanConfig, level: str, epsilon: float | None, clip: float) -> PlanConfig:
    """``plan`` at budget ``epsilon`` of DP ``level`` (None: no DP). Case level draws one
    patch per case (a case is one record) and no batch norm (the demo has none)."""
    if epsilon is None:
        return plan.model_copy(update={"name": f"{plan.name}-no-dp"})
    dp = DpConfig(level=level, epsilon=epsilon, clip_norm=clip)  # type: ignore[arg-type]
    update: dict[str, object] = {
        "name": f"{plan.name}-{level}-eps{epsilon:g}",
        "privacy": plan.privacy.model_copy(update={"dp": dp}),
        # site level: bounds relative to the median are not applied; say so in the plan
        "bounds": plan.bounds.model_copy(update={"update_norm_ratio": None,
                                                 "reject_norm_ratio": None}),
    }  # fmt: skip
    if level == "case":
        update["train"] = plan.train.model_copy(update={"patches_per_case": 1})
    return plan.model_copy(update=update)


def run_one(work: Path, plan: PlanConfig) -> dict[str, str]:
    """One federation; its row of the table."""
    check_plan_runs(plan, work)  # the refusals a real run gets
    work.mkdir(parents=True)
    save_plan(work / PLAN_FILE, plan)
    data = {s: Path(c.data) for s, c in plan.sites.items() if c.data is not None}
    t0 = time.perf_counter()
    Coordinator(work, LocalTransport(data, {s: work / "sites" / s for s in data})).run()
    wall = time.perf_counter() - t0
    with RunStore(work) as store:
        ledger = store.privacy_ledger()
    final = load_model(model_path(work, plan.rounds)).weights
    holdout = Path(next(iter(data.values()))).parent / HOLDOUT
    val = {s: list(load_split(p).val) for s, p in data.items()}
    pooled, _ = dice_on_sites(plan.network, plan.train, final, val)
    held, _ = dice_on_sites(plan.network, plan.train, final, {HOLDOUT: discover_cases(holdout)})
    last = {}
    for _, site, spent in ledger:
        last[site] = spent  # the latest per ledger site
    eps = max((s.epsilon for s in last.values()), default=None)
    sigma = max((s.sigma for s in last.values()), default=None)
    return {
        "val": f"{pooled.get('mean', float('nan')):.4f}",
        "held": f"{held.get('mean', float('nan')):.4f}",
        "sigma": "-" if sigma is None else f"{sigma:.3g}",
        "spent": "-" if eps is None else f"{eps:.3g}",
        "wall": f"{wall:.0f}",
    }


def plot(path: Path, level: str, rows: list[tuple[str, dict[str, str]]]) -> Path:
    """Dice (validation and held-out) against the budget, no DP at the right."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    x = list(range(len(rows)))
    for key, label in (("val", "training sites' validation"), ("held", "held-out site")):
        ax.plot(x, [float(r[key]) for _, r in rows], marker="o", label=label)
    ax.set_xticks(x, [lbl for lbl, _ in rows])
    ax.set_xlabel("ε budget of the run")
    ax.set_ylabel("mean Dice (ET/TC/WT)")
    ax.set_ylim(0, 1)
    ax.set_title(f"Dice at a DP budget, level {level}")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", choices=("site", "case"), default="site")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--clip", type=float, default=1.0, help="privacy.dp.clip_norm")
    ap.add_argument(
        "--budgets", type=str, default=None, help="comma-separated ε, 'none': no DP (1,3,8,none)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="smoke test: tiny data and network")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    budgets = BUDGETS if args.budgets is None else tuple(
        None if b.strip() == "none" else float(b) for b in args.budgets.split(",")
    )  # fmt: skip
    console = Console()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-privacy-"))
    work.mkdir(parents=True, exist_ok=True)
    data = (work / "data").resolve()
    make_data(data, args.tiny)
    plan = base_plan(data, args.rounds, args.tiny)
    console.print(f"work folder {work}: {args.rounds} rounds, level {args.level}, clip "
                  f"{args.clip:g}, sites {', '.join(TRAIN_SITES)}, held out {HOLDOUT}")  # fmt: skip
    rows: list[tuple[str, dict[str, str]]] = []
    for eps in budgets:
        label = "no DP" if eps is None else f"{eps:g}"
        p = with_dp(plan, args.level, eps, args.clip)
        row = run_one(work / "runs" / p.name, p)
        console.print(f"ε {label}: {row}")
        if eps is not None and row["spent"] == "-":
            console.print(f"warning: the run at ε {label} recorded no ε: this fedseg does not "
                          f"apply DP level {args.level}; its Dice is a run without DP")  # fmt: skip
        rows.append((label, row))
    size = "tiny" if args.tiny else "demo"
    table = Table(title=f"{size} federation, {args.rounds} rounds, DP level {args.level}: final "
                  "model's mean Dice over ET/TC/WT")  # fmt: skip
    for col in ("ε budget", "noise multiplier", "ε spent", "Dice val (train sites)",
                "Dice held-out site", "wall s"):  # fmt: skip
        table.add_column(col)
    for label, r in rows:
        table.add_row(label, r["sigma"], r["spent"], r["val"], r["held"], r["wall"])
    console.print(table)
    png = plot(work / f"privacy_dp_{args.level}.png", args.level, rows)
    console.print(f"plot: {png}")


if __name__ == "__main__":
    main()
