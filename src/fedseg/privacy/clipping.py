"""Clipping and Gaussian noise on weights (name -> numpy array), for site-level DP.
Torch-free plain functions, the same at a site and at the aggregator.

Conventions: an update is ``new - reference`` over the floating arrays only (integer
counters and boolean arrays carry no update: they are left out, and ``apply_update`` keeps
the reference's); norms are L2 over all floating arrays together, in float64; results keep
each array's dtype. Noise comes from a ``numpy.random.Generator`` the caller seeds (the
aggregator draws from ``SeedSequence`` entropy, never from a plan seed: noise anybody can
replay protects nothing).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]


def _floating(x: np.ndarray) -> bool:
    return x.dtype.kind in "fc"


def update_of(new: Arrays, reference: Arrays) -> dict[str, np.ndarray]:
    """``new - reference`` in float64 for each floating array of ``reference``."""
    return {
        k: new[k].astype(np.float64) - ref.astype(np.float64)
        for k, ref in reference.items()
        if _floating(ref)
    }


def l2_norm(update: Arrays) -> float:
    """L2 norm over all arrays of ``update`` together (float64)."""
    return float(np.sqrt(sum(float(np.vdot(v, v).real) for v in update.values())))


def clip(update: Arrays, clip_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """``update`` scaled down to L2 norm ``clip_norm`` when it is longer (kept otherwise),
    and its norm before clipping."""
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    norm = l2_norm(update)
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: np.asarray(v, dtype=np.float64) * factor for k, v in update.items()}, norm


def add_noise(update: Arrays, std: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``update`` plus independent N(0, std²) on every value (float64)."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    return {
        k: np.asarray(v, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(v))
        for k, v in update.items()
    }


def apply_update(reference: Arrays, update: Arrays) -> dict[str, np.ndarray]:
    """``reference + update`` for the floating arrays in ``update`` (cast to the reference's
    dtype); the other arrays of ``reference`` as they are."""
    out: dict[str, np.ndarray] = {}
    for k, ref in reference.items():
        if k in update and _floating(ref):
            out[k] = (ref.astype(np.float64) + update[k]).astype(ref.dtype)
        else:
            out[k] = ref
    return out
