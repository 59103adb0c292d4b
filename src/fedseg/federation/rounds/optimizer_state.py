"""Optimizer state between rounds: what a site does with its Adam moments.

Modes (plan: ``strategy.params.optimizer_state``):

- ``reset``: every round starts a fresh Adam (nothing kept, nothing sent);
- ``keep-local``: each site keeps its own Adam state in its workspace folder
  (``<data>/.fedseg/<run>/optimizer_<round>.npz``, at most two copies: the newest and the
  one its last round started from, which a redone round needs), never sent (the FeTS
  default);
- ``average``: sites send their state with their weights, the aggregator averages it like
  the weights (weighted by training cases) and sends the average out with the next model.

An optimizer state has one form everywhere (``train.local.OptimizerState``): named numpy
arrays, ``step`` a 0-d int64 array and the moments ``exp_avg/<param>``,
``exp_avg_sq/<param>``. ``train_local`` returns and takes it, the engine sends it as it
is, the site saves it with ``model.weights.save_arrays`` and this module averages it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import numpy as np

from fedseg.federation.rounds.aggregation import weighted_average
from fedseg.model.weights import Weights

OptimizerMode = Literal["reset", "keep-local", "average"]
MODES: tuple[OptimizerMode, ...] = get_args(OptimizerMode)
DEFAULT_MODE: OptimizerMode = "keep-local"


def optimizer_mode(text: str) -> OptimizerMode:
    """``text`` as a mode; a ValueError naming the modes when it is none of them."""
    for mode in MODES:
        if text == mode:
            return mode
    raise ValueError(f"optimizer mode {text!r} is unknown; choose one of {', '.join(MODES)}")


def average_states(
    states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
) -> Weights | None:
    """Weighted mean of optimizer states (moments key by key, ``step`` rounded mean).

    States that never stepped (no moments) are left out; None when none is left. Adam's
    second moment averages to a valid (non-negative) second moment, so the result can be
    loaded as it is. A single state comes back with the same values. States parked on disk
    (``spool``) are read array by array, like a streaming strategy's weights.
    """
    pairs = [(s, w) for s, w in zip(states, weights, strict=True) if len(s) > 1]
    if not pairs:
        return None
    keys = set(pairs[0][0])
    pairs = [(s, w) for s, w in pairs if set(s) == keys]  # a different network: left out
    ws = [w for _, w in pairs] if sum(w for _, w in pairs) > 0 else [1.0] * len(pairs)
    return weighted_average([s for s, _ in pairs], ws)
