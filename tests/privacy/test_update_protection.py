"""The site's DP step of ``update_protection`` (``privacy.dp.level: site``): the update is
clipped to the plan's norm; under a hiding mechanism the site adds its noise share."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.rounds.central_dp import NOISE_SHARE_SITES
from fedseg.federation.rounds.site_queries import SiteContext
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.federation.rounds.update_protection import protect_update, site_dp_weights
from fedseg.privacy.clipping import l2_norm, update_of
from fedseg.privacy.config import PrivacyConfig

G = {"w": np.zeros(50_000, np.float32), "n": np.array(3, np.int64)}


def _req(privacy: dict, secure: dict | None = None) -> TaskRequest:
    return TaskRequest(
        round=1, model_round=0, validate=True, epochs=1, seed=0, run_id="r", recipe="{}",
        weights=G, privacy=PrivacyConfig.model_validate(privacy), secure=secure,
    )  # fmt: skip


def test_clear_updates_are_clipped_at_the_site() -> None:
    req = _req({"dp": {"level": "site", "clip_norm": 0.5}})
    trained = {"w": np.full(50_000, 0.1, np.float32), "n": np.array(7, np.int64)}
    reply = TaskReply(site="a", weights=trained, n_train=1, n_val=1)
    protect_update(SiteContext("a"), req, reply)
    assert reply.weights is not None
    assert l2_norm(update_of(reply.weights, G)) == pytest.approx(0.5, rel=1e-5)
    assert reply.weights["n"] == 3  # counters: the global model's
    # direction kept: every value the same
    assert np.ptp(reply.weights["w"]) < 1e-9


def test_noise_share_under_hiding_has_std_sigma_c_over_sqrt_m_min() -> None:
    privacy = {"secure_aggregation": True,
               "dp": {"level": "site", "clip_norm": 0.5, "noise_multiplier": 2.0}}  # fmt: skip
    req = _req(privacy, {NOISE_SHARE_SITES: 4})
    out = site_dp_weights(req, dict(G), np.random.default_rng(0))  # a zero update
    assert abs(out["w"].std() / (2.0 * 0.5 / 2) - 1) < 0.02


def test_no_share_size_no_update() -> None:
    privacy = {"secure_aggregation": True,
               "dp": {"level": "site", "noise_multiplier": 2.0}}  # fmt: skip
    with pytest.raises(FedsegError, match="sends no update unnoised"):
        site_dp_weights(_req(privacy, {}), dict(G))
