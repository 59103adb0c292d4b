"""Example grids of a generator's images, drawn where the images are (the benchmark, a
site running ``fedseg complete --figure``): never at the aggregator, which has no image.

- ``samples_figure`` (the paper's Fig. 2): per case a row: label map, then per modality the
  real image and the synthetic one drawn from the same label map.
- ``completion_figure`` (Fig. 3): per completed (case, modality) a row: label map, the real
  image held back (when known), the completed one.

Each panel is one axial slice (the one with the most tumour), grey levels scaled per panel
to its brain's 0.5-99.5 percentiles; label maps coloured NCR red, ED green, ET yellow.
PNG through matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedseg.data.cases import MODALITIES

_LABEL_COLOURS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.8, 0.2), 4: (1.0, 0.9, 0.1)}
_NAMES = {"t1": "T1", "t1ce": "T1Gd", "t2": "T2", "flair": "FLAIR"}


def pick_slice(label: np.ndarray, brain: np.ndarray | None = None) -> int:
    """The axial slice with the most tumour voxels (the most brain when there is none)."""
    per = (label > 0).sum(axis=(0, 1))
    if per.max() == 0 and brain is not None:
        per = brain.sum(axis=(0, 1))
    return int(np.argmax(per))


def _grey(slice_: np.ndarray) -> np.ndarray:
    """Display scaling: the non-zero voxels' 0.5-99.5 percentiles to [0, 1]."""
    nz = slice_[slice_ != 0]
    if nz.size == 0:
        return np.zeros_like(slice_, dtype=np.float32)
    lo, hi = np.percentile(nz, [0.5, 99.5])
    out = (slice_ - lo) / max(float(hi - lo), 1e-6)
    return np.clip(np.where(slice_ != 0, out, 0.0), 0.0, 1.0).astype(np.float32)


def _label_rgb(label: np.ndarray, brain: np.ndarray | None) -> np.ndarray:
    rgb = np.zeros((*label.shape, 3), dtype=np.float32)
    if brain is not None:
        rgb[brain] = 0.25
    for value, colour in _LABEL_COLOURS.items():
        rgb[label == value] = colour
    return rgb


@dataclass
class SampleRow:
    """One case of Fig. 2: its (X, Y, Z) label map and brain mask, and per modality the
    real and the synthetic volume (either may be absent)."""

    title: str
    label: np.ndarray
    brain: np.ndarray | None = None
    real: Mapping[str, np.ndarray] = field(default_factory=dict)
    synthetic: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass
class CompletionRow:
    """One completion of Fig. 3: the case's label map, the held-back real image (None at a
    site: it never had it) and the completed image of ``modality``."""

    title: str
    modality: str
    label: np.ndarray
    completed: np.ndarray
    real: np.ndarray | None = None
    brain: np.ndarray | None = None


def _show(ax: object, img: np.ndarray, title: str | None) -> None:
    ax.imshow(np.rot90(img), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]
    if title:
        ax.set_title(title, fontsize=8)  # type: ignore[attr-defined]


def _blank(ax: object, text: str) -> None:
    ax.axis("off")  # type: ignore[attr-defined]
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="0.5")  # type: ignore[attr-defined]


def _save(fig: object, out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()  # type: ignore[attr-defined]
    FigureCanvasAgg(fig).print_png(str(out))  # type: ignore[arg-type]
    return out


def samples_figure(
    rows: Sequence[SampleRow], out: Path, modalities: Sequence[str] = MODALITIES
) -> Path:
    """Fig. 2: label | real m | synthetic m for each modality, one row per case."""
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("samples_figure needs at least one row")
    ncol = 1 + 2 * len(modalities)
    fig = Figure(figsize=(1.5 * ncol, 1.6 * len(rows) + 0.3))
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for r, row in enumerate(rows):
        z = pick_slice(row.label, row.brain)
        brain = row.brain[..., z] if row.brain is not None else None
        _show(axes[r][0], _label_rgb(row.label[..., z], brain), f"{row.title}\nlabel map")
        for j, m in enumerate(modalities):
            for k, (kind, vols) in enumerate((("real", row.real), ("synthetic", row.synthetic))):
                ax = axes[r][1 + 2 * j + k]
                title = f"{_NAMES.get(m, m)} {kind}" if r == 0 else None
                if m in vols:
                    _show(ax, _grey(vols[m][..., z]), title)
                else:
                    _blank(ax, f"no {kind} {_NAMES.get(m, m)}")
    return _save(fig, out)


def completion_figure(rows: Sequence[CompletionRow], out: Path) -> Path:
    """Fig. 3: label | held-back real | completed, one row per completed modality."""
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("completion_figure needs at least one row")
    fig = Figure(figsize=(1.7 * 3, 1.7 * len(rows) + 0.3))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, row in enumerate(rows):
        z = pick_slice(row.label, row.brain)
        name = _NAMES.get(row.modality, row.modality)
        brain = row.brain[..., z] if row.brain is not None else None
        _show(axes[r][0], _label_rgb(row.label[..., z], brain), f"{row.title}\nlabel map")
        if row.real is not None:
            _show(axes[r][1], _grey(row.real[..., z]), f"{name} real (held back)")
        else:
            _blank(axes[r][1], f"no real {name}\n(never acquired)")
        _show(axes[r][2], _grey(row.completed[..., z]), f"{name} completed")
    return _save(fig, out)
