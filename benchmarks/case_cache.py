"""Case-cache benchmark: a site's training cases prepared without the cache, cold and warm.

    python benchmarks/case_cache.py                          # 4 BraTS-size cases (240x240x155)
    python benchmarks/case_cache.py --synth 4 --cases 4      # the tests' tiny data (4 mm)
    python benchmarks/case_cache.py --synth 2 --train        # 2 mm synthetic anatomy + training
    python benchmarks/case_cache.py --data SITE --train      # a real site folder (see below)

Three modes, each in a fresh process (a site's app process is new for every message), in
this order on one data folder: ``memory`` (today's preparation in memory, no disk cache),
``cold`` (an empty cache: prepare and write every entry), ``warm`` (a second process on the
same folder: open the entries). Printed side by side: ``CaseStore`` build seconds, the
seconds to read every case as validation reads it (``val_read_s``: ``load_case``, or the
cached volumes), the cache's size on disk and the process's peak resident MB (each case
is cached for training and for validation here); with ``--train``, instead of the
bare build, one ``train_local`` call (one epoch of the CPU recipe's network and patches,
``--workers`` loader workers) in each mode: wall seconds, the seconds it waited for
batches, computed, and the rest (building the store and the network).

The warm mode reads entries the cold mode has just written, so they are in the OS page
cache; as root, ``--drop-caches`` empties it before the warm run (a site's first round
after a reboot). Synthetic cases are written to a temporary folder; ``--data`` uses a
site folder as it is and removes its case cache before the cold run.
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

import torch

from fedseg.data.cases import Case, discover_cases, load_case
from fedseg.data.synth import SynthConfig, generate_dataset
from fedseg.train.case_cache import VolumeReader, cache_size, clear_cache
from fedseg.train.config import RecipeConfig
from fedseg.train.loader import CaseStore
from fedseg.train.local import train_local

MODES = ("memory", "cold", "warm")


def run_mode(root: Path, mode: str, train_epochs: int, workers: int) -> dict:
    """One mode in this process: build the store (and train), measured."""
    cases: list[Case] = discover_cases(root)
    recipe = RecipeConfig.cpu()
    train = recipe.train.model_copy(update={"num_workers": workers})
    disk = mode != "memory"
    row: dict = {"mode": mode, "cases": len(cases)}
    if train_epochs:  # the store is built inside train_local, as at a site
        res = train_local(recipe.network, train, None, None, cases, train_epochs, seed=0,
                          case_cache=disk)  # fmt: skip
        row["train_local_s"] = round(res.wall_s, 3)
        row["data_wait_s"] = round(res.data_wait_s, 3)
        row["compute_s"] = round(res.compute_s, 3)
        row["rest_s"] = round(res.wall_s - res.data_wait_s - res.compute_s, 3)
    else:
        t0 = time.perf_counter()
        store = CaseStore(cases, train.patch_size, train.cache_mb, disk=disk)
        row["prepare_s"] = round(time.perf_counter() - t0, 3)
        row["ready"] = store.cached
        read = VolumeReader() if disk else load_case
        t0 = time.perf_counter()
        for case in cases:
            read(case)
        row["val_read_s"] = round(time.perf_counter() - t0, 3)
    entries, size = cache_size(root)
    row["cache_entries"] = entries
    row["cache_MB"] = round(size / 2**20, 1)
    row["peak_rss_MB"] = round(peak_rss_mb(), 1)
    return row


def peak_rss_mb() -> float:
    """This process's peak resident MB: VmHWM (ru_maxrss would count the parent's pages,
    which a child forked from the process that wrote the cases starts with)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_site(out: Path, args: argparse.Namespace) -> Path:
    if args.synth:
        generate_dataset(out, SynthConfig(sites=1, cases_per_site=args.cases, spacing=args.synth))
        return out / "site1"
    sys.path.insert(0, str(Path(__file__).parent))
    from train_step import write_cases  # BraTS-size ellipsoid cases (the step benchmark's)

    write_cases(out / "site", args.cases, tuple(args.shape))
    return out / "site"


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"(could not drop the page cache: {exc.strerror})", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=4, help="synthetic cases to write")
    ap.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155], help="simple cases")
    ap.add_argument("--synth", type=float, default=None, help="synthetic anatomy at this mm")
    ap.add_argument("--data", type=Path, default=None, help="an existing site folder")
    ap.add_argument("--train", type=int, nargs="?", const=1, default=0, help="epochs to train")
    ap.add_argument("--workers", type=int, default=0, help="loader workers when training")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache (root)")
    ap.add_argument("--child", nargs=2, metavar=("ROOT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_mode(Path(args.child[0]), args.child[1], args.train, args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = args.data if args.data is not None else write_site(Path(tmp), args)
        print(f"data: {root} ({time.perf_counter() - t0:.1f} s to write)", flush=True)
        clear_cache(root)
        rows = []
        for mode in MODES:
            if mode == "warm" and args.drop_caches:
                drop_page_cache()
            cmd = [sys.executable, __file__, "--child", str(root), mode,
                   "--train", str(args.train), "--workers", str(args.workers),
                   "--threads", str(args.threads)]  # fmt: skip
            res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if res.returncode != 0:
                print(f"{mode}: failed (exit {res.returncode})")
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
        by = {r["mode"]: r for r in rows}
        if {"memory", "cold", "warm"} <= by.keys():
            key = "train_local_s" if args.train else "prepare_s"
            m, c, w = (by[k][key] for k in MODES)
            print(f"{key}: memory {m} cold {c} warm {w}; warm is {m / max(w, 1e-9):.1f}x faster "
                  f"than memory, cold costs {c / max(m, 1e-9):.2f}x memory")  # fmt: skip


if __name__ == "__main__":
    main()
