"""Model weights as plain numpy: the form in which weights travel between sites.

``Weights`` is an ordered ``dict`` name -> array, in the network's ``state_dict`` order,
buffers included (e.g. integer ``num_batches_tracked`` counters of batch norm).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

Weights = dict[str, np.ndarray]


def get_weights(net: nn.Module) -> Weights:
    """Copy of the network's state as numpy arrays (dtypes kept)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def set_weights(net: nn.Module, weights: Weights) -> None:
    """Load ``weights`` into ``net`` (strict: same keys and shapes)."""
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    net.load_state_dict(state, strict=True)
