"""Mirrored soft Dice loss on tensors whose answer is known."""

from __future__ import annotations

import torch

from fedseg.model.losses import mirrored_dice_loss


def test_perfect_prediction_gives_about_zero() -> None:
    y = (torch.rand(2, 3, 6, 6, 6) > 0.5).float()
    logits = (y * 2 - 1) * 30  # sigmoid -> 1 on y, ~1e-13 elsewhere
    assert mirrored_dice_loss(logits, y).item() < 1e-5


def test_hand_computed_value_at_p_one_half() -> None:
    # Logits 0 -> p = 0.5 on N = 8 voxels. Dice(p, y) = 2 * 0.5k / (0.5N + k) and
    # Dice(1-p, 1-y) = 2 * 0.5(N-k) / (0.5N + N - k), with k voxels of y set:
    #   ET k=0: (0 + 8/12) / 2 = 1/3;  TC k=4: (4/8 + 4/8) / 2 = 1/2;  WT k=8: (8/12 + 0) / 2 = 1/3
    # mean = 7/18, loss = 11/18 (the eps of 1e-5 moves this by < 1e-6).
    y = torch.zeros(1, 3, 2, 2, 2)
    y[0, 1, 0] = 1  # 4 of 8 voxels
    y[0, 2] = 1
    loss = mirrored_dice_loss(torch.zeros(1, 3, 2, 2, 2), y)
    assert abs(loss.item() - 11 / 18) < 1e-5


def test_inverted_prediction_is_about_one() -> None:
    y = (torch.rand(1, 3, 4, 4, 4) > 0.5).float()
    y[..., 0, 0, 0], y[..., 1, 0, 0] = 1, 0  # every channel has both classes
    assert mirrored_dice_loss((1 - 2 * y) * 30, y).item() > 1 - 1e-4


def test_gradient_flows_and_descends() -> None:
    torch.manual_seed(0)
    y = (torch.rand(1, 3, 4, 4, 4) > 0.5).float()
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    loss = mirrored_dice_loss(logits, y)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = logits - 10 * logits.grad
    assert mirrored_dice_loss(stepped, y) < loss
