"""Full-volume inference in numpy: sliding window over the brain, backend-agnostic.

A backend is a ``Predictor``: a function from a batch of patches (B, C_in, x, y, z)
float32 to per-region probabilities (B, C_out, x, y, z) float32 in [0, 1]. PyTorch and
exported (OpenVINO) models both provide one; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np

from fedseg.data.labels import regions_to_labels
from fedseg.data.preprocess import Box, crop_and_normalize, uncrop

Predictor = Callable[[np.ndarray], np.ndarray]


def tile_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start offsets of tiles of side ``roi`` covering ``size`` voxels with ``overlap``."""
    if size <= roi:
        return [0]
    step = max(1, int(roi * (1 - overlap)))
    n = int(np.ceil((size - roi) / step)) + 1
    return sorted({int(s) for s in np.rint(np.linspace(0, size - roi, n))})


def gaussian_weights(roi: tuple[int, int, int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian importance map (x, y, z), peak 1, floor 1e-3 (edges still count)."""
    axes = []
    for n in roi:
        c = (n - 1) / 2
        axes.append(np.exp(-0.5 * ((np.arange(n) - c) / (sigma_scale * n)) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


Tile = tuple[int, int, int]


def tile_plan(
    shape: tuple[int, ...], roi: Tile, overlap: float, divisor: int | None = None
) -> tuple[Tile, list[Tile]]:
    """Tile size and tile start offsets covering a volume of ``shape`` (x, y, z).

    ``divisor`` None: tiles are exactly ``roi`` (shorter axes are padded up to it).
    ``divisor`` d: per axis, as many tiles as ``roi`` would need, each shrunk to the smallest
    multiple of d (at most ``roi``) that still covers the axis with the requested overlap,
    so the network sees fewer padded or doubly-covered voxels for the same tile count.
    """
    tile = []
    for s, r in zip(shape, roi, strict=True):
        t = r
        if divisor is not None:
            n = len(tile_starts(s, r, overlap))
            need = s / (1 + (n - 1) * (1 - overlap))
            t = min(r, max(divisor, int(np.ceil(need / divisor)) * divisor))
        tile.append(t)
    axes = [tile_starts(max(s, t), t, overlap) for s, t in zip(shape, tile, strict=True)]
    return (tile[0], tile[1], tile[2]), list(product(*axes))


def sliding_window(
    image: np.ndarray,
    predictor: Predictor,
    roi: tuple[int, int, int],
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    out_channels: int = 3,
    divisor: int | None = None,
) -> np.ndarray:
    """Blend ``predictor`` over tiles of ``image`` (C, X, Y, Z) -> (out_channels, X, Y, Z).

    Tiles come from ``tile_plan`` (``divisor`` given: shrunk to fit the volume). Axes
    shorter than the tile are zero-padded to it (and cropped back after). Overlapping tiles
    are blended with Gaussian weights; a single tile is used as is.
    """
    shape = image.shape[1:]
    tile, starts = tile_plan(shape, roi, overlap, divisor)
    pad = [(0, 0)] + [(0, max(0, t - s)) for s, t in zip(shape, tile, strict=True)]
    padded = np.pad(image, pad) if any(p[1] for p in pad) else image
    full = padded.shape[1:]
    crop = (slice(None), *(slice(0, s) for s in shape))
    # One reused input buffer; the predictor gets a contiguous float32 batch every time.
    buf = np.empty((min(batch_size, len(starts)), image.shape[0], *tile), dtype=np.float32)
    if len(starts) == 1:
        buf[0] = padded[(slice(None), *(slice(0, t) for t in tile))]
        return np.asarray(predictor(buf)[0][crop], dtype=np.float32)
    weights = gaussian_weights(tile)
    weighted = np.empty((out_channels, *tile), dtype=np.float32)  # reused p * weights
    acc = np.zeros((out_channels, *full), dtype=np.float32)
    norm = np.zeros(full, dtype=np.float32)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b : b + batch_size]
        slices = [tuple(slice(s, s + t) for s, t in zip(st, tile, strict=True)) for st in chunk]
        for i, sl in enumerate(slices):
            buf[i] = padded[(slice(None), *sl)]
        probs = predictor(buf[: len(slices)])
        for sl, p in zip(slices, probs, strict=True):
            np.multiply(p, weights, out=weighted)
            acc[(slice(None), *sl)] += weighted
            norm[sl] += weights
    np.maximum(norm, 1e-8, out=norm)
    acc /= norm
    return acc[crop]


@dataclass(frozen=True)
class CroppedProbabilities:
    """Region probabilities ``values`` (3, x, y, z) inside ``box`` of a grid of ``shape``.

    Outside the box (the all-zero planes cut before inference) every probability is 0.
    Kept cropped because the full grid is 2-3x larger than a brain's box and only the label
    map (uint8) and, if asked, one region at a time need it.
    """

    values: np.ndarray
    box: Box
    shape: tuple[int, int, int]

    def full(self) -> np.ndarray:
        """All regions on the full grid (3, X, Y, Z) float32."""
        return uncrop(self.values, self.box, self.shape)

    def region(self, index: int) -> np.ndarray:
        """Region ``index`` (REGIONS order) on the full grid (X, Y, Z) float32."""
        return uncrop(self.values[index], self.box, self.shape)

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        """BraTS 2021 label map (X, Y, Z) uint8 on the full grid (background outside)."""
        return uncrop(probabilities_to_labels(self.values, threshold), self.box, self.shape)


def predict_cropped(
    image: np.ndarray,
    predictor: Predictor,
    roi: tuple[int, int, int],
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    divisor: int | None = None,
) -> CroppedProbabilities:
    """Raw case image (4, X, Y, Z) -> region probabilities inside its non-zero box.

    Crops the all-zero planes and z-scores (as in training) and tiles the crop (``divisor``:
    see ``tile_plan``).
    """
    cropped, box = crop_and_normalize(image)
    probs = sliding_window(
        cropped, predictor, roi, overlap=overlap, batch_size=batch_size, divisor=divisor
    )
    del cropped
    return CroppedProbabilities(probs, box, (image.shape[1], image.shape[2], image.shape[3]))


def probabilities_to_labels(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Region probabilities (3, X, Y, Z) -> BraTS 2021 label map (X, Y, Z) uint8."""
    return regions_to_labels(probs > threshold)
