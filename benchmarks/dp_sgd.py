"""DP-SGD against the plain training step: step time and peak memory, side by side.

    python benchmarks/dp_sgd.py                               # tiny and FeTS width at 32^3
    python benchmarks/dp_sgd.py --nets tiny --steps 2         # smoke test, seconds
    python benchmarks/dp_sgd.py --nets fets --patch 64 --batches 1,2 --device cuda

Networks: ``tiny`` (ResUNet base 4, depth 2, 16^3 patches: the tests' network) and ``fets``
(the FeTS width, base 30, depth 4: 30.2 M parameters, at ``--patch``, default 32^3, the
size the design study measured). For each network and batch size B (cases per step, all
in one physical batch), two modes on the same random batches, fp32:

- ``plain``: ``train.local.train_step`` (forward, mirrored Dice, backward, Adam);
- ``dp``: ``train.dp.DpSgd`` (Opacus per-case gradients: hooks, functorch for the
  transposed convolutions; per-case clip, noise, Adam): ``accumulate`` then ``step``.

Each (network, B, mode) runs in a child process of its own so its peak memory is its own:
``peak_MiB`` is the peak RSS growth over the process after the network was built (CPU), or
``torch.cuda.max_memory_allocated`` (CUDA). ``step_s`` is the mean over ``--steps`` steps
after a first, untimed one. The table puts ``dp / plain`` ratios beside each pair.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.model.compute import ComputeConfig
from fedseg.model.config import NetworkConfig
from fedseg.model.registry import new_network
from fedseg.model.resunet import count_parameters
from fedseg.train.config import TrainConfig
from fedseg.train.local import new_optimizer, place_for_training, train_step

NETS = {
    "tiny": (NetworkConfig(base_filters=4, depth=2), 16),
    "fets": (NetworkConfig(), None),  # patch from --patch
}


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(net_name: str, patch: int, batch: int, mode: str, steps: int, device: str) -> dict:
    """One (network, batch, mode) row, in this process."""
    cfg, fixed = NETS[net_name]
    side = fixed or patch
    train = TrainConfig.cpu(patch_size=(side,) * 3, val_roi=(side,) * 3,
                            compute=ComputeConfig(device=device))  # fmt: skip
    net = new_network(cfg, None, seed=0)
    g = torch.Generator().manual_seed(0)
    batches = [
        {"image": torch.randn(batch, 4, side, side, side, generator=g),
         "target": (torch.rand(batch, 3, side, side, side, generator=g) > 0.7).float()}
        for _ in range(2)
    ]  # fmt: skip
    cuda = device.startswith("cuda")
    if mode == "dp":
        from fedseg.train.dp import CaseDp, DpSgd, dp_network

        dp_network(net)
    setup = place_for_training(net, train.compute)
    opt = new_optimizer(net, train)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_peak_mib()
    if mode == "dp":
        sgd = DpSgd(net, opt, CaseDp(1.0, 1.0, 0.5), 2 * batch, setup.device)

        def step(b: dict[str, torch.Tensor]) -> None:
            sgd.accumulate(b["image"].to(setup.device), b["target"].to(setup.device))
            sgd.step()
    else:

        def step(b: dict[str, torch.Tensor]) -> None:
            train_step(net, opt, b, setup)

    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        step(batches[i % 2])
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_peak_mib() - base
    return {"net": net_name, "patch": side, "params": count_parameters(net), "batch": batch,
            "mode": mode, "step_s": sum(times) / len(times), "peak_MiB": peak}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="tiny,fets", help="tiny, fets (comma-separated)")
    ap.add_argument("--patch", type=int, default=32, help="patch side of the fets rows")
    ap.add_argument("--batches", default="1,2", help="cases per step (comma-separated)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per row")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child: net,batch,mode
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        net, batch, mode = args.one.split(",")
        print(json.dumps(one(net, args.patch, int(batch), mode, args.steps, args.device)))
        return
    rows = []
    for net in args.nets.split(","):
        for batch in map(int, args.batches.split(",")):
            pair = {}
            for mode in ("plain", "dp"):
                cmd = [sys.executable, __file__, "--one", f"{net},{batch},{mode}",
                       "--patch", str(args.patch), "--steps", str(args.steps),
                       "--threads", str(args.threads), "--device", args.device]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                pair[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(pair)
            print(json.dumps(pair), file=sys.stderr, flush=True)
    table = Table(title=f"DP-SGD vs plain step, fp32, {args.device}, {args.threads} thread(s)")
    for col in ("net", "patch", "params", "B", "plain s", "dp s", "time x",
                "plain MiB", "dp MiB", "memory x"):  # fmt: skip
        table.add_column(col, justify="right")
    for pair in rows:
        p, d = pair["plain"], pair["dp"]
        table.add_row(
            p["net"], f"{p['patch']}^3", f"{p['params']:,}", str(p["batch"]),
            f"{p['step_s']:.3f}", f"{d['step_s']:.3f}", f"{d['step_s'] / p['step_s']:.2f}",
            f"{p['peak_MiB']:.0f}", f"{d['peak_MiB']:.0f}",
            f"{d['peak_MiB'] / max(p['peak_MiB'], 1.0):.2f}",
        )  # fmt: skip
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
