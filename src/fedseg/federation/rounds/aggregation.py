"""Aggregation math on ``Weights`` (name -> numpy array): checks, weighted means, norms.

Conventions:
- An update is checked against the global model it started from (the reference): same
  keys, same shapes, same dtypes, finite values. A failed check is an ``UpdateRejected``
  whose message is stored as that site's failure; the update is never averaged in.
- Floating arrays (float16/32/64) are averaged in float64 and cast back to their dtype.
- Integer arrays (e.g. batch-norm ``num_batches_tracked`` counters) are averaged in float64
  and rounded to the nearest integer, so a counter stays a count of the same order; boolean
  arrays take the weighted majority. Both keep their dtype.
- The norm bound: an update's change of the global model (its ``difference_norm`` over the
  floating arrays) is clipped to a multiple of the round's lower median change
  (``norm_bound``, ``clip_update``), keeping its direction. Clipping, not rejecting: an
  honest site whose update is merely larger (more cases, more steps, a harder round) still
  counts, with a bounded pull. Only an absurd change (a far larger multiple, which no
  honest site reaches: an update scaled by 1e30) is rejected, so that it shows as such.
  The lower median (the smaller middle value for an even count) stays an honest update's
  norm as long as fewer than half of the updates are inflated, two sites included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedseg.model.weights import Weights


class UpdateRejected(ValueError):
    """A site's update that cannot be aggregated (wrong keys/shapes/dtypes, NaN or Inf)."""


def check_update(update: Weights, reference: Weights) -> None:
    """Raise ``UpdateRejected`` with a one-line reason if ``update`` does not fit ``reference``."""
    missing = [k for k in reference if k not in update]
    extra = [k for k in update if k not in reference]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} arrays (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} unknown arrays (e.g. {extra[0]!r})")
        raise UpdateRejected("wrong keys: " + ", ".join(parts))
    for k, ref in reference.items():
        arr = update[k]
        if not isinstance(arr, np.ndarray):
            raise UpdateRejected(f"{k}: not an array ({type(arr).__name__})")
        if arr.shape != ref.shape:
            raise UpdateRejected(f"{k}: shape {list(arr.shape)}, expected {list(ref.shape)}")
        if arr.dtype != ref.dtype:
            raise UpdateRejected(f"{k}: dtype {arr.dtype}, expected {ref.dtype}")
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            n_bad = int((~np.isfinite(arr)).sum())
            raise UpdateRejected(f"{k}: {n_bad} non-finite values (NaN or Inf)")


def weighted_average(updates: Sequence[Weights], weights: Sequence[float]) -> Weights:
    """Mean of ``updates`` weighted by ``weights`` (e.g. training cases), key by key.

    All updates must have the same keys, shapes and dtypes (run ``check_update`` first).
    The result keeps the first update's key order and each array's dtype.
    """
    if not updates:
        raise ValueError("nothing to average: no updates")
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"aggregation weights must be >= 0 with a positive sum, got {list(w)}")
    w = w / w.sum()
    out: Weights = {}
    for k, first in updates[0].items():
        acc = np.zeros(first.shape, dtype=np.float64)
        for wi, u in zip(w, updates, strict=True):
            acc += wi * u[k].astype(np.float64)
        out[k] = _cast_like(acc, first.dtype)
    return out


def _cast_like(acc: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return acc >= 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(acc), info.min, info.max).astype(dtype)
    return acc.astype(dtype)


def difference_norm(a: Weights, b: Weights) -> float:
    """L2 norm of ``a - b`` over the floating arrays (the trained parameters and running
    statistics; integer counters are left out)."""
    total = 0.0
    for k, x in a.items():
        if x.dtype.kind not in "fc":
            continue
        d = x.astype(np.float64) - b[k].astype(np.float64)
        total += float(np.vdot(d, d).real)
    return float(np.sqrt(total))


def norm_bound(norms: Sequence[float], ratio: float) -> float:
    """``ratio`` times the lower median of ``norms`` (at least one)."""
    ordered = sorted(norms)
    return ratio * ordered[(len(ordered) - 1) // 2]


def clip_update(update: Weights, reference: Weights, max_norm: float) -> Weights:
    """``update`` with its change from ``reference`` scaled down to ``max_norm`` (floating
    arrays; integer and boolean arrays kept); unchanged when it is within the bound."""
    norm = difference_norm(update, reference)
    if norm <= max_norm:
        return update
    f = max_norm / norm
    out: Weights = {}
    for k, x in update.items():
        if x.dtype.kind not in "fc":
            out[k] = x
            continue
        ref = reference[k].astype(np.float64)
        out[k] = (ref + f * (x.astype(np.float64) - ref)).astype(x.dtype)
    return out


def n_bytes(weights: Weights) -> int:
    """Raw size of the arrays in bytes (what a model costs to send, before framing)."""
    return int(sum(v.nbytes for v in weights.values()))
