"""Preprocessed cases, the seeded patch dataset and its loader, on real NIfTI cases."""

from __future__ import annotations

import numpy as np
import torch

from fedseg.data.cases import Case, load_case
from fedseg.data.labels import labels_to_regions
from fedseg.train.case_cache import prepare_case
from fedseg.train.config import TrainConfig
from fedseg.train.loader import CaseStore, EpochLoader, PatchDataset, epoch_order, make_loader


def test_prepare_case_crops_normalizes_and_converts_labels(site: list[Case]) -> None:
    prepared = prepare_case(site[0], (16, 16, 16))
    vol = load_case(site[0])
    assert prepared.image.shape[1:] == prepared.regions.shape[1:]
    assert prepared.image.shape[1:] < vol.image.shape[1:]  # zero planes cropped
    brain = prepared.image[0] != 0
    assert abs(float(prepared.image[0][brain].mean())) < 1e-3
    assert abs(float(prepared.image[0][brain].std()) - 1) < 1e-3
    assert prepared.regions.sum() == labels_to_regions(vol.label).sum()
    assert prepared.tumor.size == prepared.regions[2].sum()


def test_small_volumes_are_padded_to_the_patch(site: list[Case]) -> None:
    prepared = prepare_case(site[0], (48, 48, 48))
    assert prepared.image.shape == (4, 48, 48, 48)
    assert prepared.regions.shape == (3, 48, 48, 48)


def test_case_store_respects_its_memory_bound(site: list[Case]) -> None:
    """Without the disk cache (``disk=False``, or a cache that cannot be written)."""
    full = CaseStore(site, (16, 16, 16), cache_mb=64, disk=False)
    one = prepare_case(site[0], (16, 16, 16)).nbytes
    assert full.cached == len(site)
    assert CaseStore(site, (16, 16, 16), cache_mb=0, disk=False).cached == 0
    budget_mb = 2.5 * one / 2**20
    assert CaseStore(site, (16, 16, 16), cache_mb=max(1, int(budget_mb)), disk=False).cached <= 3
    np.testing.assert_array_equal(
        CaseStore(site, (16, 16, 16), cache_mb=0, disk=False).get(2).image, full.get(2).image
    )


def test_epoch_order_visits_each_case_per_case_times() -> None:
    order = epoch_order(5, 3, seed=0, epoch=2)
    assert sorted(order.tolist()) == sorted(list(range(5)) * 3)
    assert not np.array_equal(order, epoch_order(5, 3, seed=0, epoch=3))
    np.testing.assert_array_equal(order, epoch_order(5, 3, seed=0, epoch=2))


def _batches(store: CaseStore, train: TrainConfig, seed: int, epoch: int) -> list[torch.Tensor]:
    out = []
    for b in make_loader(PatchDataset(store, train, seed, epoch)):
        out += [b["image"], b["target"]]
    return out


def test_loader_is_deterministic_and_independent_of_workers(
    site: list[Case], tiny_train: TrainConfig
) -> None:
    store = CaseStore(site, tiny_train.patch_size, tiny_train.cache_mb)
    a = _batches(store, tiny_train, seed=3, epoch=1)
    b = _batches(store, tiny_train.model_copy(update={"num_workers": 2}), seed=3, epoch=1)
    other_epoch = _batches(store, tiny_train, seed=3, epoch=2)
    other_seed = _batches(store, tiny_train, seed=4, epoch=1)
    assert len(a) == 2 * 5 and a[0].shape == (2, 4, 16, 16, 16) and a[1].shape == (2, 3, 16, 16, 16)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not all(torch.equal(x, y) for x, y in zip(a, other_epoch, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, other_seed, strict=True))


def test_persistent_workers_give_each_epochs_batches(
    site: list[Case], tiny_train: TrainConfig
) -> None:
    """One loader whose two workers persist across epochs gives, epoch by epoch, the batches
    of a fresh in-process loader per epoch."""
    store = CaseStore(site, tiny_train.patch_size, tiny_train.cache_mb)
    two = tiny_train.model_copy(update={"num_workers": 2})
    pids = set()
    with EpochLoader(store, two, seed=3) as data:
        for epoch in (1, 2, 0):
            got = [t for b in data.epoch(epoch) for t in (b["image"], b["target"])]
            want = _batches(store, tiny_train, seed=3, epoch=epoch)
            assert len(got) == len(want)
            for x, y in zip(got, want, strict=True):
                torch.testing.assert_close(x, y, rtol=0, atol=0)
            pids |= {w.pid for w in data.loader._iterator._workers}  # type: ignore[union-attr]
        workers = data.loader._iterator._workers  # type: ignore[union-attr]
    assert len(pids) == 2  # forked once, for all three epochs
    assert not any(w.is_alive() for w in workers)  # stopped on exit


def test_tumor_sampler_patches_contain_tumor(site: list[Case], tiny_train: TrainConfig) -> None:
    store = CaseStore(site, tiny_train.patch_size, tiny_train.cache_mb)
    biased = tiny_train.model_copy(update={"tumor_p": 1.0, "patches_per_case": 4})
    ds = PatchDataset(store, biased, seed=0, epoch=0)
    assert all(ds[i]["target"][2].sum() > 0 for i in range(len(ds)))
