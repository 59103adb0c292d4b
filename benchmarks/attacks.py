"""A lying site against FedAvg, with the report bounds off (before) and on (after).

The four lies of issue 17, each told by one site in every reply (``compare_plans.attacks``):
it claims n_train = 10^9; its update is scaled by 1e30; it claims validation Dice 1.0 over
10,000 cases for the untrained model 0; it claims n_train = -5. Each runs the real round
loop and the real site code in this process (``compare_plans.local_transport``, the
engine of ``fedseg compare``) on tiny synthetic sites (4 mm, as ``fedseg data synth``),
once with the plan's ``bounds: {enabled: false}`` and once with the default bounds. A
clean run (nobody lies) with and without the bounds measures what the norm bound costs.

Per run: the clean sites' mean validation Dice (the one round-score rule over the sites
other than the liar, in the clean run too) of the final model and of the model ``best.pt``
holds, whether a round failed, what became of the liar's replies and its share of the
aggregation weight.

    python benchmarks/attacks.py [--rounds 4] [--sites 3] [--cases 8] [--local-epochs 2]
        [--base-filters 8] [--patch 32] [--lr 3e-3] [--attacks 0 1 ...] [--keep DIR]
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

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.compare_plans.attacks import Poison
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.model.config import NetworkConfig
from fedseg.plan import BoundsConfig, PlanConfig, SiteConfig, save_plan
from fedseg.run_folder import PLAN_FILE, RoundStatus, SiteRoundStatus
from fedseg.tracking.curves import round_scores
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig

LIAR = "site3"
ATTACKS: dict[str, Poison | None] = {
    "none (clean run)": None,
    "n_train = 10^9": Poison(site=LIAR, kind="n_train", n_train=10**9),
    "update x 1e30": Poison(site=LIAR, kind="scale", scale=1e30),
    "Dice 1.0 over 10,000 (model 0)": Poison(site=LIAR, kind="dice", dice=1.0),
    "n_train = -5": Poison(site=LIAR, kind="n_train", n_train=-5),
    "update x 50": Poison(site=LIAR, kind="scale", scale=50.0),
}


def run_one(work: Path, sites: dict[str, Path], args: argparse.Namespace,
            poison: Poison | None, bounds: bool) -> dict[str, str]:  # fmt: skip
    """One federation; its row of the table."""
    patch = (args.patch,) * 3
    plan = PlanConfig(
        name="attack", sites={s: SiteConfig(data=p) for s, p in sites.items()},
        rounds=args.rounds, local_epochs=args.local_epochs, min_sites=2, round_timeout_s=3600,
        seed=0, network=NetworkConfig(base_filters=args.base_filters, depth=2),
        train=TrainConfig.cpu(lr=args.lr, patch_size=patch, val_roi=(32, 32, 32),
                              val_overlap=0.0, val_batch_size=4, cache_mb=64),
        bounds=BoundsConfig(enabled=bounds),
    )  # fmt: skip
    work.mkdir(parents=True)
    save_plan(work / PLAN_FILE, plan)
    transport = LocalTransport(sites, {s: work / "sites" / s for s in sites}, poison)
    t0 = time.perf_counter()
    failed = ""
    try:
        Coordinator(work, transport).run()
    except Exception as exc:  # the attack halted the federation: that is the measurement
        failed = (str(exc).splitlines() or [type(exc).__name__])[0]
    wall = time.perf_counter() - t0
    clean = [s for s in sites if s != LIAR]  # the same sites in every row, the clean run's too
    with RunStore(work) as store:
        scores = round_scores(store, sites=clean)
        best = store.meta.best()
        rounds_done = [r["round"] for r in store.rounds() if r["status"] == RoundStatus.DONE]
        liar = [s for s in store.site_rounds(LIAR)] if poison is not None else []
        first = [s for s in store.site_rounds() if s.round == 1 and s.status == "ok"]
    last = max(scores) if scores else None
    final = f"{scores[last].mean:.3f} (model {last})" if last is not None else "-"
    best_dice = (f"{scores[best.model_round].mean:.3f} (model {best.model_round})"
                 if best is not None and best.model_round in scores else "none")  # fmt: skip
    statuses = sorted({("clipped" if (s.extra or {}).get("clipped_to") else s.status.value)
                       if s.status == SiteRoundStatus.OK else s.status.value
                       for s in liar})  # fmt: skip
    total = sum(s.n_train or 0 for s in first)
    share = next((s.n_train or 0 for s in first if s.site == LIAR), 0)
    return {
        "final": final,
        "best": best_dice,
        "failed": failed[:60] or f"no ({len(rounds_done)} rounds done)",
        "liar": ", ".join(statuses) or "-",
        "share": f"{share / total:.2g}" if total and poison is not None else "-",
        "wall": f"{wall:.0f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--cases", type=int, default=8, help="cases per site (4:1 split)")
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--attacks", nargs="*", type=int, default=None,
                    help="indices into the attack list (default: all)")  # fmt: skip
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    console = Console()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-attacks-"))
    work.mkdir(parents=True, exist_ok=True)
    console.print(f"work folder {work}: {args.sites} synthetic sites x {args.cases} cases")
    names = make_tiny_dataset(work / "data", sites=args.sites, cases_per_site=args.cases, seed=0)
    sites = {s: work / "data" / s for s in names}
    table = Table(title=f"FedAvg, {args.sites} sites, {args.rounds} rounds of "
                  f"{args.local_epochs} epochs; {LIAR} lies "
                  "in every reply; Dice = mean validation Dice at the clean sites")  # fmt: skip
    for col in ("attack", "bounds", "final model Dice", "best.pt Dice", "round failed",
                "liar's replies", "liar's weight (round 1)", "wall s"):  # fmt: skip
        table.add_column(col)
    items = list(ATTACKS.items())
    chosen = [items[i] for i in args.attacks] if args.attacks is not None else items
    for i, (label, poison) in enumerate(chosen):
        for bounds in (False, True):
            tag = f"{i}-{'on' if bounds else 'off'}"
            row = run_one(work / "runs" / tag, sites, args, poison, bounds)
            console.print(f"{label}, bounds {'on' if bounds else 'off'}: {row}")
            table.add_row(label, "on" if bounds else "off (before)", row["final"], row["best"],
                          row["failed"], row["liar"], row["share"], row["wall"])  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
