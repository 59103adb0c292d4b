"""Privacy mechanisms, engine-free and torch-free: the plan's ``privacy`` section
(``config``) and the math the sites and the aggregator share (accounting, fixed point,
clipping, secure-aggregation protocol, homomorphic encryption). Above ``model``, below
``train``: DP-SGD in ``train.dp`` and the rounds in ``federation`` import it."""
