"""What a released MONAI bundle runs besides MONAI's own transforms (``model.monai_bundle``).

- ``case_files``: the four image files of a BraTS case folder (2017-2021 or 2023 names);
- ``label_values``: the values NCR, ED, ET take in the label convention asked for;
- ``WholeCaseInferer``: `fedseg segment`'s whole-case inference (crop the all-zero planes,
  z-score the non-zero voxels, fedseg's tiles, Gaussian blending: ``predict_cropped``) as a
  MONAI ``Inferer`` over a network that returns logits; it returns the ET, TC, WT
  probabilities (3, X, Y, Z) on the input's full grid;
- ``RegionsToLabelsd``: fedseg's threshold and region-to-label rule
  (``probabilities_to_labels``) as a MONAI dictionary transform: (3, X, Y, Z) probabilities
  -> (1, X, Y, Z) BraTS 2021 labels, uint8.

``fedseg release`` copies this module, with the fedseg modules it imports (``VENDORED`` in
``model.monai_bundle``), into the bundle's ``scripts/fedseg_runtime/`` with their
``fedseg.`` imports pointed there: the bundle runs the very code `fedseg segment` runs,
on a machine where fedseg is not installed. So this module imports nothing from fedseg
but ``errors``, ``data.labels``, ``data.preprocess`` and ``model.inference``, and
otherwise only numpy, torch and MONAI.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform

from fedseg.errors import FedsegError
from fedseg.model.inference import Predictor, predict_cropped, probabilities_to_labels

#: Image file endings looked for, in this order.
NIFTI_ENDINGS = (".nii.gz", ".nii")


def case_files(case_dir: str | Path, file_keys: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The image files of the case folder ``case_dir`` named ``<case><key><ending>``, by
    modality, for the first layout in ``file_keys`` (layout -> modality -> key, e.g.
    ``{"brats2021": {"t1": "_t1", ...}}``) whose files are all there."""
    folder = Path(case_dir)
    if not folder.is_dir():
        raise FedsegError(f"case folder {folder} not found; pass --case_dir CASE_FOLDER")
    for keys in file_keys.values():
        found: dict[str, str] = {}
        for modality, key in keys.items():
            for ending in NIFTI_ENDINGS:
                path = folder / f"{folder.name}{key}{ending}"
                if path.is_file():
                    found[modality] = str(path)
                    break
        if len(found) == len(keys):
            return found
    expected = ", ".join(
        f"{folder.name}{k}.nii.gz" for k in next(iter(file_keys.values())).values()
    )
    raise FedsegError(f"{folder}: not a complete BraTS case folder (expected {expected})")


def label_values(labels: str, conventions: Mapping[str, Sequence[int]]) -> list[int]:
    """The label values of NCR, ED, ET in the convention named ``labels`` (a key of
    ``conventions``, e.g. ``{"brats2021": [1, 2, 4], "brats2023": [1, 2, 3]}``)."""
    if labels not in conventions:
        raise FedsegError(f"unknown labels {labels!r}; use --labels {' or '.join(conventions)}")
    return [int(v) for v in conventions[labels]]


def module_predictor(network: Callable[[torch.Tensor], torch.Tensor]) -> Predictor:
    """``network`` (logits) as a numpy ``Predictor`` of sigmoid probabilities, on the CPU in
    float32: the computation of ``torch_backend.torch_predictor`` with fp32 on the CPU."""

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            logits = network(x)
            return torch.sigmoid(logits.float()).contiguous().cpu().numpy()

    return predict


class WholeCaseInferer(Inferer):
    """`fedseg segment`'s inference of one case, as a MONAI inferer (see the module docstring).

    Args:
        roi: the model's inference tile (voxels), e.g. ``(128, 128, 128)``.
        divisor: tiles shrink to fit the volume in multiples of this (2**depth), e.g. 16.
        overlap: tile overlap in [0, 1), e.g. 0.5.
        batch_size: tiles per forward pass.
    """

    def __init__(
        self, roi: Sequence[int], divisor: int, overlap: float = 0.5, batch_size: int = 1
    ) -> None:
        super().__init__()
        if not 0.0 <= overlap < 1.0:
            raise FedsegError(f"overlap {overlap} must be in [0, 1), e.g. 0.5")
        self.roi = (int(roi[0]), int(roi[1]), int(roi[2]))
        self.divisor = int(divisor)
        self.overlap = float(overlap)
        self.batch_size = int(batch_size)

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """``inputs``: the raw case image (4, X, Y, Z) in T1, T1Gd, T2, FLAIR order (or with a
        leading batch axis of 1). Returns probabilities (3, X, Y, Z) float32 with the input's
        metadata."""
        image = inputs[0] if inputs.dim() == 5 else inputs
        array = np.asarray(image.detach().cpu().numpy(), dtype=np.float32)
        probs = predict_cropped(
            array, module_predictor(network), self.roi, overlap=self.overlap,
            batch_size=self.batch_size, divisor=self.divisor,
        )  # fmt: skip
        full = torch.from_numpy(probs.full())
        if isinstance(image, MetaTensor):
            return MetaTensor(full, meta=dict(image.meta))
        return full


class RegionsToLabelsd(MapTransform):
    """ET, TC, WT probabilities (3, X, Y, Z) -> BraTS 2021 label map (1, X, Y, Z) uint8
    (``probabilities_to_labels``: a region is where its probability exceeds ``threshold``;
    ET 4, TC minus ET 1, WT minus TC 2)."""

    def __init__(self, keys: Any, threshold: float = 0.5, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            probs = d[key]
            array = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else probs
            labels = torch.from_numpy(probabilities_to_labels(np.asarray(array), self.threshold))
            labels = labels[None]
            d[key] = (
                MetaTensor(labels, meta=dict(probs.meta))
                if isinstance(probs, MetaTensor)
                else labels
            )
        return d
