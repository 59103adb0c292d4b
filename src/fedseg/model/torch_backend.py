"""PyTorch inference backend: a network as a numpy ``Predictor``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedseg.model.inference import Predictor


def torch_predictor(net: nn.Module) -> Predictor:
    """Predictor calling ``net`` in eval mode without gradients; returns sigmoid probabilities."""
    net.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = net(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
            return torch.sigmoid(logits).numpy()

    return predict
