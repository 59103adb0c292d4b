"""Network registry: config name -> constructor (one place to add an architecture)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fedseg.model.config import NetworkConfig
from fedseg.model.resunet import ResUNet

NETWORKS: dict[str, Callable[[NetworkConfig], nn.Module]] = {"resunet": ResUNet}


def build_network(cfg: NetworkConfig) -> nn.Module:
    """Instantiate the network named by ``cfg.name``."""
    return NETWORKS[cfg.name](cfg)
