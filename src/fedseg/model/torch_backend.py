"""PyTorch inference backend: a network as a numpy ``Predictor``.

The predictor takes float32 numpy tiles and returns float32 numpy sigmoid probabilities
whatever the device and precision: the network runs where ``ComputeConfig`` places it
(``model.compute.place_network``), tiles are copied there, the forward pass runs under
autocast and the logits are turned into probabilities in float32 before they come back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedseg.model.compute import ComputeConfig, autocast, place_network, to_device
from fedseg.model.inference import Predictor


def torch_predictor(net: nn.Module, compute: ComputeConfig | None = None) -> Predictor:
    """Predictor calling ``net`` in eval mode without gradients; returns sigmoid
    probabilities. ``compute`` places ``net`` (in place); None: fp32 wherever it is."""
    net.eval()
    if compute is None:
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        compute = ComputeConfig(device=str(device), precision="fp32")
    else:
        device = place_network(net, compute)
    precision, channels_last = compute.precision, compute.channels_last

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            with autocast(device, precision):
                logits = net(to_device(x, device, channels_last))
            return torch.sigmoid(logits.float()).contiguous().cpu().numpy()

    return predict
