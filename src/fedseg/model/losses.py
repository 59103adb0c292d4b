"""Training loss of the FeTS recipe: the mirrored soft Dice over the three regions."""

from __future__ import annotations

import torch


def soft_dice(p: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice per sample and channel. p, y: (B, C, X, Y, Z) in [0, 1] -> (B, C)."""
    dims = tuple(range(2, p.ndim))
    inter = (p * y).sum(dims)
    return (2 * inter + eps) / (p.sum(dims) + y.sum(dims) + eps)


def mirrored_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over batch and regions of (Dice(p, y) + Dice(1 - p, 1 - y)) / 2.

    logits: (B, 3, X, Y, Z) raw network output (sigmoid applied here);
    target: (B, 3, X, Y, Z) binary regions ET, TC, WT. The mirrored term keeps the loss
    informative when a region is absent from the patch.
    """
    p = torch.sigmoid(logits)
    y = target.to(p.dtype)
    mirrored = (soft_dice(p, y) + soft_dice(1 - p, 1 - y)) / 2
    return 1 - mirrored.mean()
