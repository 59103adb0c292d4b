"""A picture of one case: the four modalities and the label overlay in axial, coronal and
sagittal planes through the tumor's centroid (the brain's centre if there is no tumor).

Views are in radiological convention (patient's right on the image's left), superior up
on coronal and sagittal views, anterior up on axial views, with the voxel aspect honoured.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fedseg.data.cases import MODALITIES, Case, CaseVolumes, discover_cases, load_case
from fedseg.data.labels import ED, ET, NCR
from fedseg.data.preprocess import nonzero_box
from fedseg.errors import FedsegError

TITLES = {"t1": "T1", "t1ce": "T1Gd", "t2": "T2", "flair": "FLAIR"}
#: Label colours (RGB) used in the overlay and the legend.
LABEL_COLOURS: dict[int, tuple[str, tuple[float, float, float]]] = {
    NCR: ("NCR (1) necrotic core", (0.90, 0.10, 0.10)),
    ED: ("ED (2) edema", (0.15, 0.80, 0.20)),
    ET: ("ET (4) enhancing tumor", (1.00, 0.85, 0.00)),
}


def _to_ras(vols: CaseVolumes) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Image (4, X, Y, Z) and label reoriented to RAS voxel order, and their spacing (3,)."""
    ornt = nib.orientations.io_orientation(vols.affine)
    image = np.stack([nib.orientations.apply_orientation(c, ornt) for c in vols.image])
    label = None
    if vols.label is not None:
        label = nib.orientations.apply_orientation(vols.label, ornt)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = vols.spacing
    return image, label, spacing


def focus_point(image: np.ndarray, label: np.ndarray | None) -> tuple[int, int, int]:
    """Voxel at the centroid of the whole tumor, else of the non-zero (brain) voxels."""
    mask = label > 0 if label is not None and label.any() else np.any(image != 0, axis=0)
    if not mask.any():
        return (image.shape[1] // 2, image.shape[2] // 2, image.shape[3] // 2)
    c = np.argwhere(mask).mean(axis=0).round().astype(int)
    return (int(c[0]), int(c[1]), int(c[2]))


def _planes(
    vol: np.ndarray, p: tuple[int, int, int], sp: np.ndarray
) -> list[tuple[np.ndarray, float]]:
    """(2D array to draw with origin='lower', aspect) for axial, coronal, sagittal views."""
    axial = vol[::-1, :, p[2]].T  # rows y (anterior up), columns x flipped (right on left)
    coronal = vol[::-1, p[1], :].T  # rows z, columns x flipped
    sagittal = vol[p[0], ::-1, :].T  # rows z, columns y flipped (anterior on the left)
    return [(axial, sp[1] / sp[0]), (coronal, sp[2] / sp[0]), (sagittal, sp[2] / sp[1])]


def _window(channel: np.ndarray) -> tuple[float, float]:
    vals = channel[channel != 0]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [0.5, 99.5])
    return float(min(lo, 0.0)), float(hi if hi > lo else lo + 1.0)


def render_case(vols: CaseVolumes, out: Path, *, title: str | None = None) -> Path:
    """Draw ``vols`` into the PNG ``out``: rows axial/coronal/sagittal, columns T1, T1Gd, T2,
    FLAIR and FLAIR with the label overlay."""
    image, label, sp = _to_ras(vols)
    box = nonzero_box(image, margin=3)  # draw the brain, not the empty field of view
    image = image[(slice(None), *box)]
    label = label[box] if label is not None else None
    point = focus_point(image, label)
    cmap = ListedColormap([(0, 0, 0, 0)] + [(*LABEL_COLOURS[v][1], 0.55) for v in (NCR, ED, ET)])
    lut = np.zeros(256, dtype=np.uint8)
    lut[[NCR, ED, ET]] = [1, 2, 3]
    fig = Figure(figsize=(15, 9.6), facecolor="black")  # no pyplot: no global state
    axes = fig.subplots(3, 5)
    for col in range(5):
        m = min(col, 3)
        lo, hi = _window(image[m])
        views = _planes(image[m], point, sp)
        overlay = _planes(lut[label], point, sp) if label is not None else None
        for row, (arr, aspect) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(arr, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
            if col == 4 and overlay is not None:
                ax.imshow(
                    overlay[row][0],
                    cmap=cmap,
                    vmin=0,
                    vmax=3,
                    origin="lower",
                    aspect=aspect,
                    interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            if row == 0:
                name = TITLES[MODALITIES[m]] + (" + labels" if col == 4 else "")
                ax.set_title(name, color="white", fontsize=12)
            if col == 0:
                ax.set_ylabel(("axial", "coronal", "sagittal")[row], color="white", fontsize=12)
    handles = [Patch(color=c, label=n) for n, c in LABEL_COLOURS.values()]
    fig.legend(
        handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white", fontsize=11
    )
    heading = title or vols.case_id
    if label is None:
        heading += " (no label)"
    full = tuple(int(p + b.start) for p, b in zip(point, box, strict=True))
    fig.suptitle(f"{heading}  -  through voxel {full} (RAS order); R on the left", color="white")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor="black")
    return out


def find_case(folder: Path, case_id: str | None = None) -> Case:
    """The one case in ``folder`` (a case folder), or the case named ``case_id`` in it."""
    cases = discover_cases(Path(folder))
    if case_id is not None:
        match = [c for c in cases if c.case_id == case_id]
        if not match:
            raise FedsegError(f"no case {case_id!r} in {folder}; give one of its case ids")
        return match[0]
    if len(cases) > 1:
        raise FedsegError(
            f"{folder} holds {len(cases)} cases; give one case folder or pick one with --case"
        )
    return cases[0]


def show_case(folder: Path, out: Path, case_id: str | None = None) -> Path:
    """Load a case from disk and draw it to the PNG ``out``."""
    if Path(out).suffix.lower() != ".png":
        raise FedsegError(f"{out}: pictures are written as PNG; give a file name ending in .png")
    return render_case(load_case(find_case(folder, case_id)), out)
