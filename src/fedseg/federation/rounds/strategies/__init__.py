"""Federation strategies: which sites do what each round, and how their results combine.

``base`` (the ``Strategy`` class, task and update values, the optimizer-state treatment),
``parallel`` (participation; the parallel plans' base), ``fedavg`` (``fedavg``,
``fedprox``), ``server_opt`` (``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``),
``robust`` (``median``, ``trimmed-mean``, ``krum``), ``sequential`` (``cyclic``,
``single-pass``), ``modality`` (``modality-fedavg``: the ModalityBank generator, per
weight group), ``site_selection`` (``fastest-k``, ``select-utility``: trainers chosen by
simulated speed and utility), and ``registry`` (name -> class, ``make_strategy``). Each module holds
its math as plain functions on ``Weights`` and small classes that call it.
"""
