"""One site's local round of the generator (``train_bank``): pre-training of the kernel on
one modality, or the bank phase (every present modality against this site's own
discriminators, which live in the site's workspace only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedseg.data.cases import Case
from fedseg.model.weights import Weights
from fedseg.synth.config import SynthesisConfig

Phase = Literal["pretrain", "bank"]


@dataclass
class BankResult:
    """``weights``: the whole generator (untrained arrays bit-identical to the input);
    ``n_train``: training cases used; losses are means over the round's steps."""

    weights: Weights
    n_train: int
    train_loss: float
    d_loss: float | None
    wall_s: float


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
    """Train for ``steps`` optimizer steps. ``phase='pretrain'``: W, b_conv and the bank of
    ``modality`` only; ``'bank'``: the banks of ``present`` (W frozen; absent banks get no
    gradient). Discriminators and Adam states: ``workspace/discriminators_<rnd>.npz``."""
    raise NotImplementedError  # helper A
