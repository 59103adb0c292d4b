"""Whole-case segmentation with one model or several (ensemble mean, or a region triplet).

A ``ModelSet`` holds one or more ``Member``s (a numpy ``Predictor`` plus its inference
tile) and a way to combine them:
- ``mean``: the ensemble, element-wise mean of the members' probabilities (3, X, Y, Z);
- ``triplet``: three members, region ``i`` (ET, TC, WT) taken from member ``i``.
Probabilities are computed on the case's full grid (the zero-plane crop undone), so the
label map written back has the input's shape and affine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedseg.data import nifti
from fedseg.data.cases import (
    MODALITIES,
    Case,
    CaseVolumes,
    case_from_files,
    discover_cases,
    load_case,
    require_all_modalities,
)
from fedseg.data.labels import REGIONS, Layout, from_brats2021
from fedseg.data.preprocess import nonzero_box
from fedseg.errors import FedsegError
from fedseg.model.inference import CroppedProbabilities, Predictor, predict_cropped, tile_plan
from fedseg.output_paths import check_output_file

if TYPE_CHECKING:
    from fedseg.model.compute import ComputeConfig

Combine = Literal["mean", "triplet"]
#: Called with the number of tiles just predicted (for progress bars).
TileCallback = Callable[[int], None]


@dataclass(frozen=True)
class Member:
    """One model of a set: ``predictor`` maps (B, C_in, x, y, z) -> (B, 3, x, y, z) in [0, 1];
    ``roi`` is its inference tile (voxels); ``name`` identifies it in messages."""

    predictor: Predictor
    roi: tuple[int, int, int]
    name: str = "model"
    #: Tiles may shrink to fit the volume in multiples of this (2**depth); None: always roi.
    divisor: int | None = None


def check_roi(roi: Sequence[int], divisor: int, source: str = "model") -> tuple[int, int, int]:
    """Validate an inference tile: three positive sides, each a multiple of ``divisor``."""
    sides = tuple(int(r) for r in roi)
    if len(sides) != 3 or any(r <= 0 for r in sides):
        raise FedsegError(f"{source}: inference tile {sides} must be three positive sizes")
    if any(r % divisor for r in sides):
        fixed = tuple(-(-r // divisor) * divisor for r in sides)  # next multiple up
        raise FedsegError(
            f"{source}: inference tile {sides} is not a multiple of {divisor} (2**depth) on "
            f"every side; use e.g. {fixed}"
        )
    return sides  # type: ignore[return-value]


def load_member(
    path: Path, *, roi: Sequence[int] | None = None, compute: ComputeConfig | None = None
) -> Member:
    """A model as a ``Member``, backend by file type: an exported OpenVINO model (its folder
    or ``.xml``) or a PyTorch model file (``.pt``); ``roi`` overrides the model's tile.

    ``compute`` (None: ``ComputeConfig()``, i.e. CUDA when present, else the CPU, fp32)
    says where and how a PyTorch model runs. An exported model runs on the CPU in its own
    precision and ignores it; asking for a CUDA device with one is an error."""
    from fedseg.model.openvino_backend import is_exported_model, load_exported_member

    if is_exported_model(Path(path)):
        if compute is not None and compute.device.startswith("cuda"):
            raise FedsegError(
                f"{path}: an exported OpenVINO model runs on the CPU only; drop --device "
                f"{compute.device} (or segment with the .pt model to use the GPU)"
            )
        return load_exported_member(Path(path), roi=roi)
    # torch is imported only here so that the numpy parts of this module need no torch.
    from fedseg.model.compute import ComputeConfig
    from fedseg.model.model_file import load_model
    from fedseg.model.torch_backend import torch_predictor

    mf = load_model(Path(path))
    if (mf.network.in_channels, mf.network.out_channels) != (len(MODALITIES), len(REGIONS)):
        raise FedsegError(
            f"{path}: network maps {mf.network.in_channels} -> {mf.network.out_channels} "
            f"channels; segmentation needs {len(MODALITIES)} modalities -> {len(REGIONS)} regions"
        )
    tile = check_roi(roi if roi is not None else mf.roi, mf.network.divisor, str(path))
    predictor = torch_predictor(mf.build(), compute if compute is not None else ComputeConfig())
    return Member(predictor, tile, Path(path).name, mf.network.divisor)


@dataclass(frozen=True)
class ModelSet:
    """Models used together on every case; see the module docstring for ``combine``."""

    members: tuple[Member, ...]
    combine: Combine = "mean"

    def __post_init__(self) -> None:
        if not self.members:
            raise FedsegError("no model given; pass at least one --model FILE")
        if self.combine == "triplet" and len(self.members) != len(REGIONS):
            raise FedsegError(
                f"a triplet needs exactly {len(REGIONS)} models (ET, TC, WT in that order), "
                f"got {len(self.members)}"
            )

    @classmethod
    def from_files(
        cls,
        paths: Sequence[Path],
        combine: Combine = "mean",
        *,
        roi: Sequence[int] | None = None,
        compute: ComputeConfig | None = None,
    ) -> ModelSet:
        """Load model files (``roi`` overrides every member's tile; ``compute`` says where
        and how they run, see ``load_member``)."""
        return cls(tuple(load_member(p, roi=roi, compute=compute) for p in paths), combine)

    def tile_count(self, image: np.ndarray, overlap: float) -> int:
        """Tiles all members will predict for ``image`` (C, X, Y, Z): the progress total."""
        box = nonzero_box(image)
        shape = [s.stop - s.start for s in box]
        total = 0
        for m in self.members:
            total += len(tile_plan(tuple(shape), m.roi, overlap, m.divisor)[1])
        return total

    def predict(
        self,
        image: np.ndarray,
        *,
        overlap: float = 0.5,
        batch_size: int = 1,
        on_tiles: TileCallback | None = None,
    ) -> CroppedProbabilities:
        """Raw case image (4, X, Y, Z) -> combined probabilities (3, x, y, z) float32 inside
        the image's non-zero box (the same box for every member)."""
        combined: CroppedProbabilities | None = None
        for i, m in enumerate(self.members):
            probs = predict_cropped(
                image, _counting(m.predictor, on_tiles), m.roi, overlap=overlap,
                batch_size=batch_size, divisor=m.divisor,
            )  # fmt: skip
            if combined is None:
                combined = probs
                if self.combine == "triplet":
                    combined.values[1:] = 0
            elif self.combine == "triplet":
                combined.values[i] = probs.values[i]
            else:
                np.add(combined.values, probs.values, out=combined.values)
        assert combined is not None  # __post_init__: at least one member
        if self.combine == "mean" and len(self.members) > 1:
            np.divide(combined.values, len(self.members), out=combined.values)
        return combined


def _counting(predictor: Predictor, on_tiles: TileCallback | None) -> Predictor:
    if on_tiles is None:
        return predictor

    def predict(batch: np.ndarray) -> np.ndarray:
        out = predictor(batch)
        on_tiles(batch.shape[0])
        return out

    return predict


@dataclass
class Segmentation:
    """A segmented case: ``labels`` (X, Y, Z) uint8 BraTS 2021 on the input's grid with its
    ``affine``; ``cropped`` the region probabilities inside the brain's box."""

    case_id: str
    labels: np.ndarray
    cropped: CroppedProbabilities
    affine: np.ndarray

    @property
    def probabilities(self) -> np.ndarray:
        """Region probabilities (3, X, Y, Z) float32 in REGIONS order on the input's grid."""
        return self.cropped.full()


def resolve_case(inputs: Sequence[Path], *, allow_lacking: bool = False) -> Case:
    """The case named on a command line: one case folder (any layout) or four files
    T1 T1Gd T2 FLAIR. A case lacking a modality (missing, or declared absent by its site)
    is refused unless ``allow_lacking`` (the caller completes it first: ``as_absent``)."""
    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].is_dir():
        cases = discover_cases(paths[0])
        if len(cases) != 1:
            raise FedsegError(
                f"{paths[0]} holds {len(cases)} cases; give one case folder (or four files "
                "T1 T1Gd T2 FLAIR), or use `fedseg evaluate --data` for a whole data set"
            )
        case = cases[0]
    elif len(paths) == 4:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FedsegError(f"image file not found: {', '.join(missing)}")
        case = case_from_files(paths)
    else:
        what = "not a folder" if len(paths) == 1 else f"{len(paths)} paths given"
        raise FedsegError(
            f"{' '.join(map(str, paths))}: {what}; give a case folder or four files in the "
            "order T1 T1Gd T2 FLAIR"
        )
    if not allow_lacking:
        require_all_modalities(case)
    return case


def segment_volumes(
    volumes: CaseVolumes,
    models: ModelSet,
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    threshold: float = 0.5,
    on_tiles: TileCallback | None = None,
) -> Segmentation:
    """Segment a loaded case: probabilities from ``models``, thresholded into labels."""
    if not 0.0 <= overlap < 1.0:
        raise FedsegError(f"overlap {overlap} must be in [0, 1), e.g. 0.5")
    probs = models.predict(volumes.image, overlap=overlap, batch_size=batch_size, on_tiles=on_tiles)
    return Segmentation(volumes.case_id, probs.labels(threshold), probs, volumes.affine)


def segment_case(
    case: Case,
    models: ModelSet,
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    threshold: float = 0.5,
    on_tiles: TileCallback | None = None,
) -> Segmentation:
    """Load ``case`` (its label, if any, is not read) and segment it."""
    volumes = load_case(case, with_label=False)
    return segment_volumes(
        volumes, models, overlap=overlap, batch_size=batch_size, threshold=threshold,
        on_tiles=on_tiles,
    )  # fmt: skip


def probability_paths(folder: Path, case_id: str) -> dict[str, Path]:
    """Where ``write_segmentation`` puts each region's probability map."""
    return {r: Path(folder) / f"{case_id}_{r}_prob.nii.gz" for r in REGIONS}


def check_output(out: Path) -> Path:
    """Refuse an output name that is not NIfTI, or a place it cannot be written (checked
    before any work is done)."""
    out = Path(out)
    if not out.name.endswith((".nii.gz", ".nii")):
        raise FedsegError(f"{out}: the output must be a NIfTI file name (.nii.gz or .nii)")
    return check_output_file(out, "label map")


#: Label conventions a label map can be written in (``fedseg segment --labels``).
OUTPUT_LABELS: tuple[Layout, ...] = (Layout.BRATS2021, Layout.BRATS2023)


def output_labels(name: str) -> Layout:
    """The label convention named ``name`` (``brats2021``: ET 4; ``brats2023``: ET 3)."""
    names = [layout.value for layout in OUTPUT_LABELS]
    if name not in names:
        raise FedsegError(f"unknown label convention {name!r}; use {' or '.join(names)}")
    return Layout(name)


def write_segmentation(
    seg: Segmentation,
    out: Path,
    probabilities_dir: Path | None = None,
    *,
    labels: Layout = Layout.BRATS2021,
) -> list[Path]:
    """Write the label map to ``out`` (uint8) in the ``labels`` convention (BraTS 2021: ET 4,
    or BraTS 2023+: ET 3; NCR 1 and ED 2 in both) and, if asked, the three probability maps
    (float32) into ``probabilities_dir``. Returns the files written."""
    out = check_output(out)
    written_labels = (
        seg.labels if labels is Layout.BRATS2021 else from_brats2021(seg.labels, labels)
    )
    nifti.save(out, written_labels, seg.affine, label=True)
    written = [out]
    if probabilities_dir is not None:
        for i, path in enumerate(probability_paths(probabilities_dir, seg.case_id).values()):
            nifti.save(path, seg.cropped.region(i), seg.affine)
            written.append(path)
    return written
