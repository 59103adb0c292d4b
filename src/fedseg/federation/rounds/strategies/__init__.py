"""Federation plans beyond the core's FedAvg, registered by name on import.

``fedavg`` (with participation and optimizer-state treatment), ``fedprox``, ``fedavgm``,
``fedadam``, ``fedyogi``, ``fedadagrad``, ``median``, ``trimmed-mean``, ``krum``, ``cyclic``,
``single-pass``. Each module holds the math as plain functions on ``Weights`` and a small
strategy class that calls it.
"""

from fedseg.federation.rounds.strategies import fedavg, robust, sequential, server_opt

__all__ = ["fedavg", "robust", "sequential", "server_opt"]
