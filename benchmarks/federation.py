"""Federation overhead: fedseg over Flower's deployment engine vs a bare Flower exchange.

For one model and one set of synthetic sites, in one run:
- per-round wall time of ``fedseg simulate`` (validate + train + checks + store + model
  files) and of a bare Flower app that sends the same arrays to the same number of
  SuperNodes and gets them back (``benchmarks/bare_flower_app``: no training, no checks);
- bytes sent to / received from each site per round, against the model's size.

    python benchmarks/federation.py [--rounds 2] [--sites 3] [--base-filters 8] [--depth 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.simulate import simulate
from fedseg.federation.engine.launcher import Launcher
from fedseg.federation.rounds.aggregation import n_bytes
from fedseg.federation.rounds.coordinator import initial_weights
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, SiteConfig, save_plan
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig

BARE_APP = Path(__file__).resolve().parent / "bare_flower_app"


def bare_exchange(workdir: Path, arrays: Path, rounds: int, n_sites: int) -> dict:
    """Run the bare app on a fresh SuperLink + ``n_sites`` SuperNodes; its JSON result."""
    result = workdir / "bare.json"
    launcher = Launcher(workdir)
    try:
        launcher.start_superlink()
        for i in range(n_sites):
            launcher.start_site(f"site{i + 1}", {"site-name": f"site{i + 1}"})
        launcher.submit(BARE_APP, {"arrays": str(arrays), "rounds": rounds, "nodes": n_sites,
                                   "result": str(result)})  # fmt: skip
        end = time.monotonic() + 1800
        while not result.is_file() and time.monotonic() < end:
            time.sleep(0.5)
    finally:
        launcher.stop()
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    console = Console()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    console.print(f"work folder {work}: writing {args.sites} synthetic sites")
    sites = make_tiny_dataset(work / "data", sites=args.sites, cases_per_site=4, seed=0)
    d = 2**args.depth
    patch = max(16, d)
    plan = PlanConfig(
        name="bench",
        sites={s: SiteConfig(data=work / "data" / s) for s in sites},
        rounds=args.rounds,
        min_sites=1,
        round_timeout_s=1800,
        network=NetworkConfig(base_filters=args.base_filters, depth=args.depth),
        train=TrainConfig.cpu(
            patch_size=(patch,) * 3,
            val_roi=(32, 32, 32),
            val_overlap=0.0,
            val_batch_size=4,
            cache_mb=64,
        ),
    )
    plan_path = save_plan(work / "plan.yaml", plan)
    weights = initial_weights(plan)
    model_bytes = n_bytes(weights)
    arrays = work / "arrays.npz"
    np.savez(arrays, **weights)

    console.print("fedseg simulate ...")
    res = simulate(plan_path, work / "run", live=False, console=console)
    with RunStore(res.run_dir) as store:
        fed_rounds = {r["round"]: r["wall_s"] for r in store.rounds()}
        srs = store.site_rounds()
    console.print("bare Flower exchange ...")
    bare = bare_exchange(work / "bare", arrays, args.rounds, args.sites)
    bare_rounds = {r["round"]: r["wall_s"] for r in bare["rounds"]}

    t = Table(title=f"seconds per round, {args.sites} sites, model {model_bytes / 1e6:.2f} MB")
    for c in ("round", "fedseg", "bare Flower", "fedseg - bare", "site train+val (mean)"):
        t.add_column(c, justify="right")
    for r in sorted(fed_rounds):
        work_s = [
            (s.extra or {}).get("train_wall_s", 0) + (s.extra or {}).get("val_wall_s", 0)
            for s in srs
            if s.round == r
        ]
        b = bare_rounds.get(r, float("nan"))
        t.add_row(str(r), f"{fed_rounds[r]:.1f}", f"{b:.1f}", f"{fed_rounds[r] - b:.1f}",
                  f"{np.mean(work_s):.1f}")  # fmt: skip
    console.print(t)

    b = Table(title="bytes per site per round")
    for c in ("", "sent (mean)", "received (mean)", "model size", "sent / model"):
        b.add_column(c, justify="right")
    sent = np.mean([s.bytes_sent for s in srs])
    recv = np.mean([s.bytes_received for s in srs])
    b.add_row(
        "fedseg", f"{sent:,.0f}", f"{recv:,.0f}", f"{model_bytes:,}", f"{sent / model_bytes:.4f}"
    )
    bare_recv = np.mean([x for r in bare["rounds"] for x in r["bytes"]])
    b.add_row("bare", f"{bare['sent_bytes']:,}", f"{bare_recv:,.0f}", f"{model_bytes:,}",
              f"{bare['sent_bytes'] / model_bytes:.4f}")  # fmt: skip
    console.print(b)
    console.print(
        f"startup of a site's app process per message (mean): "
        f"{np.mean([(s.extra or {}).get('startup_s', 0) for s in srs]):.1f} s"
    )


if __name__ == "__main__":
    main()
