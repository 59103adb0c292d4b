"""Cases as generator samples: the condition map (brain mask + NCR/ED/ET one-hot), each
modality scaled per case to [0, 1] by a brain percentile, 2D axial slices or 3D patches
drawn with a seeded sampler. Arrays are channel-first float32 (masks bool).

2D: a case becomes its axial slices that hold any brain, each zero-padded (or cropped
around the brain's bounding-box centre) to ``slice_size``; training draws only slices with
at least ``min_brain_fraction`` brain (of the slice's area on the case's own grid),
validation and rendering use them all. 3D: the volume zero-padded to at least
``patch_size``; training draws ``patch_size`` patches at uniform positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedseg.data.cases import MODALITIES, Case
from fedseg.errors import FedsegError

if TYPE_CHECKING:
    from fedseg.synth.config import SynthDataConfig

#: BraTS 2021 label values of the condition's tumour channels: NCR, ED, ET
TUMOUR_LABELS: tuple[int, ...] = (1, 2, 4)


def brain_mask(image: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: voxels where any present modality of ``image`` (C, X, Y, Z) is
    non-zero (skull-stripped BraTS data has a zero background)."""
    return np.any(image != 0, axis=0)


def condition_map(label: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(4, X, Y, Z) float32: brain mask, NCR (1), ED (2), ET (4) one-hot of a BraTS 2021
    label map; tumour voxels count as brain."""
    if label.shape != brain.shape:
        raise ValueError(f"label {label.shape} and brain mask {brain.shape} differ in shape")
    out = np.empty((4, *label.shape), np.float32)
    out[0] = (brain.astype(bool) | (label > 0)).astype(np.float32)
    for i, value in enumerate(TUMOUR_LABELS, start=1):
        out[i] = label == value
    return out


def require_present(case: Case, present: Sequence[str]) -> None:
    """One line if ``case``'s site declared a modality of ``present`` absent (its channel
    would be all zero: nothing to train or score against)."""
    declared = [m for m in present if m in case.absent]
    if declared:
        raise FedsegError(
            f"case {case.case_id}: {', '.join(declared)} declared absent at this site "
            "(fedseg_site.yaml); train and validate only the modalities the site has"
        )


def scale_intensity(image: np.ndarray, brain: np.ndarray, percentile: float) -> np.ndarray:
    """(C, ...) float32 in [0, 1]: each channel of ``image`` divided by its ``percentile``
    percentile over the ``brain`` voxels and clipped; a channel with nothing positive in the
    brain (a declared-absent, zero-filled one) is all zero."""
    out = np.zeros(image.shape, np.float32)
    if not brain.any():
        return out
    for c in range(image.shape[0]):
        top = float(np.percentile(image[c][brain], percentile))
        if top > 0:
            out[c] = np.clip(image[c] / top, 0.0, 1.0)
    return out


def brain_fraction(brain: np.ndarray) -> np.ndarray:
    """(Z,) fraction of each axial slice of ``brain`` (X, Y, Z) that is brain."""
    return brain.mean(axis=(0, 1))


def _window(n: int, size: int, centre: float) -> tuple[slice, slice]:
    """(source, destination) slices putting an axis of ``n`` voxels into one of ``size``:
    centred zero-padding when it fits, else a crop of ``size`` centred on ``centre``."""
    if n <= size:
        lo = (size - n) // 2
        return slice(0, n), slice(lo, lo + n)
    start = int(np.clip(round(centre - size / 2), 0, n - size))
    return slice(start, start + size), slice(0, size)


def fit(array: np.ndarray, size: Sequence[int], centre: Sequence[float]) -> np.ndarray:
    """``array`` with its last ``len(size)`` axes zero-padded / cropped to ``size`` (pads
    centred, crops centred on ``centre``, e.g. the brain's bounding-box centre)."""
    k = len(size)
    lead = array.shape[: array.ndim - k]
    out = np.zeros((*lead, *size), array.dtype)
    pairs = [_window(n, s, c) for n, s, c in zip(array.shape[-k:], size, centre, strict=True)]
    src = (..., *(p[0] for p in pairs))
    dst = (..., *(p[1] for p in pairs))
    out[dst] = array[src]
    return out


def brain_centre(brain: np.ndarray) -> tuple[float, ...]:
    """Centre of the bounding box of ``brain`` (the array's centre if it is empty)."""
    idx = np.argwhere(brain)
    if idx.size == 0:
        return tuple((n - 1) / 2 for n in brain.shape)
    return tuple(float(v) for v in (idx.min(0) + idx.max(0)) / 2)


@dataclass
class CaseSamples:
    """One case prepared for the generator. 2D: ``condition`` (S, 4, H, W), ``target``
    (S, C, H, W), ``brain`` (S, 1, H, W) over the S axial slices with any brain, fitted to
    ``slice_size``; ``train`` the indices of those with at least ``min_brain_fraction``
    brain. 3D: S = 1, the volume zero-padded to at least ``patch_size`` (``train`` = [0]);
    patches are drawn from it. ``target``'s channels are ``modalities``, scaled to [0, 1];
    ``condition[:, 0]`` is the brain mask (the generator's output is zero outside it)."""

    case_id: str
    modalities: tuple[str, ...]
    condition: np.ndarray
    target: np.ndarray
    brain: np.ndarray
    train: np.ndarray


def case_images(
    image: np.ndarray, label: np.ndarray, present: Sequence[str], percentile: float
) -> tuple[np.ndarray, np.ndarray]:
    """(condition (4, X, Y, Z), target (len(present), X, Y, Z)) of a loaded case: ``image``
    (4, X, Y, Z) in MODALITIES order (channels outside ``present`` ignored), ``label`` in
    BraTS 2021 values. The brain (``condition[0]``) is where a present modality is non-zero,
    plus the tumour; each present modality is scaled by ``percentile`` over it."""
    idx = [MODALITIES.index(m) for m in present]
    empty = [m for m, i in zip(present, idx, strict=True) if not image[i].any()]
    if empty:
        raise FedsegError(
            f"{', '.join(empty)}: an all-zero image in a case whose site has the modality; "
            "declare it absent (fedseg_site.yaml) or give the case its image"
        )
    cond = condition_map(label, brain_mask(image[idx]))
    return cond, scale_intensity(image[idx], cond[0] > 0, percentile)


def prepare_case(
    case_id: str,
    image: np.ndarray,
    label: np.ndarray,
    present: Sequence[str],
    data: SynthDataConfig,
    spatial_dims: int,
) -> CaseSamples:
    """``CaseSamples`` of a loaded case (``case_images``' arrays, as samples); ``target``'s
    channels are ``present``."""
    modalities = tuple(present)
    cond, target = case_images(image, label, modalities, data.intensity_percentile)
    brain = cond[0] > 0
    if spatial_dims == 3:
        size = [max(n, s) for n, s in zip(brain.shape, data.patch_size, strict=True)]
        centre = brain_centre(brain)
        return CaseSamples(
            case_id,
            modalities,
            fit(cond, size, centre)[None],
            fit(target, size, centre)[None],
            fit(brain, size, centre)[None, None],
            np.zeros(1, np.int64),
        )
    frac = brain_fraction(brain)
    zs = np.flatnonzero(frac > 0)
    centre = brain_centre(brain)[:2]
    size = data.slice_size

    def slices(a: np.ndarray) -> np.ndarray:  # (C, X, Y, Z) -> (S, C, H, W)
        return fit(np.moveaxis(a[..., zs], -1, 0), size, centre)

    return CaseSamples(
        case_id,
        modalities,
        slices(cond),
        slices(target),
        slices(brain[None]),
        np.flatnonzero(frac[zs] >= data.min_brain_fraction),
    )


@dataclass
class Batch:
    """``condition`` (B, 4, ...), ``target`` (B, C, ...), ``brain`` (B, 1, ...) bool."""

    condition: np.ndarray
    target: np.ndarray
    brain: np.ndarray


def _patch_box(
    shape: Sequence[int], size: Sequence[int], rng: np.random.Generator
) -> tuple[slice, ...]:
    starts = [int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size, strict=True)]
    return tuple(slice(a, a + s) for a, s in zip(starts, size, strict=True))


class SampleSampler:
    """Seeded batches of training samples: each sample picks a case uniformly (a case with
    more brain slices does not weigh more), then (2D) one of its ``train`` slices uniformly,
    or (3D) a ``patch_size`` patch at a uniform position. Same seed, same batches."""

    def __init__(
        self, cases: Sequence[CaseSamples], data: SynthDataConfig, spatial_dims: int, seed: int
    ) -> None:
        self.cases = [c for c in cases if len(c.train)]
        if not self.cases:
            raise FedsegError(
                f"no training sample in {len(cases)} cases: no axial slice has "
                f"{data.min_brain_fraction:.0%} brain; lower synthesis.data.min_brain_fraction"
            )
        self.data = data
        self.spatial_dims = spatial_dims
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int | None = None) -> Batch:
        """The next ``n`` (default ``batch_size``) samples."""
        picks = []
        for _ in range(n or self.data.batch_size):
            case = self.cases[int(self.rng.integers(len(self.cases)))]
            i = int(case.train[int(self.rng.integers(len(case.train)))])
            box: tuple[slice, ...] = ()
            if self.spatial_dims == 3:
                box = _patch_box(case.brain.shape[2:], self.data.patch_size, self.rng)
            picks.append((case, i, (slice(None), *box)))
        return Batch(
            *(
                np.stack([getattr(c, name)[i][box] for c, i, box in picks])
                for name in ("condition", "target", "brain")
            )
        )
