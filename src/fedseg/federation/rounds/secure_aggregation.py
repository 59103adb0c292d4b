"""The aggregator's side of secure aggregation (plan ``privacy.secure_aggregation``), a
``hidden_sum.HiddenSum``, engine-free: it learns the case-weighted sum of the included
sites' updates and nothing of any one site's (``privacy.secagg`` protocol).

Per round (stages in ``privacy.secagg.protocol``, site side in
``secure_aggregation_site``):

- ``prepare``: keys (query ``secagg_keys``) and shares (``secagg_shares``) with the
  round's training sites; each site that completed both gets, in its training request,
  the shares sealed to it, its weight ``w_i`` (the aggregator's own number: the training
  cases the site declared when it joined, or 1 for every site under ``dp.level: site``),
  the fixed-point scale and word size and the clip norm;
- ``take``: each masked update is checked (names, shapes, word type) and parked on disk
  (``spool``);
- ``combine``: the sites whose masked update was accepted are the sum's (``included``),
  the other peers are ``dropped``; the unmask query (``secagg_unmask``) gets the shares
  that rebuild the masks; the unmasked sum is decoded, checked, divided by the included
  sites' weights (the aggregator's numbers) and added to the global model.

The sum check: honest sites clip their update to ``clip_norm`` ``C``, so
``‖Σ w_i Δ_i‖ <= Σ w_i C`` (plus the fixed-point rounding, plus the noise under
``dp.level: site``). A sum over that bound is rejected for the round, in one line: some
site sent more than its clip, and which one cannot be told. A site scaling its input within
the bound is **bounded, not detected**: its effect on the mean is at most
``Σ w_i C / W`` in norm. A site lying about its cases cannot make the aggregator divide
wrongly: the weights and the divisor are the aggregator's own (the declaration, bounded by
``bounds``); a site that encodes with another weight is a site scaling its input (above).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds.aggregation import UpdateRejected
from fedseg.federation.rounds.hidden_sum import RevealedMean
from fedseg.federation.rounds.secure_aggregation_site import KEYS, SHARES, UNMASK, signed_keys
from fedseg.federation.rounds.spool import Spool, SpooledArrays
from fedseg.federation.rounds.tasks import Payload
from fedseg.plan import PlanConfig
from fedseg.privacy.config import PrivacyConfig
from fedseg.privacy.fixed_point import choose_scale, decode_sum, mean_bound, word_dtype
from fedseg.privacy.secagg.protocol import (
    MIN_SITES,
    correction,
    default_threshold,
    rebuild,
)
from fedseg.run_folder import DeclaredCases, spool_dir
from fedseg.tracking.store import RunStore

if TYPE_CHECKING:
    from fedseg.federation.rounds.coordinator import SiteFailure, Transport
    from fedseg.model.weights import Weights

#: headroom of the sum check over ``Σ w_i C`` (float rounding of honest sites' clips)
SUM_SLACK = 1e-6
#: Gaussian tail, in standard deviations, that the fixed-point range keeps for DP noise
NOISE_TAIL = 6.0


def value_range(privacy: PrivacyConfig) -> tuple[float, float]:
    """(each site's clip norm, the largest size of one coordinate of its update). Under
    ``dp.level: site`` the update is clipped to ``dp.clip_norm`` and carries Gaussian noise
    of at most ``noise_multiplier * clip_norm`` per coordinate (kept to ``NOISE_TAIL``
    standard deviations)."""
    if privacy.dp.level != "site":
        return privacy.secagg.clip_norm, privacy.secagg.clip_norm
    if privacy.dp.noise_multiplier is None:
        raise FedsegError(
            "secure aggregation with privacy.dp.level: site needs privacy.dp.noise_multiplier "
            "(the fixed-point range must hold the noise)"
        )
    clip = privacy.dp.clip_norm
    return clip, clip * (1.0 + NOISE_TAIL * privacy.dp.noise_multiplier)


class SecureAggregation:
    """``HiddenSum`` of ``privacy.secure_aggregation`` (see the module doc)."""

    def __init__(self, plan: PlanConfig, run_dir: Path, store: RunStore) -> None:
        self.privacy, self.store, self.run_dir = plan.privacy, store, Path(run_dir)
        self.cfg = plan.privacy.secagg
        self.timeout_s = plan.round_timeout_s
        self.run_id = store.meta.run_id() or self.run_dir.name
        self.clip, self.range = value_range(plan.privacy)
        self.bits = self.cfg.modulus_bits
        self._clear(0)

    def _clear(self, rnd: int) -> None:
        self.rnd = rnd
        self.sites: list[str] = []  # answered the key stage, in Shamir index order
        self.peers: list[str] = []  # completed the share stage: the round's masked sites
        self.threshold = 0
        self.mask_pubs: dict[str, bytes] = {}
        self.weight: dict[str, float] = {}
        self.scale = 1.0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.parked: dict[str, SpooledArrays] = {}
        self.n_train: dict[str, int] = {}
        self.spool = Spool(spool_dir(self.run_dir, rnd) / "secagg")

    def _log(self, text: str, level: str = "info") -> None:
        self.store.log(f"round {self.rnd}: secure aggregation: {text}", level)

    def _answers(
        self, kind: str, payloads: dict[str, Payload], transport: Transport,
        check: Callable[[str, Payload], None],
    ) -> dict[str, Payload]:  # fmt: skip
        """The sites' usable answers to a ``kind`` query; the others are logged."""
        from fedseg.federation.rounds.coordinator import SiteFailure

        got = transport.query(kind, payloads, self.timeout_s)
        ok: dict[str, Payload] = {}
        for site in payloads:
            ans: Payload | SiteFailure | None = got.get(site)
            if ans is None or isinstance(ans, SiteFailure):
                why = ans.error if isinstance(ans, SiteFailure) else "no answer"
                self._log(f"site {site} failed {kind}: {why}", "warning")
                continue
            try:
                check(site, ans)
            except (KeyError, TypeError, ValueError, FedsegError) as exc:
                self._log(f"site {site}'s answer to {kind} is unusable: {exc}", "warning")
                continue
            ok[site] = ans
        return ok

    # -- HiddenSum ----------------------------------------------------------------------
    def prepare(
        self, rnd: int, sites: list[str], declared: dict[str, DeclaredCases],
        global_weights: Weights, transport: Transport,
    ) -> dict[str, Payload]:  # fmt: skip
        self.spool.remove()
        self._clear(rnd)
        dp_site = self.privacy.dp.level == "site"
        weight = {
            s: 1.0 if dp_site else float(declared[s].n_train)
            for s in sites
            if s in declared and (dp_site or declared[s].n_train > 0)
        }
        head: Payload = {"run_id": self.run_id, "round": rnd}
        keys = self._answers(KEYS, {s: dict(head) for s in weight}, transport,
                             lambda s, a: signed_keys(a) and None)  # fmt: skip
        self.sites = [s for s in sites if s in keys]
        if len(self.sites) < MIN_SITES:
            self._log(f"only {len(self.sites)} site(s) answered the key stage, at least "
                      f"{MIN_SITES} needed: no training this round", "warning")  # fmt: skip
            return {}
        n = len(self.sites)
        self.threshold = self.cfg.threshold or default_threshold(n)
        if self.threshold > n:
            self._log(f"threshold {self.threshold} is more than the {n} sites that answered "
                      "the key stage: no training this round", "warning")  # fmt: skip
            return {}
        relay: Payload = {**head, "threshold": self.threshold, "sites": ",".join(self.sites)}
        for s in self.sites:
            relay.update({f"{s}.{k}": v for k, v in keys[s].items()})
        self.mask_pubs = {s: bytes(keys[s]["mask_pub"]) for s in self.sites}  # type: ignore[arg-type]

        def all_shares(site: str, ans: Payload) -> None:
            for dst in self.sites:
                if dst != site and not isinstance(ans[f"share.{dst}"], bytes):
                    raise ValueError(f"share for {dst} is not bytes")

        shares = self._answers(SHARES, {s: dict(relay) for s in self.sites}, transport,
                               all_shares)  # fmt: skip
        self.peers = [s for s in self.sites if s in shares]
        if len(self.peers) < self.threshold:
            self._log(f"only {len(self.peers)} site(s) completed the share stage, threshold "
                      f"{self.threshold}: no training this round", "warning")  # fmt: skip
            return {}
        self.weight = {s: weight[s] for s in self.peers}
        self.scale = choose_scale(self.range, sum(self.weight.values()), len(self.peers),
                                  self.bits)  # fmt: skip
        self.shapes = {k: tuple(v.shape) for k, v in global_weights.items()
                       if v.dtype.kind == "f"}  # fmt: skip
        common: Payload = {**head, "peers": ",".join(self.peers), "scale": self.scale,
                           "bits": self.bits, "range": self.range, "clip": self.clip}  # fmt: skip
        out: dict[str, Payload] = {}
        for v in self.peers:
            mine: Payload = {**common, "weight": self.weight[v]}
            mine.update({f"share.{u}": shares[u][f"share.{v}"] for u in self.peers if u != v})
            out[v] = mine
        return out

    def take(self, site: str, hidden: Payload, n_train: int) -> None:
        if site not in self.peers:
            raise UpdateRejected("a masked update from a site outside the round's key stages")
        if site in self.parked:
            raise UpdateRejected("a second masked update from the same site")
        dtype = word_dtype(self.bits)
        if set(hidden) != set(self.shapes):
            raise UpdateRejected("the masked update's arrays are not the model's")
        for k, shape in self.shapes.items():
            a = hidden[k]
            if not isinstance(a, np.ndarray) or a.dtype != dtype or tuple(a.shape) != shape:
                raise UpdateRejected(f"masked array {k!r} is not {self.bits}-bit words of "
                                     f"shape {shape}")  # fmt: skip
        self.parked[site] = self.spool.park({k: hidden[k] for k in self.shapes})  # type: ignore[misc]
        self.n_train[site] = int(n_train)

    def combine(
        self, rnd: int, global_weights: Weights, transport: Transport
    ) -> RevealedMean | None:
        try:
            return self._combine(rnd, global_weights, transport)
        finally:
            self.spool.remove()
            self.parked = {}

    def _combine(
        self, rnd: int, global_weights: Weights, transport: Transport
    ) -> RevealedMean | None:
        included = [p for p in self.peers if p in self.parked]
        dropped = [p for p in self.peers if p not in self.parked]
        if not self.peers:
            return None
        if len(included) < self.threshold:
            self._log(f"only {len(included)} masked update(s) arrived, threshold "
                      f"{self.threshold}: the sum cannot be unmasked", "warning")  # fmt: skip
            return None
        ask: Payload = {"run_id": self.run_id, "round": rnd, "included": ",".join(included),
                        "dropped": ",".join(dropped)}  # fmt: skip

        def has_shares(site: str, ans: Payload) -> None:
            for u in included:
                bytes(ans[f"seed.{u}"])  # type: ignore[arg-type]
            for v in dropped:
                bytes(ans[f"key.{v}"])  # type: ignore[arg-type]

        got = self._answers(UNMASK, {s: dict(ask) for s in included}, transport, has_shares)
        answers = {
            s: ({u: bytes(a[f"seed.{u}"]) for u in included},  # type: ignore[arg-type]
                {v: bytes(a[f"key.{v}"]) for v in dropped})  # type: ignore[arg-type]
            for s, a in got.items()
        }  # fmt: skip
        try:
            secrets = rebuild(self.sites, self.threshold, self.mask_pubs, answers, included,
                              dropped)  # fmt: skip
        except FedsegError as exc:
            self._log(f"the sum cannot be unmasked: {exc}", "warning")
            return None
        total = sum(self.weight[u] for u in included)
        sums: dict[str, np.ndarray] = {}
        sq = 0.0
        for k, shape in self.shapes.items():
            acc = np.zeros(shape, dtype=word_dtype(self.bits))
            for u in included:
                acc += self.parked[u][k]
            acc -= correction(k, shape, self.bits, self.sites, self.mask_pubs, included, secrets)
            sums[k] = decode_sum(acc, self.scale, self.bits)
            sq += float(np.sum(np.square(sums[k])))
        norm, limit = math.sqrt(sq), self.sum_limit(included)
        if norm > limit:
            self._log(
                f"sum rejected: its norm {norm:.4g} exceeds {limit:.4g}, what clipped updates "
                "can give; a site sent more than its clip (which one cannot be told)", "error",
            )  # fmt: skip
            return None
        new: Weights = {}
        for k, g in global_weights.items():
            if k in sums:
                new[k] = (g.astype(np.float64) + sums[k] / total).astype(g.dtype)
            else:  # integer counters are not summed: they stay the global model's
                new[k] = g.copy()
        bound = mean_bound(len(self.peers), self.scale, total)
        self._log(
            f"unmasked the sum of {len(included)} site(s) ({', '.join(included)}); dropped "
            f"after the key stages: {', '.join(dropped) or 'none'}; fixed-point error "
            f"<= {bound:.1e} per value"
        )  # fmt: skip
        return RevealedMean(new, included, sum(self.n_train[u] for u in included))

    def sum_limit(self, included: list[str]) -> float:
        """The largest norm of ``Σ w_i Δ_i`` that clipped updates can give (see the doc)."""
        d = sum(math.prod(s) for s in self.shapes.values())
        w = [self.weight[u] for u in included]
        limit = sum(w) * self.clip * (1 + SUM_SLACK)
        limit += len(w) * math.sqrt(d) / (2 * self.scale)  # fixed-point rounding
        if self.privacy.dp.level == "site":  # the noise: at most nm * C per site, Gaussian
            sigma = (self.privacy.dp.noise_multiplier or 0.0) * self.privacy.dp.clip_norm
            limit += sigma * math.sqrt(len(w)) * (math.sqrt(d) + NOISE_TAIL)
        return limit
