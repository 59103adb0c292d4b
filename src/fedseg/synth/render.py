"""Generator inference on whole volumes: a label map (+ brain mask) to one modality's image,
slice by slice (2D) or whole (3D); what ``complete`` and ``sample`` write."""

from __future__ import annotations

import numpy as np

from fedseg.model.generator_file import GeneratorFile


def render_volume(
    gf: GeneratorFile, label: np.ndarray, brain: np.ndarray, modality: str
) -> np.ndarray:
    """(X, Y, Z) float32 image in [0, 1], zero outside ``brain``; ``label`` in BraTS 2021
    values (X, Y, Z), ``brain`` a boolean mask of the same shape."""
    raise NotImplementedError  # helper A
