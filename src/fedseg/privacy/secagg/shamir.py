"""t-of-n secret sharing of secrets of any multiple of 16 bytes.

pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir`` shares one 16-byte block over
GF(2^128); a longer secret is cut into 16-byte blocks, each shared on its own with the
same share indices, and a site's share is its blocks' shares one after the other. Share
index ``i`` (1..n) is the position of the holder in the round's site list plus one.
"""

from __future__ import annotations

from collections.abc import Mapping

from Crypto.Protocol.SecretSharing import Shamir

from fedseg.errors import FedsegError

BLOCK = 16


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


def combine_secret(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (index -> share)."""
    if len(shares) < threshold:
        raise FedsegError(f"{len(shares)} share(s) cannot rebuild a secret shared {threshold}-of-n")
    lengths = {len(s) for s in shares.values()}
    if len(lengths) != 1 or lengths.pop() % BLOCK:
        raise FedsegError("shares of one secret differ in length: a site sent a bad share")
    items = sorted(shares.items())[:threshold]
    size = len(items[0][1])
    out = b""
    for start in range(0, size, BLOCK):
        out += Shamir.combine([(i, s[start : start + BLOCK]) for i, s in items], ssss=False)
    return out
