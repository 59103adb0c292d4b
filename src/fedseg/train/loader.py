"""Training data: preprocessed cases, a seeded patch dataset and its DataLoader.

Determinism: the epoch's case order comes from ``(seed, epoch)`` and every sample's
patch position and augmentation from its own generator ``(seed, epoch, index)``, so the
same seed and epoch give the same batches whatever the number of loader workers.

Memory: ``CaseStore`` keeps preprocessed cases in memory while their total stays under
``TrainConfig.cache_mb`` (a BraTS case is about 4 x 140^3 float32 = 45 MB cropped);
the others are read from disk again at every use. Workers are forked after the preload,
so they share the cached arrays instead of copying them.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fedseg.data.cases import Case, load_case
from fedseg.data.labels import labels_to_regions
from fedseg.data.preprocess import crop_and_normalize
from fedseg.errors import DataError, FedsegError
from fedseg.train.augment import augment
from fedseg.train.config import Shape3, TrainConfig
from fedseg.train.patches import extract, pad_to, patch_corner


@dataclass(frozen=True)
class PreparedCase:
    """A case ready for sampling: ``image`` (4, X, Y, Z) float32 cropped to the brain,
    z-scored and padded to at least the patch; ``regions`` (3, X, Y, Z) uint8 (ET, TC, WT);
    ``tumor`` flat indices (int64) of WT voxels, for tumor-biased sampling."""

    case_id: str
    image: np.ndarray
    regions: np.ndarray
    tumor: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.regions.nbytes + self.tumor.nbytes


def prepare_case(case: Case, patch_size: Shape3) -> PreparedCase:
    """Load, crop all-zero planes, z-score, pad to ``patch_size``, labels -> regions."""
    vol = load_case(case)
    if vol.label is None:
        raise DataError(f"case {case.case_id} has no label map; training needs labelled cases")
    image, box = crop_and_normalize(vol.image)
    regions = labels_to_regions(vol.label[box]).astype(np.uint8)
    image, regions = pad_to(image, patch_size), pad_to(regions, patch_size)
    tumor = np.flatnonzero(regions[2]).astype(np.int64)
    return PreparedCase(case.case_id, image, regions, tumor)


class CaseStore:
    """The training cases of one site, preloaded in memory up to ``cache_mb``."""

    def __init__(self, cases: Sequence[Case], patch_size: Shape3, cache_mb: int) -> None:
        if not cases:
            raise FedsegError("no training cases: the site's training split is empty")
        self.cases = list(cases)
        self.patch_size = patch_size
        self._cache: dict[int, PreparedCase] = {}
        budget = cache_mb * 2**20
        # Two cases at a time on two threads (gzip and numpy release the GIL for most of
        # the work), stopping at the first case that does not fit in what is left.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for lo in range(0, len(self.cases) if budget else 0, 2):
                pair = range(lo, min(lo + 2, len(self.cases)))
                for i, prepared in zip(pair, pool.map(self._prepare, pair), strict=True):
                    if prepared.nbytes > budget:
                        return
                    self._cache[i] = prepared
                    budget -= prepared.nbytes

    def _prepare(self, i: int) -> PreparedCase:
        return prepare_case(self.cases[i], self.patch_size)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def cached(self) -> int:
        return len(self._cache)

    def get(self, i: int) -> PreparedCase:
        return self._cache[i] if i in self._cache else self._prepare(i)


def epoch_order(n_cases: int, per_case: int, seed: int, epoch: int) -> np.ndarray:
    """Case index of each sample of ``epoch``: every case ``per_case`` times, shuffled."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(np.repeat(np.arange(n_cases), per_case))


class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """One epoch of patches: item i = (image (4, *patch) float32, target (3, *patch) float32)."""

    def __init__(self, store: CaseStore, train: TrainConfig, seed: int, epoch: int) -> None:
        self.store, self.train, self.seed, self.epoch = store, train, seed, epoch
        self.order = epoch_order(len(store), train.patches_per_case, seed, epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        case = self.store.get(int(self.order[i]))
        size = self.train.patch_size
        tumor_p = self.train.tumor_p if self.train.sampler == "tumor" else 0.0
        corner = patch_corner(case.image.shape[1:], size, rng, tumor=case.tumor, tumor_p=tumor_p)
        image, regions = augment(
            extract(case.image, corner, size), extract(case.regions, corner, size),
            self.train.augment, rng,
        )  # fmt: skip
        return {
            "image": torch.from_numpy(image),
            "target": torch.from_numpy(regions.astype(np.float32)),
        }


def _worker_init(_: int) -> None:
    # Workers only slice and add noise; one thread each leaves the cores to the model.
    torch.set_num_threads(1)


def make_loader(
    dataset: PatchDataset, *, pin_memory: bool = False
) -> DataLoader[dict[str, torch.Tensor]]:
    """Batches in dataset order (the order is already seeded); workers prefetch two batches.
    ``pin_memory``: batches in page-locked memory, for asynchronous copies to a GPU."""
    workers = dataset.train.num_workers
    if multiprocessing.current_process().daemon:
        workers = 0  # a daemonic process (e.g. a pool worker) may not start children
    return DataLoader(
        dataset,
        batch_size=dataset.train.batch_size,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        multiprocessing_context="fork" if workers else None,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
