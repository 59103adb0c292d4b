"""Torch CPU threads when several fedseg processes share a machine: one per core each vs one.

``P`` processes start at once; each trains the demo network (8 filters, depth 2) for
``--steps`` Adam steps on a 2x4x16^3 batch and runs ``--infer`` forward passes of a
4x4x32^3 batch, with ``T`` torch threads. Printed per thread setting: the slowest process's
wall time and the mean CPU time per process (user + system, from ``getrusage``), and the
ratio of the two settings measured side by side in this run. This is why the test suite
(three xdist workers on two cores) sets ``OMP_NUM_THREADS=1`` and why ``fedseg simulate``
gives each site process one thread.

    python benchmarks/threads.py [--procs 3] [--steps 30] [--infer 10] [--threads 2,1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

SRC = Path(__file__).resolve().parents[1] / "src"

WORK = """
import json, resource, sys, time
import torch
from fedseg.model.config import NetworkConfig
from fedseg.model.registry import build_network
steps, infer = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
net = build_network(NetworkConfig(base_filters=8, depth=2))
opt = torch.optim.Adam(net.parameters(), 1e-3)
x = torch.randn(2, 4, 16, 16, 16)
t = time.perf_counter()
for _ in range(steps):
    loss = net(x).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
with torch.inference_mode():
    for _ in range(infer):
        net(torch.randn(4, 4, 32, 32, 32))
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t, "cpu": r.ru_utime + r.ru_stime,
                  "threads": torch.get_num_threads()}))
"""


def run_together(procs: int, threads: int, steps: int, infer: int) -> list[dict[str, float]]:
    """Start ``procs`` processes at once with ``threads`` torch threads; their results."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}  # fmt: skip
    cmd = [sys.executable, "-c", WORK, str(steps), str(infer)]
    running = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(procs)]  # fmt: skip
    out = []
    for p in running:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a worker failed (exit {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--infer", type=int, default=10)
    ap.add_argument("--threads", default=f"{os.cpu_count() or 1},1",
                    help="thread settings to compare, e.g. 2,1")  # fmt: skip
    args = ap.parse_args()
    settings = [int(t) for t in args.threads.split(",")]
    console = Console()
    console.print(f"{args.procs} processes at once on {os.cpu_count()} cores; "
                  f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    results = {}
    for t in settings:
        with console.status(f"{args.procs} processes x {t} thread(s)"):
            results[t] = run_together(args.procs, t, args.steps, args.infer)
    table = Table("threads per process", "slowest wall s", "mean CPU-s per process",
                  f"wall / {settings[-1]} thread(s)")  # fmt: skip
    base = max(r["wall"] for r in results[settings[-1]])
    for t, rs in results.items():
        wall = max(r["wall"] for r in rs)
        cpu = sum(r["cpu"] for r in rs) / len(rs)
        table.add_row(str(t), f"{wall:.1f}", f"{cpu:.1f}", f"{wall / base:.1f}x")
    console.print(table)


if __name__ == "__main__":
    main()
