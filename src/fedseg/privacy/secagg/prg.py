"""Masks of secure aggregation: a cryptographic pseudo-random generator.

``mask(seed, name, shape, bits)`` is the ChaCha20 keystream (``cryptography``) under the
32-byte ``seed`` with a nonce drawn from the array's name, read as unsigned ``bits``-bit
words: every array of a model gets its own stream from one seed, and the site and the
aggregator find the same mask from the seed and the name alone. (Flower's SecAgg+ mask
generator folds the seed to 32 bits and draws from MT19937; it is not used here.)
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedseg.privacy.fixed_point import word_dtype

SEED_BYTES = 32


def _nonce(name: str) -> bytes:
    # ChaCha20 in `cryptography` takes 16 bytes: a 4-byte block counter (0) + 12-byte nonce
    return b"\0\0\0\0" + hashlib.sha256(name.encode()).digest()[:12]


def mask(seed: bytes, name: str, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """The mask of array ``name`` (``shape``, ``bits``-bit words) under ``seed``."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes, not {len(seed)}")
    dtype = word_dtype(bits)
    count = int(np.prod(shape, dtype=np.int64))
    enc = Cipher(algorithms.ChaCha20(seed, _nonce(name)), mode=None).encryptor()
    stream = enc.update(bytes(count * dtype.itemsize))
    return np.frombuffer(stream, dtype=dtype).reshape(shape)
