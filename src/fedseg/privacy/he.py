"""Homomorphic encryption of model updates (plan ``privacy.he: ckks``), with TenSEAL's CKKS.
The only module that imports ``tenseal`` (the ``privacy`` extra), and only when it is used.

What travels, and who holds what:

- one **key holder** site per round (``privacy.he.key_holder``, or the first plan site
  connected) makes a CKKS context (:func:`new_keys`) and keeps its secret serialisation in
  its workspace (a 0600 file, ``rounds.he_keys``); the aggregator receives only the public
  serialisation (no secret key: ``is_private()`` is False, checked on every load by
  :func:`public_context`) and gives it to every training site;
- a training site encrypts w_i * (new - global) for the selected arrays
  (:func:`encrypted_names`: the floating arrays whose names match ``privacy.he.layers``, or
  all of them) and sends the other arrays' new values in the clear
  (:func:`encrypt_update`); integer and boolean arrays always travel in the clear;
- the aggregator adds the ciphertexts (:func:`add_chunks`) without being able to read them,
  and asks the key holder to decrypt the sum (:func:`decrypt_chunks`).

Layout: the selected arrays' values, flattened (C order) one after the other in the
weights' order, form one float64 vector, cut into chunks of ``poly_modulus_degree / 2``
values (one CKKS vector each: the number of slots; the last one shorter), encrypted and
serialised (TenSEAL's own format, without the context). Cutting across arrays keeps small
arrays (biases, norms) from taking a ciphertext each. The chunks travel as one uint8 array
(their bytes one after the other, ``he.data``) and one int64 array of their lengths
(``he.len``) (:func:`pack`, :func:`unpack`); a clear array as ``clear/<name>``; the key's
fingerprint (sha256 of the public serialisation) as ``he.key``.

Precision: CKKS is approximate. A fresh ciphertext decrypts to its values plus an error
that does not depend on their size, about ``N * 2**-scale_bits`` (measured: max 1.0e-8,
median 8.0e-9 at N = 8192, scale 2^40; it doubles with N, falls 1024x with 10 more scale
bits). :func:`error_bound` states ``4 * N * 2**-scale_bits`` per ciphertext added (3.0e-8 at
the defaults); a sum of ``n`` ciphertexts is within ``n`` times that of the true sum. Values
must stay well below ``2**(sum(data primes) - scale_bits)`` (2^60 at the defaults): model
updates are many orders below.

Cost (``benchmarks/homomorphic.py``): about 57 bytes per value on the wire (14x float32) and
~4.5 ms per chunk of 4096 values to encrypt on one core; :func:`bytes_per_site` is the
upper bound the plan check uses (no compression: 2 polynomials x N x data primes x 8 bytes
per chunk), and :func:`check_plan` refuses a plan over ``privacy.he.max_bytes_per_site``.

Threat model: honest-but-curious aggregator, and no site colluding with it. The aggregator
never holds the secret key, so it cannot read a single site's encrypted update; it sees
the clear arrays of every site (those outside ``layers``), the weights it chose itself, and
the decrypted mean of the encrypted arrays. The key holder sees only what it is asked to
decrypt: a curious aggregator that sent it one site's ciphertext as "the sum" would get that
site's update decrypted (secure aggregation with its consistency checks is the stronger
option there), and an aggregator that handed the sites a context of its own making would
hold the key. HE cannot check what it cannot read: a site that scales its update is not
detected (no norm bound applies to the encrypted arrays). The key holder is a single point
of failure within a round (its loss between the training and the decryption fails the
round with one line); the next round (or a restart) picks another connected site and a new
key, since every round's ciphertexts stand alone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedseg.errors import FedsegError, PlanError
from fedseg.privacy.config import HeConfig

if TYPE_CHECKING:
    from fedseg.model.config import NetworkConfig

#: payload keys: the ciphertexts' bytes and their lengths; the prefix of a clear array
DATA, LENGTHS, CLEAR_PREFIX = "he.data", "he.len", "clear/"
#: payload key of the key's fingerprint
KEY = "he.key"
_MISSING = "privacy.he needs the privacy extra: pip install 'fedseg[privacy]'"


def tenseal() -> Any:
    """The ``tenseal`` module, or the one-line error saying how to install it."""
    try:
        import tenseal as ts
    except ImportError as exc:
        raise FedsegError(_MISSING) from exc
    return ts


# -- keys ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeKeys:
    """A CKKS context serialised twice: with the secret key (only the key holder keeps it)
    and without (what the aggregator and the training sites get)."""

    secret: bytes
    public: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def new_keys(cfg: HeConfig) -> HeKeys:
    """A fresh CKKS context for ``cfg`` (``poly_modulus_degree``, ``coeff_mod_bit_sizes``,
    ``scale_bits``); no Galois or relinearisation use: updates are only added."""
    ts = tenseal()
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=cfg.poly_modulus_degree,
        coeff_mod_bit_sizes=list(cfg.coeff_mod_bit_sizes),
    )
    ctx.global_scale = 2.0**cfg.scale_bits
    public = ctx.serialize(save_secret_key=False)
    if ts.context_from(public).is_private():  # the one property everything rests on
        raise FedsegError("TenSEAL kept the secret key in the public context; not using it")
    return HeKeys(secret=ctx.serialize(save_secret_key=True), public=public)


def fingerprint(public: bytes) -> str:
    """The key's name: sha256 of its public serialisation (hex, 16 characters)."""
    return hashlib.sha256(public).hexdigest()[:16]


def public_context(public: bytes) -> Any:
    """The TenSEAL context of a public serialisation; raises if it holds a secret key."""
    ctx = tenseal().context_from(bytes(public))
    if ctx.is_private():
        raise FedsegError("privacy.he: the context given as public holds a secret key")
    return ctx


def secret_context(secret: bytes) -> Any:
    ctx = tenseal().context_from(bytes(secret))
    if not ctx.is_private():
        raise FedsegError("privacy.he: the key holder's context has no secret key")
    return ctx


# -- what is encrypted -------------------------------------------------------------------
def selects(name: str, layers: str | Sequence[str]) -> bool:
    """True when ``layers`` (``all`` or weight-name globs) selects the array ``name``."""
    return layers == "all" or any(fnmatch.fnmatchcase(name, g) for g in layers)


def encrypted_names(arrays: Mapping[str, Any], layers: str | Sequence[str]) -> list[str]:
    """The names (in ``arrays``' order) that travel encrypted: floating arrays selected by
    ``layers``. ``arrays`` maps names to arrays or anything with a ``dtype``."""
    return [k for k, v in arrays.items() if np.dtype(v.dtype).kind == "f" and selects(k, layers)]


def slots(cfg: HeConfig) -> int:
    """Values per ciphertext: ``poly_modulus_degree / 2``."""
    return cfg.poly_modulus_degree // 2


def n_chunks(n_values: int, cfg: HeConfig) -> int:
    return max(1, math.ceil(n_values / slots(cfg)))


def chunk_bytes(cfg: HeConfig) -> int:
    """Upper bound of one serialised ciphertext: 2 polynomials x N coefficients x the data
    primes (all but the last of ``coeff_mod_bit_sizes``) x 8 bytes (TenSEAL compresses a
    little below it: 235,097 of 262,144 at the defaults)."""
    return 2 * cfg.poly_modulus_degree * (len(cfg.coeff_mod_bit_sizes) - 1) * 8


def bytes_per_site(n_values: int, cfg: HeConfig) -> int:
    """Upper bound of the ciphertext bytes one site sends per round for ``n_values``
    encrypted values."""
    return n_chunks(n_values, cfg) * chunk_bytes(cfg)


def error_bound(cfg: HeConfig, n_terms: int = 1) -> float:
    """Largest error of a decrypted sum of ``n_terms`` ciphertexts, per value (module doc)."""
    return n_terms * 4.0 * cfg.poly_modulus_degree * 2.0**-cfg.scale_bits


# -- encrypt, add, decrypt ---------------------------------------------------------------
def encrypt_array(ctx: Any, values: np.ndarray, cfg: HeConfig) -> list[bytes]:
    """``values`` (any shape, as float64) as serialised ciphertext chunks under ``ctx``."""
    ts = tenseal()
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    step = slots(cfg)
    if flat.size == 0:
        raise FedsegError("privacy.he: cannot encrypt an empty array")
    return [ts.ckks_vector(ctx, flat[i : i + step]).serialize() for i in range(0, flat.size, step)]


def chunk_sizes(n_values: int, cfg: HeConfig) -> list[int]:
    """Values in each chunk of an encrypted vector of ``n_values`` values."""
    step = slots(cfg)
    return [min(step, n_values - i) for i in range(0, n_values, step)]


def add_chunk(ctx: Any, acc: bytes | None, more: bytes, n_values: int) -> bytes:
    """The serialised sum of two ciphertexts of ``n_values`` values each (``acc`` None:
    ``more`` itself, checked); ValueError when one does not fit (garbage, another size,
    another scale or key: TenSEAL's own checks)."""
    ts = tenseal()
    try:
        vb = ts.ckks_vector_from(ctx, bytes(more))
        if vb.size() != n_values:
            raise ValueError(f"a ciphertext of {vb.size()} values, expected {n_values}")
        if acc is None:
            return bytes(more)
        va = ts.ckks_vector_from(ctx, bytes(acc))
        va.add_(vb)
        return bytes(va.serialize())
    except (RuntimeError, TypeError) as exc:  # TenSEAL's parse and scale errors
        raise ValueError(str(exc)) from exc


def add_chunks(ctx: Any, acc: Sequence[bytes], more: Sequence[bytes]) -> list[bytes]:
    """Chunk-wise sum of two encrypted vectors (same length), serialised."""
    if len(acc) != len(more):
        raise ValueError(f"{len(more)} ciphertexts, expected {len(acc)}")
    ts = tenseal()
    return [add_chunk(ctx, a, b, ts.ckks_vector_from(ctx, bytes(a)).size())
            for a, b in zip(acc, more, strict=True)]  # fmt: skip


def decrypt_chunks(secret_ctx: Any, chunks: Sequence[bytes | memoryview]) -> np.ndarray:
    """The float64 values of an encrypted array (flat), with the secret key."""
    ts = tenseal()
    parts = [np.asarray(ts.ckks_vector_from(secret_ctx, bytes(c)).decrypt(), np.float64)
             for c in chunks]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def pack(chunks: Sequence[bytes | memoryview]) -> tuple[np.ndarray, np.ndarray]:
    """Chunks as one uint8 array of their bytes and one int64 array of their lengths."""
    lengths = np.array([len(c) for c in chunks], np.int64)
    return np.frombuffer(b"".join(chunks), np.uint8), lengths


def unpack(data: np.ndarray, lengths: np.ndarray) -> list[memoryview]:
    """The chunks :func:`pack` packed (views of ``data``, no copy); ValueError when the
    lengths do not fit the bytes."""
    lengths = np.asarray(lengths)
    if data.dtype != np.uint8 or data.ndim != 1 or lengths.ndim != 1 or lengths.dtype.kind != "i":
        raise ValueError("ciphertexts must be a flat uint8 array with int64 lengths")
    if (lengths <= 0).any() or int(lengths.sum()) != data.size:
        raise ValueError(f"ciphertext lengths sum to {int(lengths.sum())}, not {data.size} bytes")
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    ends = np.cumsum(lengths)
    return [view[int(e - n) : int(e)] for n, e in zip(lengths, ends, strict=True)]


def encrypt_update(
    new: Mapping[str, np.ndarray], start: Mapping[str, np.ndarray], weight: float,
    public: bytes, cfg: HeConfig,
) -> dict[str, Any]:  # fmt: skip
    """A site's update as it travels under HE: ``weight * (new - start)`` of the arrays
    :func:`encrypted_names` selects (in ``start``'s order), as one encrypted vector, the
    other arrays' ``new`` values in the clear, and the key's fingerprint (the module doc's
    layout)."""
    if list(new) != list(start):  # the vector's order is the global model's, both sides
        raise FedsegError("privacy.he: the trained weights do not have the model's arrays")
    ctx = public_context(public)
    out: dict[str, Any] = {KEY: fingerprint(public)}
    chosen = encrypted_names(start, cfg.layers)
    for k in [k for k in start if k not in set(chosen)]:
        out[CLEAR_PREFIX + k] = np.asarray(new[k])
    if chosen:
        parts = [np.asarray(new[k], np.float64) - np.asarray(start[k], np.float64) for k in chosen]
        flat = weight * np.concatenate([p.reshape(-1) for p in parts])
        del parts
        if not np.isfinite(flat).all():
            raise FedsegError("privacy.he: the update is not finite; not encrypting it")
        out[DATA], out[LENGTHS] = pack(encrypt_array(ctx, flat, cfg))
    return out


# -- the plan check ----------------------------------------------------------------------
def weight_sizes(network: NetworkConfig) -> dict[str, tuple[int, np.dtype]]:
    """Each array of the network's weights: its number of values and dtype (built on torch's
    meta device: nothing allocated)."""
    import torch

    from fedseg.model.registry import build_network

    with torch.device("meta"):
        net = build_network(network)
    return {k: (t.numel(), np.dtype(str(t.dtype).removeprefix("torch."))) for k, t in
            net.state_dict().items()}  # fmt: skip


def check_plan(cfg: HeConfig, network: NetworkConfig, sites: list[str]) -> None:
    """Refuse (one-line ``PlanError``) a plan's HE (``privacy.he``, on ``network`` with
    ``sites``) that cannot run as asked: fewer than two sites, a key holder not among them,
    layer globs that select nothing, or more ciphertext bytes per site and round than
    ``max_bytes_per_site``. Needs no tenseal."""
    if cfg.scheme == "none":
        return
    if len(sites) < 2:
        raise PlanError("privacy.he needs at least 2 sites: the sum of one site's update is "
                        "that update")  # fmt: skip
    if cfg.key_holder is not None and cfg.key_holder not in sites:
        raise PlanError(f"privacy.he.key_holder {cfg.key_holder!r} is not a plan site "
                        f"({', '.join(sites)})")  # fmt: skip
    sizes = weight_sizes(network)
    names = encrypted_names({k: np.empty(0, d) for k, (_, d) in sizes.items()}, cfg.layers)
    if not names:
        raise PlanError(f"privacy.he.layers {cfg.layers} select no floating weight of the "
                        f"network (names look like {next(iter(sizes))!r})")  # fmt: skip
    n = sum(sizes[k][0] for k in names)
    total = bytes_per_site(n, cfg)
    limit = cfg.max_bytes_per_site
    if total > limit:
        raise PlanError(
            f"privacy.he: encrypting {n:,} values ({len(names)} arrays) sends up to "
            f"{total / 1e9:.2f} GB per site per round, over privacy.he.max_bytes_per_site "
            f"{limit / 1e9:.2f} GB: select fewer layers (e.g. layers: ['ups.*', 'head.*']) or "
            "raise max_bytes_per_site"
        )
