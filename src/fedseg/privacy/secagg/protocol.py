"""The stages of secure aggregation as pure functions of plain values (no engine, no torch).

One round, for the sites ``S`` (ordered as the aggregator lists them; a site's Shamir
index is its position + 1) and threshold ``t``:

1. keys (``site_keys``): each site makes fresh round keys and signs their public halves
   with its consortium key;
2. shares (``site_shares``): each site checks every peer's signed keys, draws its self-mask
   seed ``b``, shares ``b`` and its mask secret key t-of-n and seals each peer's pair of
   shares to that peer; the aggregator relays the sealed shares. The sites that completed
   this stage are the round's ``peers``;
3. masked update (``site_receive``, ``site_mask``): each peer opens its inbound shares and
   sends ``y = q + PRG(b) + sum_{v after it} PRG(s_uv) - sum_{v before it} PRG(s_uv)``
   mod ``2**bits``, ``q`` its fixed-point update and ``s_uv`` the pairwise seed;
4. unmask (``site_unmask``): the aggregator names the peers in the sum (``included``: their
   masked update arrived and was accepted) and the others (``dropped``); each answering
   site returns its shares of ``b`` for the included and of the mask key for the dropped.
   A site never reveals both of one site's secrets in a round (that would let the
   aggregator unmask that site's update alone), and answers only when at least ``t``
   sites are included.

The aggregator (``rebuild``, ``correction``) rebuilds each included site's ``b`` and each
dropped site's mask key from ``t`` shares, and subtracts the self masks of the included
and their pairwise masks with the dropped: the pairwise masks among the included cancel.
A site included that dies before answering stage 4 stays in the sum (its ``b`` is rebuilt
from the others' shares); only a site known gone before stage 4 is left out.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fedseg.errors import FedsegError
from fedseg.privacy.fixed_point import word_dtype
from fedseg.privacy.secagg.keys import (
    RoundKeys,
    decrypt_share,
    encrypt_share,
    pair_seed,
    public_of,
    sign_keys,
    verify_keys,
)
from fedseg.privacy.secagg.prg import SEED_BYTES, mask
from fedseg.privacy.secagg.shamir import combine_many, split_secret

#: fewest sites a secure sum may have: with two, each learns the other's update from it
MIN_SITES = 3


def default_threshold(n: int) -> int:
    """``ceil(2n/3)``, at least 2 and more than half of ``n``."""
    return max(2, math.ceil(2 * n / 3), n // 2 + 1)


def check_threshold(threshold: int, n: int) -> None:
    """A site takes part only with at least ``MIN_SITES`` sites and ``n/2 < t <= n``."""
    if n < MIN_SITES:
        raise FedsegError(
            f"secure aggregation needs at least {MIN_SITES} sites in a round, got {n} "
            "(with 2, each learns the other's update from the sum)"
        )
    if not n // 2 + 1 <= threshold <= n:
        raise FedsegError(
            f"secure aggregation threshold {threshold} is outside {n // 2 + 1}..{n} for {n} "
            "sites: a lower one lets a minority rebuild secrets"
        )


@dataclass(frozen=True)
class SignedKeys:
    """A site's public round keys, signed with its consortium key, and its certificate."""

    mask_pub: bytes
    transport_pub: bytes
    signature: bytes
    cert_pem: bytes


@dataclass
class SiteState:
    """What a site remembers between the stages of one round (never leaves the site)."""

    run_id: str
    round: int
    site: str
    mask_sk: bytes
    transport_sk: bytes
    sites: list[str] = field(default_factory=list)
    threshold: int = 0
    mask_pubs: dict[str, bytes] = field(default_factory=dict)
    transport_pubs: dict[str, bytes] = field(default_factory=dict)
    self_seed: bytes = b""
    #: source site -> (its share of b, its share of its mask key), own included
    held: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    peers: list[str] = field(default_factory=list)
    masked: bool = False
    revealed_seed: list[str] = field(default_factory=list)
    revealed_key: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        d = asdict(self)
        return json.dumps(d, default=lambda b: {"hex": b.hex()}).encode()

    @staticmethod
    def from_bytes(raw: bytes) -> SiteState:
        def unhex(v: object) -> object:
            if isinstance(v, dict) and set(v) == {"hex"}:
                return bytes.fromhex(v["hex"])
            if isinstance(v, dict):
                return {k: unhex(x) for k, x in v.items()}
            if isinstance(v, list):
                return [unhex(x) for x in v]
            return v

        d = unhex(json.loads(raw))
        assert isinstance(d, dict)
        d["held"] = {k: (v[0], v[1]) for k, v in d["held"].items()}
        return SiteState(**d)

    def check_round(self, run_id: str, rnd: int) -> None:
        if (self.run_id, self.round) != (run_id, rnd):
            raise FedsegError(
                f"secure aggregation message for round {rnd} of run {run_id!r}, but this site "
                f"holds keys of round {self.round} of run {self.run_id!r}: refused"
            )


def pair_sign(sites: list[str], u: str, v: str) -> int:
    """+1 when ``u`` adds the pairwise mask with ``v`` (``u`` listed first), else -1."""
    return 1 if sites.index(u) < sites.index(v) else -1


# -- site ----------------------------------------------------------------------------------


def site_keys(
    site: str, run_id: str, rnd: int, site_key: ec.EllipticCurvePrivateKey, cert_pem: bytes
) -> tuple[SiteState, SignedKeys]:
    """Stage 1: fresh round keys, their public halves signed with the consortium key."""
    keys = RoundKeys.new()
    sig = sign_keys(site_key, run_id, rnd, site, keys.mask_public, keys.transport_public)
    state = SiteState(run_id, rnd, site, keys.mask, keys.transport)
    return state, SignedKeys(keys.mask_public, keys.transport_public, sig, cert_pem)


def site_shares(
    state: SiteState, ca_cert: x509.Certificate, keys: Mapping[str, SignedKeys], threshold: int
) -> dict[str, bytes]:
    """Stage 2: check every site's signed keys (ours must be ours), draw ``b``, and seal
    each other site's shares of ``b`` and of our mask key to it. In place on ``state``."""
    sites = list(keys)
    check_threshold(threshold, len(sites))
    me = state.site
    mine = keys.get(me)
    if mine is None or (mine.mask_pub, mine.transport_pub) != (
        public_of(state.mask_sk),
        public_of(state.transport_sk),
    ):
        raise FedsegError("the aggregator relayed other keys as this site's own: refused")
    for site, k in keys.items():
        verify_keys(ca_cert, k.cert_pem, state.run_id, state.round, site,
                    k.mask_pub, k.transport_pub, k.signature)  # fmt: skip
    if len({k.mask_pub for k in keys.values()}) != len(sites):
        raise FedsegError("two sites sent the same round key: refused")
    state.sites, state.threshold = sites, threshold
    state.mask_pubs = {s: k.mask_pub for s, k in keys.items()}
    state.transport_pubs = {s: k.transport_pub for s, k in keys.items()}
    state.self_seed = os.urandom(SEED_BYTES)
    seed_shares = split_secret(state.self_seed, threshold, len(sites))
    key_shares = split_secret(state.mask_sk, threshold, len(sites))
    out = {}
    for i, dst in enumerate(sites):
        if dst == me:
            state.held[me] = (seed_shares[i], key_shares[i])
            continue
        out[dst] = encrypt_share(state.transport_sk, state.transport_pubs[dst],
                                 seed_shares[i] + key_shares[i],
                                 state.run_id, state.round, me, dst)  # fmt: skip
    return out


def site_receive(state: SiteState, peers: list[str], sealed: Mapping[str, bytes]) -> None:
    """Stage 3, first half: open the shares the other ``peers`` sealed to us; the peers
    (the sites that completed stage 2, us among them) are then fixed for the round."""
    me = state.site
    unknown = [p for p in peers if p not in state.sites]
    if unknown or me not in peers or len(set(peers)) != len(peers):
        raise FedsegError("the aggregator's peer list does not match the round's sites: refused")
    if len(peers) < state.threshold:
        raise FedsegError(
            f"only {len(peers)} sites completed the key stages, threshold is {state.threshold}"
        )
    if state.peers and state.peers != peers:
        raise FedsegError("the aggregator changed the round's peers: refused")
    for src in peers:
        if src == me:
            continue
        if src not in sealed:
            raise FedsegError(f"no share from site {src!r} among the relayed shares")
        plain = decrypt_share(state.transport_sk, state.transport_pubs[src], sealed[src],
                              state.run_id, state.round, src, me)  # fmt: skip
        if len(plain) != SEED_BYTES + len(state.mask_sk):  # a share is as long as its secret
            raise FedsegError(f"the share from site {src!r} has the wrong length")
        state.held[src] = (plain[:SEED_BYTES], plain[SEED_BYTES:])
    state.peers = list(peers)


def site_mask(
    state: SiteState, words: Mapping[str, np.ndarray], bits: int
) -> dict[str, np.ndarray]:
    """Stage 3, second half: our fixed-point update, masked (mod ``2**bits``)."""
    if not state.peers:
        raise FedsegError("no peers for this round: the key stages did not complete")
    if state.masked:
        raise FedsegError("this site already sent its masked update this round: refused")
    dtype = word_dtype(bits)
    me = state.site
    seeds = [(pair_seed(state.mask_sk, state.mask_pubs[v]), pair_sign(state.sites, me, v))
             for v in state.peers if v != me]  # fmt: skip
    out = {}
    for name, q in words.items():
        y = np.array(q, dtype=dtype, copy=True)
        y += mask(state.self_seed, name, y.shape, bits)
        for seed, sign in seeds:
            m = mask(seed, name, y.shape, bits)
            if sign > 0:
                y += m
            else:
                y -= m
        out[name] = y
    state.masked = True
    return out


def site_unmask(
    state: SiteState, included: list[str], dropped: list[str]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Stage 4: our shares of ``b`` for the ``included`` and of the mask key for the
    ``dropped`` (site -> share). Refused when a site would be in both, when fewer than the
    threshold are included, or when we revealed the other secret of one of them before."""
    me = state.site
    inc, drop = set(included), set(dropped)
    if inc & drop:
        raise FedsegError(
            f"asked for both secrets of {', '.join(sorted(inc & drop))}: refused (the "
            "aggregator could unmask that site's update alone)"
        )
    if not inc | drop <= set(state.peers):
        raise FedsegError("asked to unmask sites that are not this round's peers: refused")
    if me in drop:
        raise FedsegError("this site is listed as dropped: refused")
    if len(inc) < state.threshold:
        raise FedsegError(
            f"only {len(inc)} sites in the sum, threshold is {state.threshold}: refused"
        )
    twice = (inc & set(state.revealed_key)) | (drop & set(state.revealed_seed))
    if twice:
        raise FedsegError(
            f"already revealed the other secret of {', '.join(sorted(twice))} this round: "
            "refused (the aggregator could unmask that site's update alone)"
        )
    seed_shares = {u: state.held[u][0] for u in included}
    key_shares = {v: state.held[v][1] for v in dropped}
    state.revealed_seed = sorted(set(state.revealed_seed) | inc)
    state.revealed_key = sorted(set(state.revealed_key) | drop)
    return seed_shares, key_shares


# -- aggregator ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuilt:
    """The secrets the aggregator rebuilt: the included sites' self-mask seeds and the
    dropped sites' mask secret keys."""

    self_seeds: dict[str, bytes]
    mask_keys: dict[str, bytes]


def rebuild(
    sites: list[str], threshold: int, mask_pubs: Mapping[str, bytes],
    answers: Mapping[str, tuple[Mapping[str, bytes], Mapping[str, bytes]]],
    included: Iterable[str], dropped: Iterable[str],
) -> Rebuilt:  # fmt: skip
    """Rebuild from the sites' stage-4 answers (answering site -> (seed shares, key
    shares)); FedsegError when fewer than ``threshold`` shares of a secret came, or a
    rebuilt mask key does not match its site's signed public key."""
    if len(answers) < threshold:
        raise FedsegError(
            f"only {len(answers)} site(s) answered the unmask request, {threshold} needed"
        )
    index = {s: i + 1 for i, s in enumerate(sites)}
    wanted = [(u, 0) for u in included] + [(v, 1) for v in dropped]
    shares = {
        (of, part): {index[a]: ans[part][of] for a, ans in answers.items() if of in ans[part]}
        for of, part in wanted
    }
    # one call: the answering sites' Lagrange coefficients are computed once for all secrets
    secrets = combine_many(shares, threshold)
    seeds = {of: sk for (of, part), sk in secrets.items() if part == 0}
    keys = {}
    for (v, part), sk in secrets.items():
        if part == 0:
            continue
        if public_of(sk) != mask_pubs[v]:
            raise FedsegError(f"the shares of site {v!r}'s mask key do not rebuild it: a site "
                              "sent a bad share")  # fmt: skip
        keys[v] = sk
    return Rebuilt(seeds, keys)


def correction(
    name: str, shape: tuple[int, ...], bits: int, sites: list[str],
    mask_pubs: Mapping[str, bytes], included: Iterable[str], rebuilt: Rebuilt,
) -> np.ndarray:  # fmt: skip
    """What to subtract from the included sites' masked ``name`` arrays, summed: their self
    masks and their pairwise masks with the dropped sites."""
    dtype = word_dtype(bits)
    acc = np.zeros(shape, dtype=dtype)
    inc = list(included)
    for u in inc:
        acc += mask(rebuilt.self_seeds[u], name, shape, bits)
    for v, sk in rebuilt.mask_keys.items():
        for u in inc:
            m = mask(pair_seed(sk, mask_pubs[u]), name, shape, bits)
            if pair_sign(sites, u, v) > 0:
                acc += m
            else:
                acc -= m
    return acc
