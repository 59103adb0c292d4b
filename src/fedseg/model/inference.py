"""Full-volume inference in numpy: sliding window over the brain, backend-agnostic.

A backend is a ``Predictor``: a function from a batch of patches (B, C_in, x, y, z)
float32 to per-region probabilities (B, C_out, x, y, z) float32 in [0, 1]. PyTorch and
exported (OpenVINO) models both provide one; nothing here imports torch. ``tile_grid``
cuts a volume into the tiles a predictor sees (INT8 calibration uses the same tiles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


#: A tile's place on the padded grid: one slice per spatial axis.
Window = tuple[slice, slice, slice]


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one volume, as a predictor sees them.

    ``padded`` is the volume (C, X, Y, Z) zero-padded at the far end of every axis shorter
    than the tile (the volume itself when no axis is); ``windows`` are the tiles' places on
    it, in ``tile_plan`` order, each of size ``tile``. ``shape`` is the unpadded (X, Y, Z).
    """

    padded: np.ndarray
    tile: Tile
    windows: list[Window]
    shape: tuple[int, int, int]

    def batches(self, batch_size: int = 1) -> Iterator[tuple[list[Window], np.ndarray]]:
        """Consecutive tiles as contiguous float32 batches (b, C, x, y, z), ``b`` at most
        ``batch_size``, with their windows. One buffer is reused between batches: copy a
        batch to keep it."""
        n = min(batch_size, len(self.windows))
        buf = np.empty((n, self.padded.shape[0], *self.tile), dtype=np.float32)
        for b in range(0, len(self.windows), batch_size):
            chunk = self.windows[b : b + batch_size]
            for i, w in enumerate(chunk):
                buf[i] = self.padded[(slice(None), *w)]
            yield chunk, buf[: len(chunk)]


def tile_grid(
    image: np.ndarray, roi: Tile, overlap: float = 0.5, divisor: int | None = None
) -> TileGrid:
    """The tiles of ``image`` (C, X, Y, Z) from ``tile_plan`` (``divisor``: see there)."""
    shape = (image.shape[1], image.shape[2], image.shape[3])
    tile, starts = tile_plan(shape, roi, overlap, divisor)
    pad = [(0, 0)] + [(0, max(0, t - s)) for s, t in zip(shape, tile, strict=True)]
    padded = np.pad(image, pad) if any(p[1] for p in pad) else image
    windows: list[Window] = [
        (slice(st[0], st[0] + tile[0]), slice(st[1], st[1] + tile[1]),
         slice(st[2], st[2] + tile[2]))
        for st in starts
    ]  # fmt: skip
    return TileGrid(padded, tile, windows, shape)


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

    Tiles come from ``tile_grid`` (``divisor`` given: shrunk to fit the volume). Axes
    shorter than the tile are zero-padded to it (and cropped back after). Overlapping tiles
    are blended with Gaussian weights; a single tile is used as is.
    """
    grid = tile_grid(image, roi, overlap, divisor)
    crop = (slice(None), *(slice(0, s) for s in grid.shape))
    if len(grid.windows) == 1:
        _, batch = next(grid.batches(1))
        return np.asarray(predictor(batch)[0][crop], dtype=np.float32)
    weights = gaussian_weights(grid.tile)
    weighted = np.empty((out_channels, *grid.tile), dtype=np.float32)  # reused p * weights
    acc = np.zeros((out_channels, *grid.padded.shape[1:]), dtype=np.float32)
    norm = np.zeros(grid.padded.shape[1:], dtype=np.float32)
    for windows, batch in grid.batches(batch_size):
        probs = predictor(batch)
        for w, p in zip(windows, probs, strict=True):
            np.multiply(p, weights, out=weighted)
            acc[(slice(None), *w)] += weighted
            norm[w] += weights
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
