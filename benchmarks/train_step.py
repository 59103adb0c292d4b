"""Training-step benchmark: step time, voxels/s, peak memory and the loader's share.

    python benchmarks/train_step.py                 # CPU preset, then the full FeTS recipe
    python benchmarks/train_step.py --recipe cpu --steps 20 --workers 2 --threads 1
    python benchmarks/train_step.py --recipe fets --patch 64   # FeTS network, smaller patch

Each recipe runs in its own process (so peak memory is its own) on synthetic cases written
as real NIfTI files: 48^3 volumes for the CPU preset, BraTS-sized 240x240x155 for FeTS.
One epoch of ``fit_epoch`` is timed: loader wait (blocked on the next batch) and compute
(forward + backward + Adam step) are measured side by side in the same run. The first
step (worker start-up, allocator warm-up) is reported apart from the steady state; each
step's times are also printed to stderr as they come (a full FeTS step takes minutes on CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedseg.data.cases import Case, discover_cases, write_case
from fedseg.model.config import NetworkConfig
from fedseg.model.losses import mirrored_dice_loss
from fedseg.model.registry import new_network
from fedseg.model.resunet import count_parameters
from fedseg.train.config import RecipeConfig
from fedseg.train.loader import CaseStore, PatchDataset, make_loader
from fedseg.train.local import new_optimizer

SHAPES = {"cpu": (48, 48, 48), "fets": (240, 240, 155)}


def recipe_for(name: str) -> RecipeConfig:
    if name == "cpu":
        return RecipeConfig.cpu()
    return RecipeConfig(network=NetworkConfig())  # the FeTS defaults


def write_cases(root: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> list[Case]:
    """``n`` cases: an ellipsoid brain with noise and a spherical tumour (labels 1, 2, 4)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    brain = (((grid - c) / (c * 0.8)) ** 2).sum(0) <= 1
    for i in range(n):
        t = c + rng.uniform(-0.2, 0.2, (3, 1, 1, 1)).astype(np.float32) * c
        d = np.sqrt(((grid - t) ** 2).sum(0))
        r = min(shape) * 0.1
        label = np.zeros(shape, np.uint8)
        label[(d < 1.6 * r) & brain] = 2
        label[d < r] = 4
        label[d < 0.5 * r] = 1
        image = np.stack(
            [np.where(brain, 100 + 30 * label + rng.normal(0, 10, shape), 0) for _ in range(4)]
        ).astype(np.float32)
        write_case(root, f"bench_{i:03d}", image, label, np.eye(4))
    return discover_cases(root)


def run_one(
    name: str, steps: int, workers: int | None, threads: int | None, patch: int | None
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    recipe = recipe_for(name)
    train = recipe.train.model_copy(update={"patches_per_case": 1, "batch_size": 1})
    if patch:
        train = train.model_copy(update={"patch_size": (patch,) * 3})
    if workers is not None:
        train = train.model_copy(update={"num_workers": workers})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cases = write_cases(Path(tmp), steps, SHAPES[name])
        store = CaseStore(cases, train.patch_size, train.cache_mb)
        prep_s = time.perf_counter() - t0
        net = new_network(recipe.network, None, seed=0)
        opt = new_optimizer(net, train)
        net.train()
        waits, computes = [], []
        it = iter(make_loader(PatchDataset(store, train, seed=0, epoch=0)))
        while True:
            a = time.perf_counter()
            batch = next(it, None)
            b = time.perf_counter()
            if batch is None:
                break
            opt.zero_grad(set_to_none=True)
            mirrored_dice_loss(net(batch["image"]), batch["target"]).backward()
            opt.step()
            waits.append(b - a)
            computes.append(time.perf_counter() - b)
            print(f"step {len(computes)}: wait {waits[-1]:.3f} s compute {computes[-1]:.2f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    steady = slice(1, None) if len(computes) > 1 else slice(0, None)
    step = float(np.mean(computes[steady]) + np.mean(waits[steady]))
    voxels = train.batch_size * int(np.prod(train.patch_size))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {
        "recipe": name,
        "params_M": round(count_parameters(net) / 1e6, 2),
        "patch": list(train.patch_size),
        "batch": train.batch_size,
        "workers": train.num_workers,
        "torch_threads": torch.get_num_threads(),
        "steps": len(computes),
        "prepare_s": round(prep_s, 2),
        "first_step_s": round(computes[0] + waits[0], 3),
        "step_s": round(step, 3),
        "compute_s_per_step": round(float(np.mean(computes[steady])), 3),
        "loader_wait_s_per_step": round(float(np.mean(waits[steady])), 4),
        "loader_wait_share": round(float(np.sum(waits[steady]) / (step * len(waits[steady]))), 4),
        "voxels_per_s": round(voxels / step),
        "peak_rss_GiB": round(peak, 2),
        "peak_rss_worker_GiB": round(peak_children, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", choices=["cpu", "fets", "both"], default="both")
    ap.add_argument("--steps", type=int, default=None, help="default: 12 (cpu), 2 (fets)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: recipe)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch)")
    ap.add_argument("--patch", type=int, default=None, help="cubic patch side (default: recipe)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        steps = args.steps or (12 if args.recipe == "cpu" else 2)
        row = run_one(args.recipe, steps, args.workers, args.threads, args.patch)
        print(json.dumps(row))
        return
    for name in ("cpu", "fets") if args.recipe == "both" else (args.recipe,):
        cmd = [sys.executable, __file__, "--child", "--recipe", name]
        for flag in ("steps", "workers", "threads", "patch"):
            if getattr(args, flag) is not None:
                cmd += [f"--{flag}", str(getattr(args, flag))]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # steps go to stderr
        if res.returncode != 0:
            print(f"{name}: failed (exit {res.returncode})")
            continue
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
