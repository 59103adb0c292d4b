"""Warm-site benchmark: a site's data preparation per message, cold vs warm, side by side.

    python benchmarks/warm_site.py                        # 8 tiny cases (4 mm, 60x60x39)
    python benchmarks/warm_site.py --cases 4 --repeat 3   # a smoke run (seconds)
    python benchmarks/warm_site.py --sites 4              # four sites sharing one process
    python benchmarks/warm_site.py --data SITE            # an existing site folder

What a site's task does before it computes anything (``rounds.site.run_task``): its split,
its training cases' ``CaseStore`` (memory maps of the on-disk case cache, ``case_cache``)
and every validation case's volumes. Measured in one process, ``--repeat`` messages per
site each, the median per message:

* ``cold``: what a process that keeps nothing does for each message (the deployment
  engine's one process per message, from the second round on): ``load_split``, a new
  ``CaseStore`` (the on-disk entries exist: opened, not prepared), every validation case
  read through ``case_cache.VolumeReader``;
* ``warm``: a process that served the site before (``train.warm.SiteCache``): the key
  recomputed by ``stat`` (discovery, each case's ``source_key``, the split file), then the
  held split, store and volumes;
* ``first``, for scale: the site's very first message on an empty case cache (the
  entries prepared and written), once.

With ``--sites N`` the N sites are served in turn (round robin) by one process and one
cache with the default budget (``train.cache_mb``); the ratio is cold / warm.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fedseg.data.splits import load_split
from fedseg.data.synth import SynthConfig, generate_dataset
from fedseg.train.case_cache import VolumeReader, clear_cache
from fedseg.train.config import TrainConfig
from fedseg.train.loader import CaseStore
from fedseg.train.warm import SiteCache


def cold(root: Path, train: TrainConfig) -> None:
    """One message's data preparation when nothing stays in the process."""
    split = load_split(root)
    CaseStore(split.train, train.patch_size, train.cache_mb)
    read = VolumeReader()
    for case in split.val:
        read(case)


def warm_with(cache: SiteCache) -> Callable[[Path, TrainConfig], None]:
    def warm(root: Path, train: TrainConfig) -> None:
        """One message's data preparation through the process's warm cache."""
        site = cache.get(root)
        site.store(train)
        for case in site.split.val:
            site.read(case)

    return warm


def per_message_ms(
    roots: list[Path], train: TrainConfig, prepare: Callable[[Path, TrainConfig], None], n: int
) -> float:
    """Median milliseconds of one message, the sites served in turn ``n`` times each."""
    times = []
    for _ in range(n):
        for root in roots:
            t0 = time.perf_counter()
            prepare(root, train)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8, help="synthetic cases per site")
    ap.add_argument("--sites", type=int, default=1, help="synthetic sites sharing the process")
    ap.add_argument("--spacing", type=float, default=4.0, help="synthetic voxel size (mm)")
    ap.add_argument("--data", type=Path, default=None, help="an existing site folder")
    ap.add_argument("--repeat", type=int, default=20, help="messages per site and mode")
    args = ap.parse_args()
    train = TrainConfig.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is not None:
            roots = [args.data]
        else:
            cfg = SynthConfig(sites=args.sites, cases_per_site=args.cases, spacing=args.spacing)
            roots = [Path(tmp) / s for s in generate_dataset(Path(tmp), cfg)]
        for root in roots:
            clear_cache(root)
        t0 = time.perf_counter()
        cold(roots[0], train)
        first_ms = (time.perf_counter() - t0) * 1000
        for root in roots[1:]:
            cold(root, train)  # every site's entries on disk before timing
        cache = SiteCache()
        cold_ms = per_message_ms(roots, train, cold, args.repeat)
        warm_ms = per_message_ms(roots, train, warm_with(cache), args.repeat)
        split = load_split(roots[0])
        print(
            f"sites {len(roots)}, cases per site {len(split.train) + len(split.val)} "
            f"({len(split.train)} train, {len(split.val)} val), patch {train.patch_size}, "
            f"{args.repeat} messages per site and mode; cache builds {cache.builds}, "
            f"hits {cache.hits}"
        )
        print(f"{'first':>8} {'cold':>10} {'warm':>10} {'cold/warm':>10}   (ms per message)")
        print(f"{first_ms:8.1f} {cold_ms:10.2f} {warm_ms:10.2f} {cold_ms / warm_ms:10.1f}")


if __name__ == "__main__":
    main()
