"""Adam state as named arrays: the one form of an optimizer state, on the wire, on disk and
in averages (segmentation's ``train.local`` and synthesis' ``synth.train`` both use it).

``OptimizerState`` holds ``step`` (0-d int64) and ``exp_avg/<param>``, ``exp_avg_sq/<param>``
(float32, the parameter's shape), parameters named as in ``net.named_parameters()``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedseg.model.weights import Weights

#: Adam's per-parameter moments, stored under ``"<moment>/<parameter name>"``.
MOMENTS: tuple[str, ...] = ("exp_avg", "exp_avg_sq")
#: the optimizer steps taken, a 0-d int64 array
STEP = "step"

#: Adam state as named arrays: ``step`` (0-d int64) and ``exp_avg/<param>``,
#: ``exp_avg_sq/<param>`` (float32, the parameter's shape). The one form of an optimizer
#: state: on the wire, on disk and in averages.
OptimizerState = Weights


def optimizer_steps(state: OptimizerState | None) -> int:
    """The steps an optimizer state has taken (0 for None or a state without ``step``).
    ``ravel``: a 0-d step saved by an older writer may have come back with shape (1,)."""
    if not state or STEP not in state:
        return 0
    return int(np.asarray(state[STEP]).ravel()[0])


def optimizer_state_dict(opt: torch.optim.Adam, net: nn.Module) -> OptimizerState:
    """Adam state as ``OptimizerState``: ``{"step": 0-d int64, "exp_avg/<param>": array,
    "exp_avg_sq/<param>": array}``.

    Parameters are named as in ``net.named_parameters()`` (the weights' keys). An optimizer
    that has not stepped yet gives ``{"step": 0}``.
    """
    step = 0
    moments: OptimizerState = {}
    for name, p in net.named_parameters():
        st = opt.state.get(p)
        if not st:
            continue
        step = int(float(st["step"]))
        for m in MOMENTS:
            moments[f"{m}/{name}"] = st[m].detach().cpu().numpy().copy()
    return {STEP: np.array(step, dtype=np.int64), **moments}


def load_optimizer_state(opt: torch.optim.Adam, net: nn.Module, state: OptimizerState) -> None:
    """Put a state made by ``optimizer_state_dict`` (possibly averaged, sent or saved) back
    into ``opt``; a state that never stepped leaves ``opt`` fresh. The moments go to each
    parameter's device and memory format."""
    step = optimizer_steps(state)
    if step <= 0:
        return
    for name, p in net.named_parameters():
        if f"exp_avg/{name}" not in state:
            continue
        opt.state[p] = {
            "step": torch.tensor(float(step)),
            **{m: tensor_like(p, state[f"{m}/{name}"]) for m in MOMENTS},
        }


def tensor_like(p: torch.Tensor, array: np.ndarray) -> torch.Tensor:
    """``array`` as a float32 tensor with ``p``'s shape, device and memory format."""
    values = torch.from_numpy(np.array(array, dtype=np.float32)).reshape(p.shape)
    if p.device.type == "cpu" and p.is_contiguous():
        return values
    return torch.empty_like(p, dtype=torch.float32).copy_(values)
