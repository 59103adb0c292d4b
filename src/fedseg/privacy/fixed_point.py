"""Fixed-point codec of secure aggregation: weighted, clipped updates as unsigned words.

Secure aggregation adds masked integers mod ``2**bits`` (``bits`` 32 or 64), so each site
encodes its weighted update ``w_i * delta_i`` as integers: ``q = round(scale * w_i * x)``
(deterministic rounding to nearest), stored mod ``2**bits`` in two's complement. The sum
of the sites' words mod ``2**bits``, read back as a signed integer and divided by
``scale``, is the weighted sum of the updates.

No wrap-around: each coordinate of a clipped update is at most ``value_range`` in size
(an L2 clip ``C`` bounds every coordinate by ``C``), so the true sum of ``n`` sites is at
most ``scale * W * value_range + n * ROUNDING`` in size, ``W`` the sum of the weights.
``choose_scale`` picks the largest scale that keeps that under ``2**(bits-1)``; ``encode``
clamps each coordinate to ``±value_range`` (the guard: a value outside cannot make the
sum wrap) and reports how many it clamped.

Stated bound (``mean_bound``): each coordinate of the decoded weighted mean differs from
the exact weighted mean of the (clamped) updates by at most ``n * ROUNDING / (scale * W)``
(``n`` rounding errors of at most 1/2 each, plus float64's error in computing the words,
at most ``2**-9`` each, divided by ``scale * W``). For 32 bits, a range of 1 and any
``W``: about ``2.3e-10 * n``; for 64 bits about ``5.7e-14 * n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedseg.errors import FedsegError

#: word sizes secure aggregation computes in
BITS = (32, 64)
#: headroom kept above the largest possible sum (rounding, float error of the scale)
_HEADROOM = 2.0
#: words are computed in float64 before rounding: sums are kept below 2**43, where the
#: float error of ``scale * weight * x`` is at most 2**-9 (a 64-bit word then holds 2**12
#: more precision than a 32-bit one, and all its headroom)
_EXACT = 2.0**43
#: the largest error of one encoded value: rounding plus the float error above
ROUNDING = 0.5 + 2.0**-9


def word_dtype(bits: int) -> np.dtype:
    """The unsigned numpy dtype of a ``bits``-bit word."""
    if bits not in BITS:
        raise FedsegError(f"privacy.secagg.modulus_bits must be 32 or 64, not {bits}")
    return np.dtype(np.uint32 if bits == 32 else np.uint64)


def choose_scale(value_range: float, total_weight: float, n_sites: int, bits: int) -> float:
    """The largest scale with which ``n_sites`` updates, each coordinate at most
    ``value_range`` in size and weighted with weights summing to at most ``total_weight``,
    cannot wrap a signed ``bits``-bit sum. Raises FedsegError when none can."""
    word_dtype(bits)
    if value_range <= 0 or total_weight <= 0 or n_sites < 1:
        raise FedsegError(
            f"fixed point needs a positive range, total weight and site count "
            f"(got {value_range}, {total_weight}, {n_sites})"
        )
    room = min(2.0 ** (bits - 1), _EXACT) - 1 - n_sites * ROUNDING - _HEADROOM
    scale = room / (total_weight * value_range)
    if not np.isfinite(scale) or scale < 1.0:
        raise FedsegError(
            f"{bits}-bit fixed point cannot hold a sum of weight {total_weight:g} over a "
            f"range of {value_range:g}: set privacy.secagg.modulus_bits: 64"
        )
    return float(scale)


def mean_bound(n_sites: int, scale: float, total_weight: float) -> float:
    """Largest per-coordinate error of a decoded weighted mean (see the module doc)."""
    return n_sites * ROUNDING / (scale * total_weight)


@dataclass(frozen=True)
class Encoded:
    """One array encoded: its words and how many coordinates the range clamped."""

    words: np.ndarray
    clamped: int


def encode(x: np.ndarray, weight: float, scale: float, value_range: float, bits: int) -> Encoded:
    """``round(scale * weight * clamp(x, ±value_range))`` mod ``2**bits`` (two's complement)."""
    dtype = word_dtype(bits)
    v = np.asarray(x, dtype=np.float64)
    clamped = int(np.count_nonzero(np.abs(v) > value_range))
    if clamped:
        v = np.clip(v, -value_range, value_range)
    q = np.rint(v * (scale * weight))
    signed = q.astype(np.int32 if bits == 32 else np.int64)
    return Encoded(signed.view(dtype), clamped)


def to_signed(words: np.ndarray, bits: int) -> np.ndarray:
    """Words mod ``2**bits`` as signed integers (two's complement)."""
    return np.asarray(words, dtype=word_dtype(bits)).view(np.int32 if bits == 32 else np.int64)


def decode_sum(words: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """The weighted sum (float64) that the summed ``words`` encode."""
    return to_signed(words, bits).astype(np.float64) / scale
