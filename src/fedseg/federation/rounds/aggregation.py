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
- The math reads updates key by key, so an update may be any ``Arrays`` mapping: ``Weights``
  in memory, or arrays read back from disk as they are used (``spool.SpooledArrays``, the
  streaming aggregation). ``weighted_average`` holds one float64 accumulator of one array
  at a time; it gives the same numbers whichever kind it reads.
- ``grouped_average`` is the weighted mean with one weight per update *and key group*
  (a generator's ``kernel``, ``bank:<modality>``, ``shared``: ``model.generator.param_group``):
  a key whose group has zero total weight (no site trained it) keeps the reference's array.
  ``weighted_average`` is its one-group case (same numbers); it streams the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from fedseg.model.weights import Weights

#: named arrays held in memory (``Weights``) or read on demand (``spool.SpooledArrays``)
Arrays = Mapping[str, np.ndarray]


class UpdateRejected(ValueError):
    """A site's update that cannot be aggregated (wrong keys/shapes/dtypes, NaN or Inf)."""


def check_update(update: Arrays, reference: Arrays) -> None:
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


def weighted_average(updates: Sequence[Arrays], weights: Sequence[float]) -> Weights:
    """Mean of ``updates`` weighted by ``weights`` (e.g. training cases), key by key.

    All updates must have the same keys, shapes and dtypes (run ``check_update`` first).
    The result keeps the first update's key order and each array's dtype. Each update's
    array is read once per key (a spooled update: from disk, then freed).
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


def without_one(mean: Arrays, total: float, one: Arrays, weight: float) -> Weights:
    """The weighted mean with one member taken out: ``(total * mean - weight * one) / (total
    - weight)``, key by key in float64, each array cast back to ``mean``'s dtype. ``mean``:
    the mean of members whose weights sum to ``total``; ``one``: the member (of ``weight``)
    to take out. Reads ``mean`` and ``one`` once: no other member is needed. ValueError
    when nothing would be left (``weight >= total``)."""
    if not 0 <= weight < total:
        raise ValueError(f"cannot take weight {weight} out of a mean of total weight {total}")
    rest = total - weight
    out: Weights = {}
    for k, ref in mean.items():
        acc = (total * ref.astype(np.float64) - weight * one[k].astype(np.float64)) / rest
        out[k] = _cast_like(acc, ref.dtype)
    return out


def grouped_average(
    updates: Sequence[Arrays],
    weights: Sequence[Mapping[str, float]],
    group: Callable[[str], str],
    reference: Arrays,
) -> Weights:
    """Per key: the mean of ``updates`` weighted by ``weights[u][group(key)]`` (a group an
    update's mapping does not name weighs 0); a key whose group has zero total weight keeps
    ``reference[key]`` (a copy). Keys, order and dtypes are the reference's; every update
    must fit it (``check_update``). Reads each update's array once per key, like
    ``weighted_average``."""
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weight mappings")
    for wu in weights:
        bad = {g: v for g, v in wu.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"aggregation weights must be finite and >= 0, got {bad}")
    totals: dict[str, float] = {}
    out: Weights = {}
    for k, ref in reference.items():
        g = group(k)
        if g not in totals:
            totals[g] = float(sum(float(wu.get(g, 0.0)) for wu in weights))
        total = totals[g]
        if total <= 0:
            out[k] = ref.copy()
            continue
        acc = np.zeros(ref.shape, dtype=np.float64)
        for wu, u in zip(weights, updates, strict=True):
            wi = float(wu.get(g, 0.0))
            if wi > 0:
                acc += (wi / total) * u[k].astype(np.float64)
        out[k] = _cast_like(acc, ref.dtype)
    return out


def _cast_like(acc: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return acc >= 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(acc), info.min, info.max).astype(dtype)
    return acc.astype(dtype)


def difference_norm(a: Arrays, b: Arrays) -> float:
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


def clip_update(
    update: Arrays, reference: Arrays, max_norm: float, norm: float | None = None
) -> Arrays:
    """``update`` with its change from ``reference`` scaled down to ``max_norm`` (floating
    arrays; integer and boolean arrays kept); unchanged when it is within the bound.
    ``norm`` is the update's ``difference_norm`` when the caller knows it already. An update
    in memory (``Weights``) gives ``Weights``; one read on demand (a spool) gives a mapping
    that clips each array as it is read (the same numbers)."""
    norm = difference_norm(update, reference) if norm is None else norm
    if norm <= max_norm:
        return update
    clipped = ClippedArrays(update, reference, max_norm / norm)
    return dict(clipped.items()) if isinstance(update, dict) else clipped


def clip_array(x: np.ndarray, ref: np.ndarray, factor: float) -> np.ndarray:
    """``ref + factor * (x - ref)`` in float64, cast to ``x``'s dtype (floating arrays; the
    others are returned as they are)."""
    if x.dtype.kind not in "fc":
        return x
    r = ref.astype(np.float64)
    return (r + factor * (x.astype(np.float64) - r)).astype(x.dtype)


class ClippedArrays(Mapping[str, np.ndarray]):
    """``update``'s change from ``reference`` scaled by ``factor``, array by array as read."""

    def __init__(self, update: Arrays, reference: Arrays, factor: float) -> None:
        self.update, self.reference, self.factor = update, reference, factor

    def __getitem__(self, key: str) -> np.ndarray:
        return clip_array(self.update[key], self.reference[key], self.factor)

    def __iter__(self) -> Iterator[str]:
        return iter(self.update)

    def __len__(self) -> int:
        return len(self.update)


def n_bytes(weights: Arrays) -> int:
    """Raw size of the arrays in bytes (what a model costs to send, before framing)."""
    return int(sum(v.nbytes for v in weights.values()))
