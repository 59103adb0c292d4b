"""t-of-n secret sharing of secrets of any multiple of 16 bytes.

pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir`` shares one 16-byte block over
GF(2^128); a longer secret is cut into 16-byte blocks, each shared on its own with the
same share indices, and a site's share is its blocks' shares one after the other. Share
index ``i`` (1..n) is the position of the holder in the round's site list plus one. Shares
are made and read without the ``ssss`` tool's extra term (``ssss=False``). A secret is
rebuilt from the ``threshold`` lowest share indices given.

Rebuilding a round's secrets (``combine_many``): the secret is the interpolating
polynomial's value at x = 0, ``sum_j y_j c_j`` with the Lagrange coefficients
``c_j = prod_{m != j} x_m / prod_{m != j} (x_j + x_m)``, which depend only on the share
indices. ``Shamir.combine`` computes them again for every 16-byte block of every secret,
O(t^2) multiplications per block; in a round every secret is rebuilt from the same answering
sites' shares, so ``combine_many`` computes them once per distinct index set and spends t
multiplications per block (each a pure-Python loop over 128 bits in pycryptodome: that is
what remains of the cost). The only hand-written part is that reuse: the coefficients are
computed exactly as ``Shamir.combine`` computes them, with pycryptodome's own GF(2^128)
element (``_Element``: its multiplication, addition and inverse), and no field arithmetic is
written here. ``combine_secret`` is ``Shamir.combine`` block by block, the reference that
``combine_many`` is checked against byte for byte (tests, ``benchmarks/secure_aggregation.py
--compare``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

# _Element is the field element Shamir.combine itself uses (pycryptodome 3.x, from Flower)
from Crypto.Protocol.SecretSharing import Shamir, _Element

from fedseg.errors import FedsegError

BLOCK = 16

K = TypeVar("K", bound=Hashable)


def split_secret(secret: bytes, threshold: int, n: int) -> list[bytes]:
    """``n`` shares of ``secret`` (share ``i`` for index ``i + 1``); any ``threshold`` of
    them rebuild it, fewer tell nothing about it."""
    if len(secret) % BLOCK or not secret:
        raise ValueError(f"secret length must be a positive multiple of {BLOCK}")
    if not 2 <= threshold <= n:
        raise ValueError(f"threshold {threshold} must be in 2..{n}")
    shares = [b""] * n
    for start in range(0, len(secret), BLOCK):
        block = Shamir.split(threshold, n, secret[start : start + BLOCK], ssss=False)
        for idx, share in block:
            shares[idx - 1] += share
    return shares


def _chosen(shares: Mapping[int, bytes], threshold: int) -> list[tuple[int, bytes]]:
    """The ``threshold`` shares (lowest indices first) that rebuild one secret; FedsegError
    when too few came or they differ in length."""
    if len(shares) < threshold:
        raise FedsegError(f"{len(shares)} share(s) cannot rebuild a secret shared {threshold}-of-n")
    lengths = {len(s) for s in shares.values()}
    if len(lengths) != 1 or lengths.pop() % BLOCK:
        raise FedsegError("shares of one secret differ in length: a site sent a bad share")
    return sorted(shares.items())[:threshold]


def combine_secret(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (index -> share), by pycryptodome's
    ``Shamir.combine`` on each block."""
    items = _chosen(shares, threshold)
    size = len(items[0][1])
    out = b""
    for start in range(0, size, BLOCK):
        out += Shamir.combine([(i, s[start : start + BLOCK]) for i, s in items], ssss=False)
    return out


def lagrange_at_zero(indices: tuple[int, ...]) -> list[_Element]:
    """The coefficients ``c_j`` of ``Shamir.combine`` for these share indices, in its order of
    operations: the secret is ``sum_j y_j c_j``."""
    xs = [_Element(i) for i in indices]
    if len({int(x) for x in xs}) != len(xs):
        raise ValueError("Duplicate share")
    coeffs = []
    for j, x_j in enumerate(xs):
        numerator = _Element(1)
        denominator = _Element(1)
        for m, x_m in enumerate(xs):
            if m != j:
                numerator *= x_m
                denominator *= x_j + x_m
        coeffs.append(numerator * denominator.inverse())
    return coeffs


def combine_many(shares: Mapping[K, Mapping[int, bytes]], threshold: int) -> dict[K, bytes]:
    """Each secret (key -> its shares, index -> share) from at least ``threshold`` shares,
    the same bytes as ``combine_secret`` on each; the Lagrange coefficients are computed once
    per index set. Errors as ``combine_secret``'s, for the first bad secret in ``shares``'
    order, before any is rebuilt."""
    chosen = {key: _chosen(s, threshold) for key, s in shares.items()}
    coeffs: dict[tuple[int, ...], list[_Element]] = {}
    out: dict[K, bytes] = {}
    for key, items in chosen.items():
        indices = tuple(i for i, _ in items)
        if indices not in coeffs:
            coeffs[indices] = lagrange_at_zero(indices)
        c = coeffs[indices]
        parts = []
        for start in range(0, len(items[0][1]), BLOCK):
            acc = _Element(0)
            for c_j, (_, share) in zip(c, items, strict=True):
                acc += _Element(share[start : start + BLOCK]) * c_j
            parts.append(acc.encode())
        out[key] = b"".join(parts)
    return out
