"""Typed network configuration. Defaults are the FeTS recipe; CPU work overrides them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class NetworkConfig(BaseModel):
    """A segmentation network, by registry name and its hyper-parameters.

    FeTS: 3D residual U-Net, 30 base filters doubling over 4 downsamplings (30 -> 480),
    instance norm, leaky ReLU, 4 input channels (T1, T1Gd, T2, FLAIR), 3 sigmoid outputs
    (ET, TC, WT).
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["resunet"] = "resunet"
    in_channels: int = Field(4, ge=1)
    out_channels: int = Field(3, ge=1)
    base_filters: int = Field(30, ge=1, description="filters at full resolution")
    depth: int = Field(4, ge=1, le=6, description="number of downsamplings")
    norm: Literal["instance", "batch", "group", "none"] = "instance"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    negative_slope: float = Field(0.01, ge=0.0, description="leaky ReLU slope")

    @property
    def divisor(self) -> int:
        """Patch sides must be multiples of this (2 ** depth)."""
        return 2**self.depth
