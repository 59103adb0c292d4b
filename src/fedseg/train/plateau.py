"""When a validation curve has stopped rising: the one rule behind ``train.plateau`` (a
federation's rounds, a centralized run's epochs; ``--until-plateau`` on train and compare).

A curve is its scores in order of round (or epoch), a higher score being better (the
round score: mean Dice over ET, TC, WT; a synthesis run's: mean SSIM). The best so far
moves only when a score beats it by more than ``min_delta``; the curve has plateaued once
``rounds`` scored rounds have followed the best without moving it. Unscored rounds (no
validation came back) do not count either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class PlateauConfig(BaseModel):
    """Stop training once the validation score stops rising (``train.plateau``: plan, recipe).
    ``rounds``: scored rounds after the best without a gain of more than ``min_delta``
    (null: never stop early; the run's ``rounds`` or epochs are always the cap)."""

    model_config = ConfigDict(extra="forbid")

    rounds: int | None = Field(
        None, ge=1, description="stop after this many validated rounds without a gain "
        "(null: run every planned round)",
    )  # fmt: skip
    min_delta: float = Field(
        0.001, ge=0, description="a gain in mean Dice must exceed this to count"
    )


def plateau_best(scores: Mapping[int, float], cfg: PlateauConfig) -> int | None:
    """The round of the best score when ``scores`` (round -> score) have plateaued under
    ``cfg``, else None (not yet, or ``cfg.rounds`` is null)."""
    if cfg.rounds is None:
        return None
    best, best_at, since = -math.inf, None, 0
    for rnd in sorted(scores):
        s = scores[rnd]
        if not math.isfinite(s):
            continue
        if best_at is None or s > best + cfg.min_delta:
            best, best_at, since = s, rnd, 0
        else:
            since += 1
    return best_at if best_at is not None and since >= cfg.rounds else None
