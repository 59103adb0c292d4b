"""A site's side of secure aggregation (plan ``privacy.secure_aggregation``), engine-free and
torch-free: the three query handlers (``QUERIES``: ``secagg_keys``, ``secagg_shares``,
``secagg_unmask``) and the masking of the trained update (``mask_update``, called by
``update_protection.protect_update``).

The round's private state (secret keys, self-mask seed, the shares received, what was
revealed) is one JSON value under ``SiteContext.state[STATE_KEY]``; it never leaves the
site. The site signs its round keys with its consortium key from ``SiteContext.creds``
(``site.key``, ``site.crt``, ``ca.crt``: ``fedseg site start --creds``), and checks its
peers' against the same ``ca.crt``. Payload names: see ``secure_aggregation`` (the
aggregator's side), which builds and reads them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds.tasks import Payload, TaskReply, TaskRequest
from fedseg.federation.security.pki import (
    CA_CERT,
    SITE_CERT,
    SITE_KEY_FILE,
    common_name,
    load_cert,
    load_private_key,
)
from fedseg.privacy.fixed_point import encode
from fedseg.privacy.secagg.protocol import (
    SignedKeys,
    SiteState,
    site_keys,
    site_mask,
    site_receive,
    site_shares,
    site_unmask,
)

if TYPE_CHECKING:  # site_queries registers this module's handlers (no import cycle)
    from fedseg.federation.rounds.site_queries import QueryHandler, SiteContext

#: ``SiteContext.state`` key of the round's secure-aggregation state
STATE_KEY = "secagg"
KEYS, SHARES, UNMASK = "secagg_keys", "secagg_shares", "secagg_unmask"


def names(text: object) -> list[str]:
    """A comma-separated list of site names (payload value) as a list."""
    return [s for s in str(text).split(",") if s]


def _creds(ctx: SiteContext) -> Path:
    if ctx.creds is None:
        raise FedsegError(
            "secure aggregation needs the site's consortium credentials: start the site "
            "with `fedseg site start --creds FOLDER` (site.key, site.crt, ca.crt)"
        )
    return ctx.creds


def _state(ctx: SiteContext) -> SiteState:
    raw = ctx.state.get(STATE_KEY)
    if raw is None:
        raise FedsegError("no secure-aggregation keys for this round at the site (restarted?)")
    return SiteState.from_bytes(bytes(raw))


def answer_keys(ctx: SiteContext, payload: Payload) -> Payload:
    """Stage 1: fresh round keys, signed with the site's consortium key."""
    creds = _creds(ctx)
    cert_pem = (creds / SITE_CERT).read_bytes() if (creds / SITE_CERT).exists() else b""
    if not cert_pem or common_name(load_cert(creds / SITE_CERT)) != ctx.site:
        raise FedsegError(f"{creds / SITE_CERT} is missing or not site {ctx.site!r}'s certificate")
    key = load_private_key(creds / SITE_KEY_FILE)
    state, keys = site_keys(ctx.site, str(payload["run_id"]), int(payload["round"]), key,
                            cert_pem)  # fmt: skip
    ctx.state[STATE_KEY] = state.to_bytes()
    return {"mask_pub": keys.mask_pub, "transport_pub": keys.transport_pub,
            "signature": keys.signature, "cert": keys.cert_pem}  # fmt: skip


def signed_keys(payload: Payload, prefix: str = "") -> SignedKeys:
    """A site's signed keys from a payload (its stage-1 answer, or ``<site>.``-prefixed)."""
    return SignedKeys(*(bytes(payload[prefix + k]) for k in  # type: ignore[arg-type]
                        ("mask_pub", "transport_pub", "signature", "cert")))  # fmt: skip


def answer_shares(ctx: SiteContext, payload: Payload) -> Payload:
    """Stage 2: check the peers' keys, seal each its shares."""
    state = _state(ctx)
    state.check_round(str(payload["run_id"]), int(payload["round"]))
    keys = {s: signed_keys(payload, f"{s}.") for s in names(payload["sites"])}
    ca = load_cert(_creds(ctx) / CA_CERT)
    sealed = site_shares(state, ca, keys, int(payload["threshold"]))
    ctx.state[STATE_KEY] = state.to_bytes()
    return {f"share.{dst}": ct for dst, ct in sealed.items()}


def answer_unmask(ctx: SiteContext, payload: Payload) -> Payload:
    """Stage 4: shares of the included sites' seeds and of the dropped sites' keys."""
    state = _state(ctx)
    state.check_round(str(payload["run_id"]), int(payload["round"]))
    seeds, keys = site_unmask(state, names(payload["included"]), names(payload["dropped"]))
    ctx.state[STATE_KEY] = state.to_bytes()  # what was revealed, before it leaves
    out: Payload = {f"seed.{u}": s for u, s in seeds.items()}
    out.update({f"key.{v}": k for v, k in keys.items()})
    return out


QUERIES: dict[str, QueryHandler] = {KEYS: answer_keys, SHARES: answer_shares, UNMASK: answer_unmask}


def clip_factor(delta: dict[str, np.ndarray], clip_norm: float) -> float:
    """The factor that brings ``delta``'s L2 norm (all arrays together) to ``clip_norm`` at
    most (1 when it is within)."""
    norm = float(np.sqrt(sum(float(np.sum(np.square(d))) for d in delta.values())))
    return 1.0 if norm <= clip_norm else clip_norm / norm


def mask_update(ctx: SiteContext, req: TaskRequest, reply: TaskReply) -> None:
    """Stage 3 (after training, in place): the update ``reply.weights - req.weights`` of
    the floating arrays, clipped to ``privacy.secagg.clip_norm`` (unless site-level DP
    already clipped it), weighted, in fixed point and masked, as ``reply.hidden``;
    ``reply.weights`` becomes None."""
    sec = req.secure
    if sec is None or reply.weights is None:
        raise FedsegError("the training task carries no secure-aggregation part: refused to "
                          "send the update")  # fmt: skip
    state = _state(ctx)
    state.check_round(str(sec["run_id"]), req.round)  # the protocol's run id (stage 1)
    peers = names(sec["peers"])
    site_receive(state, peers, {p: bytes(sec[f"share.{p}"]) for p in peers  # type: ignore[arg-type]
                                if f"share.{p}" in sec})  # fmt: skip
    weight, scale = float(sec["weight"]), float(sec["scale"])
    bits, value_range = int(sec["bits"]), float(sec["range"])
    delta = {
        k: reply.weights[k].astype(np.float64) - np.asarray(g, dtype=np.float64)
        for k, g in req.weights.items() if g.dtype.kind == "f"
    }  # fmt: skip
    if req.privacy.dp.level != "site":  # site-level DP clipped it (and added its noise)
        f = clip_factor(delta, float(sec["clip"]))
        if f < 1.0:
            delta = {k: d * f for k, d in delta.items()}
    words, clamped = {}, 0
    for k, d in delta.items():
        enc = encode(d, weight, scale, value_range, bits)
        words[k], clamped = enc.words, clamped + enc.clamped
    if clamped:
        text = f"{clamped} update value(s) beyond the fixed-point range {value_range:g} clamped"
        print(f"[fedseg site] secure aggregation: {text}", file=sys.stderr, flush=True)
    reply.hidden = dict(site_mask(state, words, bits))
    reply.weights = None
    ctx.state[STATE_KEY] = state.to_bytes()
