"""Stand-ins for ``synth.train.train_bank`` and ``synth.validate.validate_bank`` while those
are stubs (helper A's; same signatures): a seeded nudge of exactly the arrays the phase
trains (``model.generator.trainable_names``), one small ``discriminators_<round>.npz`` in
the workspace (the two latest kept, like the real unit's), constant metrics per case and
present modality. They test the federation around the generator's training, not the
training. ``real_training()`` is True once the real functions are in (the tests then use
them). This module imports neither ``synth.train`` nor ``synth.validate`` at its top: the
``sitecustomize`` hook imports it while loading them.

``sitecustomize_dir(folder)`` writes a ``sitecustomize.py`` that puts the stand-ins into
every Python process that has ``folder`` (and this checkout) on ``PYTHONPATH``: the
engine's site app processes of a real-process test.
"""

from __future__ import annotations

import inspect
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

REPO = Path(__file__).resolve().parents[2]


def _is_stub(fn: object) -> bool:
    return "raise NotImplementedError" in inspect.getsource(fn)  # type: ignore[arg-type]


def real_training() -> bool:
    """The real training unit is in (no stand-in needed)."""
    from fedseg.synth import train as synth_train
    from fedseg.synth import validate as synth_validate

    return not (_is_stub(synth_train.train_bank) or _is_stub(synth_validate.validate_bank))


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


_SITECUSTOMIZE = '''"""Test stand-ins for the generator's training unit (bank_stand_in.py)."""
import importlib.machinery
import sys

_TARGETS = {"fedseg.synth.train": "train_bank", "fedseg.synth.validate": "validate_bank"}


class _StandIn:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in _TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            from tests.synthesis import bank_stand_in

            setattr(module, _TARGETS[name], getattr(bank_stand_in, _TARGETS[name]))

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _StandIn)
'''


def sitecustomize_dir(folder: Path) -> str:
    """Write the stand-ins' ``sitecustomize.py`` into ``folder``; the ``PYTHONPATH``
    entries (``folder`` and this checkout) a process needs to get them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return f"{folder}:{REPO}"
