"""Generator inference on whole volumes: a label map (+ brain mask) to one modality's image,
slice by slice (2D, axial = the last axis) or whole (3D); what ``complete``, ``sample`` and
the report's sample grids draw. Spatial sizes are zero-padded to a multiple of
``2**(depth-1)`` and cropped back; slices without brain stay 0."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedseg.errors import FedsegError
from fedseg.model.generator import generator_module
from fedseg.model.generator_file import GeneratorFile
from fedseg.synth.data import condition_map

#: axial slices per forward pass (bounds memory on a 240 x 240 grid)
SLICE_BATCH = 16


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` (B, C, *spatial) zero-padded at the end of each spatial axis to ``multiple``."""
    spatial = tuple(x.shape[2:])
    pad: list[int] = []
    for size in reversed(spatial):
        pad += [0, (-size) % multiple]
    return F.pad(x, pad), spatial


def render_volume(
    gf: GeneratorFile, label: np.ndarray, brain: np.ndarray, modality: str
) -> np.ndarray:
    """(X, Y, Z) float32 image in [0, 1], zero outside ``brain``; ``label`` in BraTS 2021
    values (X, Y, Z), ``brain`` a boolean mask of the same shape."""
    if modality not in gf.config.modalities:
        raise FedsegError(
            f"the generator has no {modality} bank; it knows {', '.join(gf.config.modalities)}"
        )
    cond = torch.from_numpy(condition_map(label, brain))
    net = generator_module(gf.config, gf.weights).eval()
    multiple = 2 ** (gf.config.depth - 1)
    out = np.zeros(label.shape, np.float32)
    with torch.no_grad():
        if gf.config.spatial_dims == 3:
            x, spatial = _pad_to(cond[None], multiple)
            y = net(x, modality)[0, 0]
            out[...] = y[tuple(slice(0, s) for s in spatial)].numpy()
        else:
            zs = [z for z in range(label.shape[2]) if cond[0, :, :, z].any()]
            for i in range(0, len(zs), SLICE_BATCH):
                chunk = zs[i : i + SLICE_BATCH]
                x = cond[:, :, :, chunk].permute(3, 0, 1, 2)  # (B, 4, X, Y)
                x, spatial = _pad_to(x, multiple)
                y = net(x, modality)[:, 0, : spatial[0], : spatial[1]]
                out[:, :, chunk] = y.permute(1, 2, 0).numpy()
    out *= condition_map(label, brain)[0]
    return out
