"""The Dice cost of float16 weight transfer (plan ``transfer: {weights: float16}``).

Runs the demo-sized federation (``fedseg demo``'s plan and synthetic data: 3 sites, FedAvg,
an 8-filter depth-2 U-Net) twice with the same seed, once with float32 and once with
float16 transfer, through the real round loop and the real site code in this process
(``compare_plans.local_transport``, the engine of ``fedseg compare``, which makes the same
float16 round trip as the engine's messages). Prints, side by side: the final model's mean
validation Dice (the one round-score rule), the best round's, and the bytes per round
(sent + received, from the run store's ``bytes_sent``/``bytes_received``).

    python benchmarks/transfer_dtype.py [--rounds 6] [--threads 1] [--keep DIR]
    python benchmarks/transfer_dtype.py --tiny   # smoke test: tiny data and network, seconds
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
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.commands.demo import demo_plan, make_demo_data
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, PrivacyConfig, TransferConfig, save_plan
from fedseg.run_folder import PLAN_FILE
from fedseg.tracking.curves import round_scores
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig

DTYPES = ("float32", "float16")


def tiny_plan(data: Path, rounds: int) -> PlanConfig:
    """A seconds-long plan for the smoke test: 4-filter network, 16^3 patches."""
    plan = demo_plan(data, rounds)
    return plan.model_copy(update={
        "network": NetworkConfig(base_filters=4, depth=2),
        "local_epochs": 1,
        "train": TrainConfig.cpu(patch_size=(16, 16, 16), patches_per_case=2, val_roi=(32, 32, 32),
                                 val_overlap=0.0, val_batch_size=4, cache_mb=64),
        "privacy": PrivacyConfig(min_summary_cases=1),  # tiny sites validate on one case
    })  # fmt: skip


def run_one(work: Path, plan: PlanConfig, dtype: str) -> dict[str, str]:
    """One federation with ``dtype`` transfer; its row of the table."""
    plan = plan.model_copy(update={"transfer": TransferConfig(weights=dtype)})  # type: ignore[arg-type]
    work.mkdir(parents=True)
    save_plan(work / PLAN_FILE, plan)
    data = {s: Path(c.data) for s, c in plan.sites.items() if c.data is not None}
    transport = LocalTransport(data, {s: work / "sites" / s for s in data})
    t0 = time.perf_counter()
    Coordinator(work, transport).run()
    wall = time.perf_counter() - t0
    with RunStore(work) as store:
        scores = round_scores(store)
        best = store.meta.best()
        per_round: dict[int, int] = {}
        for s in store.site_rounds():
            per_round[s.round] = (
                per_round.get(s.round, 0) + (s.bytes_sent or 0) + (s.bytes_received or 0)
            )
    last = max(scores) if scores else None
    mb = sum(per_round.values()) / max(1, len(per_round)) / 1e6
    return {
        "final": f"{scores[last].mean:.4f} (model {last})" if last is not None else "-",
        "best": (f"{best.score:.4f} (model {best.model_round})" if best is not None else "none"),
        "bytes": f"{mb:.3f}",
        "wall": f"{wall:.0f}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="smoke test: tiny data and network")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    console = Console()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if args.tiny:
        make_tiny_dataset(data, sites=3, cases_per_site=4, seed=0)
        plan = tiny_plan(data.resolve(), args.rounds)
    else:
        make_demo_data(data)
        plan = demo_plan(data.resolve(), args.rounds)
    console.print(f"work folder {work}: {plan.name}, {args.rounds} rounds, same seed per dtype")
    size = "tiny" if args.tiny else "demo"
    table = Table(title=f"{size} federation, {args.rounds} rounds: weights sent as float32 vs "
                  "float16 (mean validation Dice over ET/TC/WT)")  # fmt: skip
    for col in ("transfer", "final model Dice", "best round Dice", "MB per round", "wall s"):
        table.add_column(col)
    for dtype in DTYPES:
        row = run_one(work / "runs" / dtype, plan, dtype)
        console.print(f"{dtype}: {row}")
        table.add_row(dtype, row["final"], row["best"], row["bytes"], row["wall"])
    console.print(table)


if __name__ == "__main__":
    main()
