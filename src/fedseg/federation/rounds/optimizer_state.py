"""Optimizer state between rounds: what a site does with its Adam moments.

Modes (plan: ``strategy.params.optimizer_state``):

- ``reset``: every round starts a fresh Adam (nothing kept, nothing sent);
- ``keep-local``: each site keeps its own Adam state in its workspace folder
  (``<data>/.fedseg/<run>/optimizer.npz``), never sent (the FeTS default);
- ``average``: sites send their state with their weights, the aggregator averages it like
  the weights (weighted by training cases) and sends the average out with the next model.

On the wire an optimizer state is plain arrays: ``step`` as a 0-d int64 array and the
moments as ``exp_avg/<param>``, ``exp_avg_sq/<param>`` (``train.local.optimizer_state_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fedseg.federation.rounds.aggregation import weighted_average
from fedseg.model.weights import Weights
from fedseg.train.local import OptimizerState

OptimizerMode = Literal["reset", "keep-local", "average"]
MODES: tuple[str, ...] = ("reset", "keep-local", "average")
STEP = "step"


def state_to_arrays(state: OptimizerState) -> Weights:
    """An optimizer state as arrays (``step`` becomes a 0-d int64 array)."""
    return {k: np.asarray(v, dtype=np.int64) if k == STEP else np.asarray(v)
            for k, v in state.items()}  # fmt: skip


def arrays_to_state(arrays: Weights | None) -> OptimizerState | None:
    """Arrays back to a state ``train_local`` takes; None or a state without steps: None."""
    if not arrays:
        return None
    state: OptimizerState = {k: v for k, v in arrays.items() if k != STEP}
    # ravel: a 0-d array may come back from the wire as shape (1,)
    state[STEP] = int(np.asarray(arrays.get(STEP, 0)).ravel()[0])
    return state if state[STEP] > 0 else None


def average_states(states: Sequence[Weights], weights: Sequence[float]) -> Weights | None:
    """Weighted mean of optimizer states (moments key by key, ``step`` rounded mean).

    States that never stepped (no moments) are left out; None when none is left. Adam's
    second moment averages to a valid (non-negative) second moment, so the result can be
    loaded as it is.
    """
    pairs = [(s, w) for s, w in zip(states, weights, strict=True) if len(s) > 1]
    if not pairs:
        return None
    keys = set(pairs[0][0])
    pairs = [(s, w) for s, w in pairs if set(s) == keys]  # a different network: left out
    ws = [w for _, w in pairs] if sum(w for _, w in pairs) > 0 else [1.0] * len(pairs)
    return weighted_average([s for s, _ in pairs], ws)
