"""Helpers for the model tests: tiny networks, model files, label-encoding synthetic cases.

The synthetic images encode their own label so that an "oracle" numpy predictor can
recover it exactly after the crop and z-score of inference: channel T1 is 1 inside ET,
T1Gd 1 inside TC, T2 and FLAIR 1 inside WT, all 1 elsewhere in the brain box, plus 1
everywhere in the brain (so z-scored values are positive in the region, negative outside).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedseg.data.labels import labels_to_regions
from fedseg.model.config import NetworkConfig
from fedseg.model.model_file import ModelFile, save_model
from fedseg.model.registry import build_network
from fedseg.model.weights import get_weights

#: Non-trivial voxel-to-mm map: 2 mm voxels, x flipped, 3 mm slices, offset origin.
AFFINE = np.array([[-2.0, 0, 0, 90.0], [0, 2.0, 0, -110.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])
TINY = NetworkConfig(base_filters=4, depth=2)
TINY_ROI = (16, 16, 16)


def oracle_case(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image (4, X, Y, Z) float32, BraTS 2021 label (X, Y, Z) uint8) with zero margins; the
    image encodes the label for ``oracle_predictor`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    c = np.array(shape) // 2 + rng.integers(-2, 3, 3)
    grid = np.indices(shape)
    r = np.sqrt(sum((grid[i] - c[i]) ** 2 for i in range(3)))
    label[r < 7] = 2
    label[r < 4.5] = 1
    label[(r < 2.5) & (grid[0] >= c[0])] = 4
    regions = labels_to_regions(label).astype(np.float32)
    image = np.zeros((4, *shape), np.float32)
    image[0], image[1], image[2], image[3] = regions[0], regions[1], regions[2], regions[2]
    image += 1.0 + rng.normal(0, 1e-4, image.shape).astype(np.float32)
    # Zero planes around the "brain": inference crops them and must put them back.
    brain = np.zeros(shape, bool)
    brain[2:-2, 3:-1, 1:-2] = True
    image[:, ~brain] = 0
    label[~brain] = 0
    return image, label


def oracle_predictor(batch: np.ndarray) -> np.ndarray:
    """Reads the encoded regions back from z-scored channels T1, T1Gd, T2 (see module doc)."""
    return 1 / (1 + np.exp(-40 * batch[:, :3]))


def tiny_model(path: Path, *, roi: tuple[int, int, int] = TINY_ROI, seed: int = 0) -> Path:
    """Save a randomly initialised tiny residual U-Net as a model file."""
    torch.manual_seed(seed)
    net = build_network(TINY)
    return save_model(path, ModelFile(TINY, get_weights(net), roi, meta={"seed": seed}))
