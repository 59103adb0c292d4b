"""Network registry: config name -> constructor (one place to add an architecture).

``new_network`` is how every network is made (site, aggregator, centralized run): the
architecture from the registry, its random init drawn from a seed (torch's global RNG is
left as it was), or given weights loaded into it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedseg.model.config import NetworkConfig
from fedseg.model.resunet import ResUNet
from fedseg.model.weights import Weights, set_weights

NETWORKS: dict[str, Callable[[NetworkConfig], nn.Module]] = {"resunet": ResUNet}


def build_network(cfg: NetworkConfig) -> nn.Module:
    """Instantiate the network named by ``cfg.name``."""
    return NETWORKS[cfg.name](cfg)


def new_network(network: NetworkConfig, weights: Weights | None, seed: int) -> nn.Module:
    """The network with ``weights``, or freshly initialized from ``seed`` when None."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(network)
    if weights is not None:
        set_weights(net, weights)
    return net
