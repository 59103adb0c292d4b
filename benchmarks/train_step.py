"""Training-step benchmark: step time, voxels/s, peak memory and the loader's share, per
device, precision and memory format, side by side from one invocation.

    python benchmarks/train_step.py                 # CPU preset, then the full FeTS recipe
    python benchmarks/train_step.py --recipe cpu --steps 20 --workers 2 --threads 1
    python benchmarks/train_step.py --recipe fets --patch 64   # FeTS network, smaller patch
    python benchmarks/train_step.py --recipe fets --precisions fp32,bf16 --layouts contiguous
    python benchmarks/train_step.py --compile       # adds torch.compile rows (slow to compile)
    python benchmarks/train_step.py --loss-check 40 # fp32 vs bf16 loss curves (CPU preset)

Rows: for each recipe, each device present (cpu; cuda when ``torch.cuda.is_available()``,
or ``--devices``), each precision (fp32, bf16; fp16 on CUDA only) and memory layout
(contiguous, channels-last 3D), eager and, with ``--compile``, compiled. Every row trains
a fresh network (seed 0) with a fresh Adam on the same batches through the training code
itself (``train.local.place_for_training`` and ``train_step``); the first step (worker
start-up, allocator warm-up, compilation) is reported apart from the steady steps, whose
mean is ``step_s`` (loader wait + compute). ``vs_fp32`` is a row's ``step_s`` over the
fp32 eager contiguous row of the same recipe and device (below 1: faster).

Processes and memory: each recipe runs in its own child process, so its peak memory is its
own; the rows of one recipe share that process and its cases (synthetic cases written as
real NIfTI files: 48^3 volumes for the CPU preset, BraTS-sized 240x240x155 for FeTS).
Per row, host memory is sampled from ``/proc/self/statm`` every 5 ms by a thread
(``rss_GiB``: the highest sample, the process's base included; freed memory is handed back
with ``malloc_trim`` between rows, so a row does not inherit its predecessor's peak, but a
spike shorter than the sampling interval can be missed); device memory is
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (``dev_GiB``: tensors
only, not the caching allocator's reserve). Loader workers are processes of their own:
``worker_rss_GiB`` is the largest child's lifetime peak (``RUSAGE_CHILDREN``) over all
rows, torch.compile's compiler processes included when ``--compile`` is on.

``--loss-check N``: N steps of the CPU preset, same seed and batches, in fp32 and bf16
(plus fp32 from another seed, the noise scale), both curves and their largest difference.
Each step's times are printed to stderr as they come (a full FeTS step takes minutes on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fedseg.data.cases import Case, discover_cases, write_case
from fedseg.model.compute import ComputeConfig, describe_device
from fedseg.model.config import NetworkConfig
from fedseg.model.registry import new_network
from fedseg.model.resunet import count_parameters
from fedseg.train.config import RecipeConfig, TrainConfig
from fedseg.train.loader import CaseStore, PatchDataset, make_loader
from fedseg.train.local import epoch_seed, new_optimizer, place_for_training, train_step

SHAPES = {"cpu": (48, 48, 48), "fets": (240, 240, 155)}
LAYOUTS = ("contiguous", "channels_last")
COLUMNS = ("device", "precision", "layout", "compiled", "step_s", "first_step_s",
           "voxels_per_s", "rss_GiB", "dev_GiB", "wait_share", "vs_fp32")  # fmt: skip


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


def bench_train(
    name: str, workers: int | None, patch: int | None, batch: int = 1
) -> tuple[RecipeConfig, TrainConfig]:
    recipe = recipe_for(name)
    train = recipe.train.model_copy(update={"patches_per_case": 1, "batch_size": batch})
    if patch:
        train = train.model_copy(update={"patch_size": (patch,) * 3})
    if workers is not None:
        train = train.model_copy(update={"num_workers": workers})
    return recipe, train


class RssSampler:
    """The highest resident set size of this process seen while running (a thread reading
    ``/proc/self/statm``; falls back to the lifetime ``ru_maxrss`` where there is no /proc)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s, self.peak = interval_s, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def release_memory(device: torch.device) -> None:
    """Hand freed memory back (Python objects, glibc's heap, CUDA's cache) between rows."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_row(
    recipe: RecipeConfig, train: TrainConfig, store: CaseStore, compute: ComputeConfig
) -> dict:
    """Train a fresh network (seed 0) on the benchmark's batches with ``compute``."""
    net = new_network(recipe.network, None, seed=0)
    setup = place_for_training(net, compute)
    device = setup.device
    release_memory(device)
    opt = new_optimizer(net, train)
    net.train()
    waits: list[float] = []
    computes: list[float] = []
    tag = f"{device} {compute.precision} {'cl' if compute.channels_last else 'contig'}"
    tag += " compiled" if compute.compile else ""
    dataset = PatchDataset(store, train, seed=0, epoch=0)
    loader = make_loader(dataset, pin_memory=device.type == "cuda")
    with RssSampler() as rss, torch.random.fork_rng(devices=[]):
        torch.manual_seed(epoch_seed(0, 0))
        it = iter(loader)
        while True:
            a = time.perf_counter()
            batch = next(it, None)
            b = time.perf_counter()
            if batch is None:
                break
            float(train_step(net, opt, batch, setup))  # reading the loss waits for the device
            waits.append(b - a)
            computes.append(time.perf_counter() - b)
            print(f"{tag} step {len(computes)}: wait {waits[-1]:.3f} s "
                  f"compute {computes[-1]:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    steady = slice(1, None) if len(computes) > 1 else slice(0, None)
    step = float(np.mean(computes[steady]) + np.mean(waits[steady]))
    voxels = train.batch_size * int(np.prod(train.patch_size))
    dev = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    row = {
        "device": describe_device(device),
        "precision": compute.precision,
        "layout": "channels_last" if compute.channels_last else "contiguous",
        "compiled": compute.compile,
        "steps": len(computes),
        "first_step_s": round(computes[0] + waits[0], 3),
        "step_s": round(step, 4),
        "compute_s_per_step": round(float(np.mean(computes[steady])), 4),
        "loader_wait_s_per_step": round(float(np.mean(waits[steady])), 4),
        "wait_share": round(float(np.sum(waits[steady]) / (step * len(waits[steady]))), 4),
        "voxels_per_s": round(voxels / step),
        "rss_GiB": round(rss.peak / 2**30, 3),
        "dev_GiB": None if dev is None else round(dev, 3),
    }
    del net, opt, setup
    release_memory(device)
    return row


def present_devices(wanted: list[str] | None) -> list[str]:
    have = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [d for d in (wanted or have) if d in have]


def row_configs(devices: list[str], precisions: list[str], layouts: list[str], compile_: bool):
    for device in devices:
        for precision in precisions:
            if precision == "fp16" and device == "cpu":
                continue  # fp16 autocast on a CPU is emulated: a CUDA row only
            for layout in layouts:
                for compiled in (False, True) if compile_ else (False,):
                    yield ComputeConfig(
                        device=device, precision=precision,  # type: ignore[arg-type]
                        channels_last=layout == "channels_last", compile=compiled,
                    )  # fmt: skip


def run_recipe(name: str, args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (12 if name == "cpu" else 2)
    recipe, train = bench_train(name, args.workers, args.patch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cases = write_cases(Path(tmp), steps, SHAPES[name])
        store = CaseStore(cases, train.patch_size, train.cache_mb)
        prep_s = time.perf_counter() - t0
        for compute in row_configs(
            present_devices(args.devices), args.precisions, args.layouts, args.compile
        ):
            try:
                rows.append(run_row(recipe, train, store, compute))
            except Exception as exc:  # a row the machine cannot run (e.g. no bf16 kernels)
                rows.append({"device": compute.device, "precision": compute.precision,
                             "layout": "channels_last" if compute.channels_last else "contiguous",
                             "compiled": compute.compile,
                             "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})  # fmt: skip
    for row in rows:  # ratio to the fp32 eager contiguous row of the same device
        base = next((r for r in rows if r["device"] == row["device"] and r["precision"] == "fp32"
                     and r["layout"] == "contiguous" and not r["compiled"] and "step_s" in r),
                    None)  # fmt: skip
        if base is not None and "step_s" in row:
            row["vs_fp32"] = round(row["step_s"] / base["step_s"], 3)
    meta = {
        "recipe": name,
        "params_M": round(count_parameters(new_network(recipe.network, None, 0)) / 1e6, 2),
        "patch": list(train.patch_size),
        "batch": train.batch_size,
        "workers": train.num_workers,
        "torch_threads": torch.get_num_threads(),
        "prepare_s": round(prep_s, 2),
        "process_peak_rss_GiB": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
        ),
        "worker_rss_GiB": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3),
    }
    return {"meta": meta, "rows": rows}


def print_table(result: dict) -> None:
    meta = result["meta"]
    print(" ".join(f"{k}={v}" for k, v in meta.items()))
    table = [[_cell(r.get(c, r.get("error", "") if c == "step_s" else "")) for c in COLUMNS]
             for r in result["rows"]]  # fmt: skip
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print(flush=True)


def _cell(v: object) -> str:
    return "-" if v is None else str(v)


def loss_check(n: int, threads: int | None) -> None:
    """N steps of the CPU preset in fp32 and bf16 on the same batches (seed 0), and fp32
    from seed 1 (another init and batch order) as the scale of run-to-run noise."""
    if threads:
        torch.set_num_threads(threads)
    recipe, train = bench_train("cpu", 0, None)
    curves: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = CaseStore(write_cases(Path(tmp), 8, SHAPES["cpu"]), train.patch_size, 4096)
        for label, precision, seed in (("fp32", "fp32", 0), ("bf16", "bf16", 0),
                                       ("fp32 seed 1", "fp32", 1)):  # fmt: skip
            net = new_network(recipe.network, None, seed=seed)
            setup = place_for_training(net, ComputeConfig(device="cpu", precision=precision))
            opt = new_optimizer(net, train)
            net.train()
            losses: list[float] = []
            epoch = 0
            while len(losses) < n:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(epoch_seed(seed, epoch))
                    for batch in make_loader(PatchDataset(store, train, seed, epoch)):
                        losses.append(float(train_step(net, opt, batch, setup)))
                        if len(losses) == n:
                            break
                epoch += 1
            curves[label] = losses
            print(f"{label}: " + " ".join(f"{x:.4f}" for x in losses), flush=True)
    a, b, c = (np.array(curves[k]) for k in ("fp32", "bf16", "fp32 seed 1"))
    print(f"max |bf16 - fp32| = {np.abs(b - a).max():.4f} (same seed and batches); "
          f"mean over the last {max(n // 4, 1)} steps: fp32 {a[-max(n // 4, 1):].mean():.4f} "
          f"bf16 {b[-max(n // 4, 1):].mean():.4f}; noise scale max |fp32 seed 1 - fp32 seed 0| = "
          f"{np.abs(c - a).max():.4f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", choices=["cpu", "fets", "both"], default="both")
    ap.add_argument("--steps", type=int, default=None, help="default: 12 (cpu), 2 (fets)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: recipe)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch)")
    ap.add_argument("--patch", type=int, default=None, help="cubic patch side (default: recipe)")
    ap.add_argument("--devices", type=lambda s: s.split(","), default=None,
                    help="cpu,cuda (default: those present)")  # fmt: skip
    ap.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "bf16", "fp16"],
                    help="default fp32,bf16,fp16 (fp16 on CUDA only)")  # fmt: skip
    ap.add_argument("--layouts", type=lambda s: s.split(","), default=list(LAYOUTS),
                    help="contiguous,channels_last (default: both)")  # fmt: skip
    ap.add_argument("--compile", action="store_true", help="add torch.compile rows (slow)")
    ap.add_argument("--loss-check", type=int, default=0, metavar="N",
                    help="only: N steps of the CPU preset, fp32 and bf16 loss curves")  # fmt: skip
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loss_check:
        loss_check(args.loss_check, args.threads)
        return
    if args.child:
        print(json.dumps(run_recipe(args.recipe, args)))
        return
    for name in ("cpu", "fets") if args.recipe == "both" else (args.recipe,):
        cmd = [sys.executable, __file__, "--child", "--recipe", name]
        for flag in ("steps", "workers", "threads", "patch"):
            if getattr(args, flag) is not None:
                cmd += [f"--{flag}", str(getattr(args, flag))]
        for flag in ("devices", "precisions", "layouts"):
            if getattr(args, flag):
                cmd += [f"--{flag}", ",".join(getattr(args, flag))]
        cmd += ["--compile"] if args.compile else []
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # steps go to stderr
        if res.returncode != 0:
            print(f"{name}: failed (exit {res.returncode})")
            continue
        print_table(json.loads(res.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
