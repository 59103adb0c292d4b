"""Helpers of the secure-aggregation tests: a consortium CA with site credentials, and the
protocol's stages run over in-memory sites with the pure functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedseg.federation.security.pki import (
    CA_CERT,
    SITE_CERT,
    SITE_KEY_FILE,
    init_ca,
    issue_site,
    load_cert,
    load_private_key,
)
from fedseg.privacy.fixed_point import choose_scale, decode_sum, encode, word_dtype
from fedseg.privacy.secagg.protocol import (
    SiteState,
    correction,
    rebuild,
    site_keys,
    site_mask,
    site_receive,
    site_shares,
    site_unmask,
)


def consortium(root: Path, sites: list[str]) -> dict[str, Path]:
    """A throwaway CA under ``root`` and each site's credentials folder."""
    init_ca(root)
    return {s: issue_site(root, s) for s in sites}


@dataclass
class Round:
    """One round's stages over in-memory sites (the aggregator's and the sites' views)."""

    creds: dict[str, Path]
    threshold: int
    run_id: str = "run-1"
    rnd: int = 1
    bits: int = 32
    states: dict[str, SiteState] = field(default_factory=dict)
    masked: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def keys(self) -> dict:
        out = {}
        for s, c in self.creds.items():
            key = load_private_key(c / SITE_KEY_FILE)
            self.states[s], out[s] = site_keys(s, self.run_id, self.rnd, key,
                                               (c / SITE_CERT).read_bytes())  # fmt: skip
        return out

    def shares(self, keys: dict) -> dict[str, dict[str, bytes]]:
        return {s: site_shares(st, load_cert(self.creds[s] / CA_CERT), keys, self.threshold)
                for s, st in self.states.items()}  # fmt: skip

    def mask(self, sealed: dict[str, dict[str, bytes]], updates: dict[str, dict],
             weights: dict[str, float], clip: float) -> float:  # fmt: skip
        peers = list(sealed)
        scale = choose_scale(clip, sum(weights[p] for p in peers), len(peers), self.bits)
        for s, upd in updates.items():
            st = self.states[s]
            site_receive(st, peers, {u: sealed[u][s] for u in peers if u != s})
            words = {k: encode(v, weights[s], scale, clip, self.bits).words
                     for k, v in upd.items()}  # fmt: skip
            self.masked[s] = site_mask(st, words, self.bits)
        return scale

    def unmask(self, included: list[str], dropped: list[str], answering: list[str],
               scale: float) -> dict[str, np.ndarray]:  # fmt: skip
        answers = {s: site_unmask(self.states[s], included, dropped) for s in answering}
        any_state = self.states[answering[0]]
        secrets = rebuild(any_state.sites, self.threshold, any_state.mask_pubs, answers,
                          included, dropped)  # fmt: skip
        out = {}
        for k, first in self.masked[included[0]].items():
            acc = np.zeros(first.shape, word_dtype(self.bits))
            for u in included:
                acc += self.masked[u][k]
            acc -= correction(k, first.shape, self.bits, any_state.sites, any_state.mask_pubs,
                              included, secrets)  # fmt: skip
            out[k] = decode_sum(acc, scale, self.bits)
        return out
