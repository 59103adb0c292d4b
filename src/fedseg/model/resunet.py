"""The FeTS 3D residual U-Net.

Layout (C = base filters, level i has C * 2**i filters, i = 0..depth):
- stem: 3x3x3 conv (in -> C), then a residual block at level 0;
- encoder level i >= 1: norm, leaky ReLU, 3x3x3 conv with stride 2 (downsampling), then a
  residual block (norm, lReLU, conv, norm, lReLU, conv, plus identity);
- decoder level i < depth: 2x2x2 transposed conv (2C_i -> C_i), concatenation with the
  encoder's level-i features, norm, lReLU, 3x3x3 conv (2C_i -> C_i), a residual block;
- head: 1x1x1 conv to the output channels. The network returns logits; apply a sigmoid
  per channel (regions overlap).
Input (B, in, X, Y, Z) with X, Y, Z multiples of 2**depth -> output (B, out, X, Y, Z).
"""

from __future__ import annotations

import torch
from torch import nn

from fedseg.model.config import NetworkConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


def _act(cfg: NetworkConfig) -> nn.Module:
    return nn.LeakyReLU(cfg.negative_slope, inplace=True)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, channels: int, cfg: NetworkConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            _norm(cfg.norm, channels),
            _act(cfg),
            nn.Conv3d(channels, channels, 3, padding=1),
            _norm(cfg.norm, channels),
            _act(cfg),
        ]
        if cfg.dropout > 0:
            layers.append(nn.Dropout3d(cfg.dropout))
        layers.append(nn.Conv3d(channels, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Down(nn.Module):
    """Norm, lReLU, strided 3x3x3 conv (c -> 2c), residual block."""

    def __init__(self, c_in: int, c_out: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.down = nn.Sequential(
            _norm(cfg.norm, c_in), _act(cfg), nn.Conv3d(c_in, c_out, 3, stride=2, padding=1)
        )
        self.block = ResidualBlock(c_out, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


class Up(nn.Module):
    """Transposed conv (2c -> c), concat with skip, fuse conv (2c -> c), residual block."""

    def __init__(self, c_in: int, c_out: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(c_in, c_out, 2, stride=2)
        self.fuse = nn.Sequential(
            _norm(cfg.norm, 2 * c_out), _act(cfg), nn.Conv3d(2 * c_out, c_out, 3, padding=1)
        )
        self.block = ResidualBlock(c_out, cfg)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.fuse(torch.cat([self.up(x), skip], dim=1)))


class ResUNet(nn.Module):
    """FeTS residual U-Net; see the module docstring for the layer layout."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.config = cfg
        widths = [cfg.base_filters * 2**i for i in range(cfg.depth + 1)]
        self.stem = nn.Sequential(
            nn.Conv3d(cfg.in_channels, widths[0], 3, padding=1), ResidualBlock(widths[0], cfg)
        )
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], cfg) for i in range(cfg.depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], cfg) for i in range(cfg.depth))
        self.head = nn.Sequential(
            _norm(cfg.norm, widths[0]), _act(cfg), nn.Conv3d(widths[0], cfg.out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in reversed(self.ups):
            y = up(y, skips.pop())
        return self.head(y)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
