"""QC picture of a registration: atlas contours over the registered T1Gd in three planes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _center(mask: np.ndarray) -> tuple[int, int, int]:
    idx = np.argwhere(mask)
    c = idx.mean(axis=0).round() if len(idx) else np.asarray(mask.shape) // 2
    return int(c[0]), int(c[1]), int(c[2])


def registration_png(
    path: Path,
    t1ce: np.ndarray,
    brain: np.ndarray,
    white_matter: np.ndarray,
    spacing: float,
    title: str,
) -> None:
    """Write a PNG: sagittal, coronal and axial slices through the atlas brain's center.

    Arrays are (X, Y, Z) on the output grid (RAS-like axes of the atlas): the registered,
    not brain-masked T1Gd in gray, the atlas brain outline in red and the white-matter
    outline (probability 0.5) in yellow. A good registration puts both on the anatomy.
    """
    cx, cy, cz = _center(brain)
    planes = [
        ("sagittal", t1ce[cx], brain[cx], white_matter[cx]),
        ("coronal", t1ce[:, cy], brain[:, cy], white_matter[:, cy]),
        ("axial", t1ce[:, :, cz], brain[:, :, cz], white_matter[:, :, cz]),
    ]
    hi = float(np.percentile(t1ce[brain], 99.5)) if brain.any() else float(t1ce.max() or 1)
    fig = Figure(figsize=(12, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, (name, img, b, wm) in enumerate(planes):
        ax = fig.add_subplot(1, 3, i + 1)
        # Transpose and flip so that superior/anterior is up, as radiologists expect.
        ax.imshow(img.T, cmap="gray", origin="lower", vmin=0, vmax=hi)
        ax.contour(b.T.astype(float), levels=[0.5], colors="red", linewidths=0.8, origin="lower")
        ax.contour(wm.T, levels=[0.5], colors="yellow", linewidths=0.6, origin="lower")
        ax.set_title(name)
        ax.set_axis_off()
    fig.suptitle(f"{title}: atlas brain (red) and white matter (yellow) over T1Gd, {spacing:g} mm")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
