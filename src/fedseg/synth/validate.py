"""Validation of a generator at a site: per validation case and present modality,
brain-masked SSIM, PSNR and MAE of G(label map) against the real image (``model.metrics``),
as ``CaseResult``s whose region is the modality.

The generated image is ``synth.render.render_volume`` of the case's label map and brain
(the one inference path: 2D slice by slice, slices without brain skipped; 3D whole), on
the case's own grid; the real image is scaled like the training targets
(``synth.data.case_images``). Every metric is over the brain (``condition[0]``: where a
present modality is non-zero, plus the tumour): SSIM is 2D over the axial slices with
brain (3D: the volume), PSNR and MAE over the brain voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedseg.data.cases import MODALITIES, Case, load_case
from fedseg.errors import FedsegError
from fedseg.model.evaluate import CaseResult
from fedseg.model.generator_file import GeneratorFile
from fedseg.model.metrics import mae, psnr, ssim_masked
from fedseg.model.weights import Weights
from fedseg.synth.config import SynthesisConfig
from fedseg.synth.data import case_images, require_present
from fedseg.synth.render import render_volume

#: the metrics a synthesis validation reports per modality
SYNTH_METRICS: tuple[str, ...] = ("ssim", "psnr", "mae")


def image_metrics(
    fake: np.ndarray, real: np.ndarray, brain: np.ndarray, spatial_dims: int
) -> dict[str, float]:
    """``SYNTH_METRICS`` of one generated volume (X, Y, Z) against the real one, over
    ``brain`` (2D SSIM over the axial slices with brain)."""
    if spatial_dims == 2:
        zs = np.flatnonzero(brain.any(axis=(0, 1)))
        axial = [np.moveaxis(a[..., zs], -1, 0) for a in (fake, real, brain)]
        ssim = ssim_masked(*axial, spatial_dims=2)
    else:
        ssim = ssim_masked(fake, real, brain, spatial_dims=3)
    return {"ssim": ssim, "psnr": psnr(fake, real, brain), "mae": mae(fake, real, brain)}


def validate_bank(
    cfg: SynthesisConfig, weights: Weights, cases: Sequence[Case], present: Sequence[str]
) -> list[CaseResult]:
    """``metrics[modality][ssim|psnr|mae]`` per case, for the modalities in ``present``
    that the generator has a bank for."""
    present = [m for m in MODALITIES if m in present]
    modalities = [m for m in present if m in cfg.generator.modalities]
    gf = GeneratorFile(
        cfg.generator, weights, modalities, intensity_percentile=cfg.data.intensity_percentile
    )
    results = []
    for case in cases:
        require_present(case, present)
        vol = load_case(case)
        if vol.label is None:
            raise FedsegError(
                f"case {case.case_id}: no label map; a generator is validated from label maps"
            )
        try:
            cond, real = case_images(vol.image, vol.label, present, cfg.data.intensity_percentile)
        except FedsegError as exc:
            raise FedsegError(f"case {case.case_id}: {exc}") from None
        brain = cond[0] > 0  # the brain and the tumour: render_volume's mask too
        metrics = {}
        for m in modalities:
            fake = render_volume(gf, vol.label, brain, m)
            metrics[m] = image_metrics(
                fake, real[present.index(m)], brain, cfg.generator.spatial_dims
            )
        results.append(CaseResult(case.case_id, metrics))
        del vol
    return results
