"""Aggregating FeTS-size updates: the streaming fold against the batch one and a memcpy.

Ten updates of the FeTS network (``NetworkConfig()``: 30 base filters, 30.2 M float32
parameters, 120 MB each) are made as the global model plus noise, one at a time, as replies
arrive. Two ways, side by side in one run (streaming first, so the process's peak RSS
after it is its own):

- streaming (``Strategy.streams``): each update's norm is taken and it is parked on disk
  (``rounds.spool``, under ``--work``) and dropped; then the FedAvg mean is folded from the
  spool array by array (``aggregation.weighted_average``) and each update's distance to the
  new model is read back again, as the coordinator does;
- batch: every update is kept in memory, then the same mean and distances.

Times: the park (disk writes), the fold and the distances, against a memcpy of the same
bytes (``np.copyto`` of the ten updates into one buffer). Memory: the peak of numpy
allocations above the global model (tracemalloc) and the peak RSS growth, in units of one
model's size. The spool's reads go through the page cache (not this process's memory).

    python benchmarks/aggregation.py                      # 10 FeTS-size updates
    python benchmarks/aggregation.py --base-filters 6 --updates 4   # smoke test, seconds
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.federation.rounds.aggregation import difference_norm, n_bytes, weighted_average
from fedseg.federation.rounds.spool import Spool
from fedseg.model.config import NetworkConfig
from fedseg.model.registry import new_network
from fedseg.model.weights import Weights, get_weights


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def make_update(global_w: Weights, i: int, noise: float) -> Weights:
    """The global model plus seeded noise on its floating arrays (one site's reply)."""
    rng = np.random.default_rng(i)
    return {k: (v + noise * rng.standard_normal(v.shape, dtype=np.float32)).astype(v.dtype)
            if v.dtype.kind == "f" else v.copy() for k, v in global_w.items()}  # fmt: skip


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_mode(global_w: Weights, n: int, noise: float, spool: Spool | None) -> dict[str, float]:
    """One aggregation, streaming (``spool``) or batch: times and memory."""
    cases = [float(1 + (7 * i) % 9) for i in range(n)]
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    rss0 = rss_peak_bytes()
    held: list[Mapping[str, np.ndarray]] = []
    t_make = t_norm = t_park = 0.0
    for i in range(n):
        upd, dt = timed(lambda i=i: make_update(global_w, i, noise))
        t_make += dt
        _, dt = timed(lambda upd=upd: difference_norm(upd, global_w))  # type: ignore[arg-type]
        t_norm += dt
        if spool is not None:
            parked, dt = timed(lambda upd=upd: spool.park(upd))  # type: ignore[arg-type]
            t_park += dt
            held.append(parked)  # type: ignore[arg-type]
        else:
            held.append(upd)  # type: ignore[arg-type]
        del upd
    t0 = time.perf_counter()
    new = weighted_average(held, cases)
    t_fold = time.perf_counter() - t0
    for u in held:
        difference_norm(u, new)
    t_dist = time.perf_counter() - t0 - t_fold
    peak = tracemalloc.get_traced_memory()[1] - base
    rss = max(0, rss_peak_bytes() - rss0)
    return {"make": t_make, "norm": t_norm, "park": t_park, "fold": t_fold, "dist": t_dist,
            "peak": peak, "rss": rss}  # fmt: skip


def memcpy_s(model_bytes: int, n: int) -> float:
    """Seconds to copy ``n`` models' bytes once (numpy copy into a preallocated buffer)."""
    src = np.ones(model_bytes // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages first
    t0 = time.perf_counter()
    for _ in range(n):
        np.copyto(dst, src)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--base-filters", type=int, default=NetworkConfig().base_filters,
                    help="network width (parameters ~ its square); default: FeTS's")  # fmt: skip
    ap.add_argument("--noise", type=float, default=1e-3)
    ap.add_argument("--work", type=Path, default=None, help="spool folder (default: tmp)")
    args = ap.parse_args()
    console = Console(width=150)
    net_cfg = NetworkConfig(base_filters=args.base_filters)
    global_w = get_weights(new_network(net_cfg, None, 0))
    model = n_bytes(global_w)
    n_params = sum(v.size for v in global_w.values() if v.dtype.kind == "f")
    work = args.work or Path(tempfile.mkdtemp(prefix="fedseg-aggregation-"))
    console.print(f"{args.updates} updates of {n_params / 1e6:.1f} M parameters "
                  f"({model / 1e6:.0f} MB each); spool in {work}")  # fmt: skip
    tracemalloc.start()
    try:
        spool = Spool(work / "spool" / "round_0001")
        streaming = run_mode(global_w, args.updates, args.noise, spool)
        spool.remove()
        batch = run_mode(global_w, args.updates, args.noise, None)
    finally:
        tracemalloc.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    copy = memcpy_s(model, args.updates)
    table = Table(title=f"aggregation of {args.updates} updates x {model / 1e6:.0f} MB "
                  f"(memcpy of the same bytes: {copy:.2f} s)")  # fmt: skip
    for col in ("way", "norms s", "park s", "fold s", "fold / memcpy", "distances s",
                "peak numpy / model", "peak RSS growth / model"):  # fmt: skip
        table.add_column(col)
    for name, r in (("streaming (spool)", streaming), ("batch (in memory)", batch)):
        table.add_row(name, f"{r['norm']:.2f}", f"{r['park']:.2f}", f"{r['fold']:.2f}",
                      f"{r['fold'] / copy:.1f}x", f"{r['dist']:.2f}", f"{r['peak'] / model:.2f}",
                      f"{r['rss'] / model:.2f}")  # fmt: skip
        console.print(f"{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in r.items()))
    console.print(table)


if __name__ == "__main__":
    main()
