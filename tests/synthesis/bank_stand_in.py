"""Fast in-process stand-ins for ``synth.train.train_bank`` and ``synth.validate.validate_bank``
(same signatures) for the site-dispatch tests: a seeded nudge of exactly the arrays the
phase trains (``model.generator.trainable_names``), one small ``discriminators_<round>.npz``
in the workspace (the two latest kept, like the real unit's), constant metrics per case and
present modality. They test the plumbing around the generator's training; the training is
tested in ``test_bank_training`` and the real-process e2e runs the real unit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedseg.data.cases import Case
from fedseg.model.evaluate import CaseResult
from fedseg.model.generator import trainable_names
from fedseg.model.weights import Weights, save_arrays
from fedseg.synth.config import SynthesisConfig

if TYPE_CHECKING:
    from fedseg.synth.train import BankResult, Phase


def train_bank(
    cfg: SynthesisConfig,
    weights: Weights,
    cases: Sequence[Case],
    present: Sequence[str],
    *,
    phase: Phase,
    modality: str | None,
    steps: int,
    seed: int,
    workspace: Path | None,
    rnd: int,
) -> BankResult:
    from fedseg.synth.train import BankResult

    t0 = time.perf_counter()
    mods = [modality] if phase == "pretrain" and modality is not None else list(present)
    names = trainable_names(cfg.generator, phase, mods)
    rng = np.random.default_rng(seed)
    out = {
        k: (v + (1e-3 * rng.standard_normal(v.shape)).astype(v.dtype)) if k in names else v
        for k, v in weights.items()
    }
    if workspace is not None:
        save_arrays(workspace / f"discriminators_{rnd:04d}.npz",
                    {f"d/{m}/w": np.full(3, float(rnd), np.float32) for m in present})  # fmt: skip
        files = sorted(workspace.glob("discriminators_*.npz"))
        for p in files[:-2]:
            p.unlink()
    return BankResult(out, len(cases), 0.5, 0.25, time.perf_counter() - t0)


def validate_bank(
    cfg: SynthesisConfig, weights: Weights, cases: Sequence[Case], present: Sequence[str]
) -> list[CaseResult]:
    return [
        CaseResult(c.case_id, {m: {"ssim": 0.5, "psnr": 20.0, "mae": 0.1} for m in present})
        for c in cases
    ]
