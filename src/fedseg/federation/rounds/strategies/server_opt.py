"""Server optimizers: FedAvgM (Hsu et al. 2019) and FedAdam, FedYogi, FedAdagrad (Reddi et
al. 2021, "Adaptive federated optimization", Algorithm 2).

The round's pseudo-gradient is ``delta = fedavg(updates) - x`` (x: the global model). Then

- FedAvgM:    ``v = beta * v + delta``;                 ``x += server_lr * v``
- adaptive:   ``m = beta1 * m + (1 - beta1) * delta``, and
  FedAdagrad  ``v = v + delta^2``
  FedAdam     ``v = beta2 * v + (1 - beta2) * delta^2``
  FedYogi     ``v = v - (1 - beta2) * delta^2 * sign(v - delta^2)``;
  ``x += server_lr * m / (sqrt(v) + tau)``.

Moments start at 0. Only floating arrays take the optimizer step; integer arrays (counters)
take the FedAvg mean. The moments are checkpointed with every round (``state_dict``), under
the namespaces ``m/`` and ``v/``. All four stream (``Strategy.streams``: the weighted mean is
folded from the updates one by one); the server step itself holds the float64 pseudo-gradient
and moments, a few models' worth whatever the number of sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.parallel import (
    ParallelParams,
    ParallelStrategy,
    fedavg_weights,
)
from fedseg.model.weights import Weights, nest, unnest

Adaptive = Literal["adam", "yogi", "adagrad"]


def pseudo_gradient(global_weights: Weights, mean: Weights) -> dict[str, np.ndarray]:
    """``mean - global`` in float64 for the floating arrays."""
    return {k: mean[k].astype(np.float64) - g.astype(np.float64)
            for k, g in global_weights.items() if g.dtype.kind == "f"}  # fmt: skip


def momentum_step(
    x: Weights, delta: dict[str, np.ndarray], v: dict[str, np.ndarray] | None,
    server_lr: float, beta: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """FedAvgM: (new floating arrays of x, new momentum)."""
    v_new = {k: (beta * v[k] if v else 0.0) + d for k, d in delta.items()}
    x_new = {k: (x[k].astype(np.float64) + server_lr * v_new[k]).astype(x[k].dtype)
             for k in delta}  # fmt: skip
    return x_new, v_new


def adaptive_step(
    kind: Adaptive, x: Weights, delta: dict[str, np.ndarray],
    m: dict[str, np.ndarray] | None, v: dict[str, np.ndarray] | None,
    server_lr: float, beta1: float, beta2: float, tau: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """One FedAdam/FedYogi/FedAdagrad step: (new floating arrays of x, m, v)."""
    x_new, m_new, v_new = {}, {}, {}
    for k, d in delta.items():
        mk = beta1 * (m[k] if m else 0.0) + (1 - beta1) * d
        vk = v[k] if v else np.zeros_like(d)
        d2 = d * d
        if kind == "adagrad":
            vk = vk + d2
        elif kind == "adam":
            vk = beta2 * vk + (1 - beta2) * d2
        else:  # yogi: v moves towards d^2 by at most (1 - beta2) d^2 per round
            vk = vk - (1 - beta2) * d2 * np.sign(vk - d2)
        m_new[k], v_new[k] = mk, vk
        x_new[k] = (x[k].astype(np.float64) + server_lr * mk / (np.sqrt(vk) + tau)).astype(
            x[k].dtype
        )
    return x_new, m_new, v_new


class FedAvgMParams(ParallelParams):
    server_lr: float = Field(1.0, gt=0)
    beta: float = Field(0.9, ge=0, lt=1, description="server momentum")
    weighted: bool = True


class AdaptiveParams(ParallelParams):
    server_lr: float = Field(0.01, gt=0, description="server learning rate (eta)")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0, description="adaptivity (epsilon) of the server step")
    weighted: bool = True


class FedAvgM(ParallelStrategy[FedAvgMParams]):
    """FedAvg with server momentum ``beta`` and server learning rate ``server_lr``."""

    streams = True

    def __init__(self, params: FedAvgMParams, local_epochs: int) -> None:
        super().__init__(params, local_epochs)
        self.v: dict[str, np.ndarray] | None = None

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        p = self.params
        mean = fedavg_weights(updates, p.weighted)
        delta = pseudo_gradient(global_weights, mean)
        x_new, self.v = momentum_step(global_weights, delta, self.v, p.server_lr, p.beta)
        return {**mean, **x_new}

    def state_dict(self) -> Weights:
        return {**super().state_dict(), **nest("v", self.v)}

    def load_state_dict(self, state: Weights) -> None:
        super().load_state_dict(state)
        self.v = unnest("v", state) or None


class _Adaptive(ParallelStrategy[AdaptiveParams]):
    kind: ClassVar[Adaptive] = "adam"
    streams = True

    def __init__(self, params: AdaptiveParams, local_epochs: int) -> None:
        super().__init__(params, local_epochs)
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        p = self.params
        mean = fedavg_weights(updates, p.weighted)
        delta = pseudo_gradient(global_weights, mean)
        x_new, self.m, self.v = adaptive_step(
            self.kind, global_weights, delta, self.m, self.v,
            p.server_lr, p.beta1, p.beta2, p.tau,
        )  # fmt: skip
        return {**mean, **x_new}

    def state_dict(self) -> Weights:
        return {**super().state_dict(), **nest("m", self.m), **nest("v", self.v)}

    def load_state_dict(self, state: Weights) -> None:
        super().load_state_dict(state)
        self.m, self.v = unnest("m", state) or None, unnest("v", state) or None


class FedAdam(_Adaptive):
    """FedAdam: Adam on the server over the rounds' pseudo-gradients."""

    kind = "adam"


class FedYogi(_Adaptive):
    """FedYogi: Yogi's additive second-moment update on the server."""

    kind = "yogi"


class FedAdagrad(_Adaptive):
    """FedAdagrad: Adagrad's accumulated second moment on the server."""

    kind = "adagrad"
