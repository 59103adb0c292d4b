"""Tiny real NIfTI sites with a synthetic tumour, and tiny recipes, for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.data.cases import Case, discover_cases, write_case
from fedseg.model.config import NetworkConfig
from fedseg.train.config import AugmentConfig, TrainConfig

SHAPE = (40, 40, 32)


def toy_brain_case(rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE):
    """(image (4, X, Y, Z) float32, BraTS-2021 label (X, Y, Z) uint8) of a toy brain.

    An ellipsoid brain on a zero background (so cropping has planes to remove) holding a
    spherical tumour: enhancing rim (4) around a necrotic core (1), inside an edema shell
    (2). Each modality shows the parts with a different contrast, plus noise.
    """
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    radii = np.array(shape, dtype=np.float32)[:, None, None, None] * 0.42
    brain = (((grid - centre) / radii) ** 2).sum(0) <= 1
    r = rng.uniform(4.0, 7.0)
    lo = np.array(shape) * 0.3 + r / 2
    hi = np.array(shape) * 0.7 - r / 2
    c = rng.uniform(lo, hi).astype(np.float32)[:, None, None, None]
    dist = np.sqrt(((grid - c) ** 2).sum(0))
    label = np.zeros(shape, np.uint8)
    label[(dist <= r + 3) & brain] = 2
    label[dist <= r] = 4
    label[dist <= r * 0.5] = 1
    # Mean intensity of background brain, ED, NCR, ET per modality (T1, T1Gd, T2, FLAIR).
    means = np.array(
        [[100, 80, 60, 90], [100, 90, 70, 200], [100, 160, 180, 140], [100, 190, 150, 160]],
        dtype=np.float32,
    )
    image = np.zeros((4, *shape), np.float32)
    for m in range(4):
        vol = np.full(shape, means[m, 0], np.float32)
        for j, value in enumerate((2, 1, 4), start=1):
            vol[label == value] = means[m, j]
        vol += rng.normal(0, 8, shape).astype(np.float32)
        image[m] = np.where(brain, np.maximum(vol, 1.0), 0.0)
    return image, label


def write_toy_site(
    root: Path, n: int, seed: int, shape: tuple[int, int, int] = SHAPE
) -> list[Case]:
    """Write ``n`` synthetic cases under ``root`` (BraTS 2021 layout) and discover them."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, label = toy_brain_case(rng, shape)
        write_case(root, f"case{seed:02d}_{i:03d}", image, label, np.eye(4))
    return discover_cases(root)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the test machine's two cores are shared, and oversubscribed
    OpenMP threads make tiny convolutions many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    """Five tiny labelled cases on disk."""
    return write_toy_site(tmp_path_factory.mktemp("site"), 5, seed=1)


@pytest.fixture
def tiny_net() -> NetworkConfig:
    return NetworkConfig(base_filters=4, depth=2)


@pytest.fixture
def tiny_train() -> TrainConfig:
    """16^3 patches, 2 per case, tumour-biased, full augmentation, loader in process."""
    return TrainConfig.cpu(
        patch_size=(16, 16, 16),
        val_roi=(16, 16, 16),
        patches_per_case=2,
        batch_size=2,
        augment=AugmentConfig(),
    )
