"""The learning rate of a round: ``round_lr``, the one formula of ``train.lr_schedule``.

Rounds are numbered from 1; a federation's round is a global round (every site trains the
whole round at its lr, ``federation.rounds.site``), a centralized run's round is an epoch
(``commands.central_training``). Plain arithmetic, torch-free.
"""

from __future__ import annotations

import math

from fedseg.train.config import LrScheduleConfig


def round_lr(base_lr: float, schedule: LrScheduleConfig, round: int, planned_rounds: int) -> float:
    """The lr of round ``round`` (from 1) of ``planned_rounds``, ``base_lr`` being the
    recipe's ``train.lr``.

    With W = ``warmup_rounds``: round r <= W gives ``base_lr * r / (W + 1)``. After it,
    with t = r - W - 1 (0 in the first round after the warmup):

    * constant: ``base_lr``;
    * step: ``base_lr * step_factor ** (t // step_every)``;
    * cosine: ``base_lr * (1 + cos(pi * t / T)) / 2`` with T = ``planned_rounds - W`` (at
      least 1), so the first round after the warmup trains at ``base_lr`` and the last one
      above 0; a round past the plan trains at the last round's lr.
    """
    if round < 1:
        raise ValueError(f"rounds are numbered from 1, not {round}")
    w = schedule.warmup_rounds
    if round <= w:
        return base_lr * round / (w + 1)
    t = round - w - 1
    if schedule.kind == "constant":
        return base_lr
    if schedule.kind == "step":
        assert schedule.step_every is not None  # LrScheduleConfig requires it for step
        return base_lr * schedule.step_factor ** (t // schedule.step_every)
    if planned_rounds < 1:
        raise ValueError("a cosine lr schedule needs the planned number of rounds")
    span = max(planned_rounds - w, 1)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(t, span - 1) / span))
