"""Training data: prepared cases, a seeded patch dataset and its DataLoader.

Determinism: the epoch's case order comes from ``(seed, epoch)`` and every sample's
patch position and augmentation from its own generator ``(seed, epoch, index)``, so the
same seed and epoch give the same batches whatever the number of loader workers, and
whether the workers persist across epochs (``EpochLoader``) or not.

Cases: ``CaseStore`` memory-maps each case from the site's case cache
(``train.case_cache``: ``<data>/.fedseg/cache/``), preparing and writing the entries
that are missing; the OS page cache holds what is read, and forked workers share it.
Where the cache cannot be written (a read-only data folder), it says so in one warning
line and keeps prepared cases in memory while their total stays under
``TrainConfig.cache_mb`` (a BraTS case is about 4 x 140^3 float32 = 45 MB cropped); the
others are prepared again at every use. Workers are forked after the store is built, so
they share its arrays instead of copying them.

A case of a site that declares a modality absent (``fedseg_site.yaml``) trains with that
channel all zero (``load_case``; z-scoring leaves it zero): the network still takes four
channels, and a site completed later (``.syn`` images) is prepared again from its files.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fedseg.data.cases import Case
from fedseg.errors import FedsegError
from fedseg.train.augment import augment
from fedseg.train.case_cache import (
    CacheNotWritable,
    PreparedCase,
    cached_case,
    case_root,
    prepare_case,
    writable_cache,
)
from fedseg.train.config import Shape3, TrainConfig
from fedseg.train.patches import extract, patch_corner

log = logging.getLogger(__name__)


class CaseStore:
    """The training cases of one site: memory-mapped from the case cache (``disk=True``),
    else (or where the cache cannot be written) prepared in memory up to ``cache_mb``."""

    def __init__(
        self, cases: Sequence[Case], patch_size: Shape3, cache_mb: int, *, disk: bool = True
    ) -> None:
        if not cases:
            raise FedsegError("no training cases: the site's training split is empty")
        self.cases = list(cases)
        self.patch_size = patch_size
        self._cache: dict[int, PreparedCase] = {}
        rest = self._from_disk() if disk else list(range(len(self.cases)))
        budget = cache_mb * 2**20
        # Two cases at a time on two threads (gzip and numpy release the GIL for most of
        # the work), stopping at the first case that does not fit in what is left.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for lo in range(0, len(rest) if budget else 0, 2):
                pair = rest[lo : lo + 2]
                for i, prepared in zip(pair, pool.map(self._prepare, pair), strict=True):
                    if prepared.nbytes > budget:
                        return
                    self._cache[i] = prepared
                    budget -= prepared.nbytes

    def _from_disk(self) -> list[int]:
        """Open (or prepare and write) the cache entry of every case whose data folder's
        cache can be written, two cases at a time; the indices of the other cases."""
        folders: dict[Path, Path] = {}
        for root in dict.fromkeys(r for c in self.cases if (r := case_root(c)) is not None):
            try:
                folders[root] = writable_cache(root)
            except CacheNotWritable as exc:
                log.warning("%s; cases prepared in memory at every training call instead", exc)
        todo = [i for i, c in enumerate(self.cases) if case_root(c) in folders]

        def one(i: int) -> tuple[int, PreparedCase | CacheNotWritable]:
            case, root = self.cases[i], case_root(self.cases[i])
            assert root is not None
            try:
                return i, cached_case(case, self.patch_size, folders[root])
            except CacheNotWritable as exc:
                return i, exc

        failed: list[tuple[int, CacheNotWritable]] = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for i, got in pool.map(one, todo):
                if isinstance(got, CacheNotWritable):
                    failed.append((i, got))
                else:
                    self._cache[i] = got
        if failed:
            log.warning("%s; %d case(s) prepared in memory instead", failed[0][1], len(failed))
        return [i for i in range(len(self.cases)) if i not in self._cache]

    def _prepare(self, i: int) -> PreparedCase:
        return prepare_case(self.cases[i], self.patch_size)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def cached(self) -> int:
        """Cases kept ready (memory-mapped or in memory); the others are prepared at each use."""
        return len(self._cache)

    def get(self, i: int) -> PreparedCase:
        return self._cache[i] if i in self._cache else self._prepare(i)

    def held(self) -> tuple[int, int]:
        """What the store holds: (bytes of prepared cases in memory, memory-mapped arrays).
        A memory-mapped array costs no memory of its own (its pages are the OS page
        cache's) but one open file."""
        arrays = [a for p in self._cache.values() for a in (p.image, p.regions, p.tumor)]
        mapped = sum(isinstance(a, np.memmap) for a in arrays)
        return sum(a.nbytes for a in arrays if not isinstance(a, np.memmap)), mapped


def epoch_order(n_cases: int, per_case: int, seed: int, epoch: int) -> np.ndarray:
    """Case index of each sample of ``epoch``: every case ``per_case`` times, shuffled."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(np.repeat(np.arange(n_cases), per_case))


class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """One epoch of patches: item i = (image (4, *patch) float32, target (3, *patch) float32).

    An item may also be asked for as ``(epoch, i)``: item i of another epoch (what the
    sampler of a loader whose workers persist across epochs asks for)."""

    def __init__(self, store: CaseStore, train: TrainConfig, seed: int, epoch: int) -> None:
        self.store, self.train, self.seed, self.epoch = store, train, seed, epoch
        self.order = epoch_order(len(store), train.patches_per_case, seed, epoch)
        self._orders = {epoch: self.order}

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(len(self.store), self.train.patches_per_case,
                                               self.seed, epoch)}  # fmt: skip
        rng = np.random.default_rng([self.seed, epoch, i])
        return case_patch(self.store, self.train, int(self._orders[epoch][i]), rng)


def case_patch(
    store: CaseStore, train: TrainConfig, index: int, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """One training patch of case ``index``: its position (``train.sampler``) and
    augmentation drawn from ``rng``; image (4, *patch) and target (3, *patch) float32."""
    case = store.get(index)
    size = train.patch_size
    tumor_p = train.tumor_p if train.sampler == "tumor" else 0.0
    corner = patch_corner(case.image.shape[1:], size, rng, tumor=case.tumor, tumor_p=tumor_p)
    image, regions = augment(
        extract(case.image, corner, size), extract(case.regions, corner, size),
        train.augment, rng,
    )  # fmt: skip
    return {
        "image": torch.from_numpy(image),
        "target": torch.from_numpy(regions.astype(np.float32)),
    }


class EpochSampler(Sampler[tuple[int, int]]):
    """The items of one epoch in order, as ``(epoch, i)``; set ``epoch`` before iterating."""

    def __init__(self, n: int, epoch: int) -> None:
        self.n, self.epoch = n, epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in range(self.n))

    def __len__(self) -> int:
        return self.n


def _worker_init(_: int) -> None:
    # Workers only slice and add noise; one thread each leaves the cores to the model.
    torch.set_num_threads(1)


def make_loader(
    dataset: PatchDataset,
    *,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
    persistent: bool = False,
) -> DataLoader[dict[str, torch.Tensor]]:
    """Batches in dataset order (the order is already seeded), from ``train.num_workers``
    forked workers that each prefetch ``prefetch_factor`` batches.

    ``pin_memory``: batches come in page-locked memory, for non-blocking copies to a GPU.
    ``persistent``: the workers outlive one pass; set ``loader.sampler.epoch`` to go on with
    another epoch of the same seed (``EpochLoader`` does).
    """
    workers = dataset.train.num_workers
    if multiprocessing.current_process().daemon:
        workers = 0  # a daemonic process (e.g. a pool worker) may not start children
    return DataLoader(
        dataset,
        batch_size=dataset.train.batch_size,
        sampler=EpochSampler(len(dataset), dataset.epoch),
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=prefetch_factor if workers else None,
        multiprocessing_context="fork" if workers else None,
        persistent_workers=persistent and workers > 0,
        pin_memory=pin_memory,
    )


class EpochLoader:
    """The batches of several epochs of one seed from one loader, whose workers are forked
    once and persist until ``close()`` (a context manager closes it on exit).

    ``epoch(e)`` gives the loader set to epoch ``e``: the same batches as
    ``make_loader(PatchDataset(store, train, seed, e))``.
    """

    def __init__(
        self, store: CaseStore, train: TrainConfig, seed: int, *, pin_memory: bool = False
    ) -> None:
        self.store, self.train, self.seed = store, train, seed
        self.loader = make_loader(
            PatchDataset(store, train, seed, epoch=0), pin_memory=pin_memory, persistent=True
        )

    def epoch(self, epoch: int) -> DataLoader[dict[str, torch.Tensor]]:
        sampler = self.loader.sampler
        assert isinstance(sampler, EpochSampler)
        sampler.epoch = epoch
        return self.loader

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        """Stop the persistent workers (if any were started)."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader._iterator = None

    def __enter__(self) -> EpochLoader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
