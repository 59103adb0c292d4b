"""Validation of a generator at a site: per validation case and present modality,
brain-masked SSIM, PSNR and MAE of G(label map) against the real image (``model.metrics``),
as ``CaseResult``s whose region is the modality."""

from __future__ import annotations

from collections.abc import Sequence

from fedseg.data.cases import Case
from fedseg.model.evaluate import CaseResult
from fedseg.model.weights import Weights
from fedseg.synth.config import SynthesisConfig

#: the metrics a synthesis validation reports per modality
SYNTH_METRICS: tuple[str, ...] = ("ssim", "psnr", "mae")


def validate_bank(
    cfg: SynthesisConfig, weights: Weights, cases: Sequence[Case], present: Sequence[str]
) -> list[CaseResult]:
    """``metrics[modality][ssim|psnr|mae]`` per case, for the modalities in ``present``."""
    raise NotImplementedError  # helper A
