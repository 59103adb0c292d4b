"""The coordinator's secure round over an in-process transport whose sites run the real site
steps (``site_queries`` handlers, ``update_protection.protect_update``): the model equals
plain FedAvg/FedAdam within the fixed-point bound, records carry no single-site norms, a
site scaling its masked input is caught by the sum check, and a lying weight is bounded."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.local_transport import answer_here
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged
from fedseg.federation.rounds.site_queries import SiteContext
from fedseg.federation.rounds.tasks import Payload, TaskReply, TaskRequest
from fedseg.federation.rounds.update_protection import protect_update
from fedseg.model.model_file import load_model
from fedseg.plan import PLAN_FILE, load_plan
from fedseg.privacy.fixed_point import choose_scale, mean_bound
from fedseg.run_folder import model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, float_keys, tiny_plan, write_run
from tests.privacy.secagg_helpers import consortium

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


class SecureArrayTransport(ArrayTransport):
    """``ArrayTransport`` whose sites answer the secure-aggregation queries and protect their
    update with the real site code; ``cheat(site, req)`` may change a site's part of the
    protocol before it masks (a dishonest site)."""

    def __init__(self, creds: dict[str, Path], *args: object,
                 cheat: Callable[[str, TaskRequest], TaskRequest] | None = None,
                 **kwargs: object) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.contexts = {s: SiteContext(s, creds=creds[s]) for s in self.offsets}
        self.cheat = cheat
        self.queries: list[str] = []

    def query(self, kind: str, payloads: dict[str, Payload], timeout_s: float):
        self.queries.append(kind)
        return answer_here(kind, self.contexts, payloads)

    def exchange(self, requests, timeout_s, on_result, stop_when=None) -> None:
        def protected(site: str, ex: Exchanged) -> None:
            req = requests[site]
            if isinstance(ex.result, TaskReply) and req.epochs > 0:
                if self.cheat is not None:
                    req = self.cheat(site, req)
                protect_update(self.contexts[site], req, ex.result)
            on_result(site, ex)

        super().exchange(requests, timeout_s, protected, stop_when)


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return consortium(tmp_path_factory.mktemp("ca"), list(SITES))


def _sites(tmp_path: Path) -> dict[str, Path]:
    return {s: tmp_path / s for s in SITES}


def _clip(run: Path) -> float:
    """A clip norm just above the largest honest update (0.4 on every float value)."""
    from fedseg.federation.rounds.coordinator import initial_weights

    w0 = initial_weights(load_plan(run / PLAN_FILE))
    d = sum(w0[k].size for k in float_keys(w0))
    return 0.4 * np.sqrt(d) * 1.01


def _runs(tmp_path: Path, creds, strategy: str, rounds: int = 2, **secure_kw):
    plain = write_run(tmp_path / "plain", tiny_plan(_sites(tmp_path), rounds=rounds,
                                                    strategy={"name": strategy}))  # fmt: skip
    clip = _clip(plain)
    privacy = {"min_summary_cases": 1, "secure_aggregation": True,
               "secagg": {"clip_norm": clip, **secure_kw}}  # fmt: skip
    secure = write_run(tmp_path / "secure", tiny_plan(_sites(tmp_path), rounds=rounds,
                                                      strategy={"name": strategy},
                                                      privacy=privacy))  # fmt: skip
    return plain, secure, clip


@pytest.mark.parametrize(("strategy", "bits"), [("fedavg", 32), ("fedadam", 32), ("fedavg", 64)])
def test_model_equals_plain_strategy_within_the_bound(tmp_path, creds, strategy, bits):
    plain, secure, clip = _runs(tmp_path, creds, strategy, modulus_bits=bits)
    Coordinator(plain, ArrayTransport(OFFSETS, N_TRAIN)).run()
    t = SecureArrayTransport(creds, OFFSETS, N_TRAIN)
    Coordinator(secure, t).run()
    assert t.queries == ["secagg_keys", "secagg_shares", "secagg_unmask"] * 2
    # what travelled: masked words, never weights
    scale = choose_scale(clip, sum(N_TRAIN.values()), 3, bits)
    bound = mean_bound(3, scale, sum(N_TRAIN.values()))
    for rnd in (2,):  # the run keeps its last round's model
        a, b = (
            load_model(model_path(plain, rnd)).weights,
            load_model(model_path(secure, rnd)).weights,
        )
        for k in float_keys(a):
            # the fixed-point bound on the mean update, then float32 rounding of the model
            tol = rnd * bound + 2 * np.finfo(np.float32).eps * np.abs(a[k]).max()
            if strategy == "fedadam":  # Adam's step is insensitive to tiny changes of the mean
                tol += 1e-6
            np.testing.assert_allclose(b[k], a[k], rtol=0, atol=tol)
    with RunStore(secure) as store:
        srs = store.site_rounds()
        assert {s.status for s in srs} == {"ok"}
        assert all(s.update_norm is None and s.update_distance is None for s in srs)
        logs = [e[2] for e in store.events()]
    assert any("unmasked the sum of 3 site(s) (site1, site2, site3); dropped after the key "
               "stages: none" in m for m in logs)  # fmt: skip


def test_site_scaling_its_masked_input_is_caught_by_the_sum_check(tmp_path, creds):
    _, secure, _ = _runs(tmp_path, creds, "fedavg", rounds=1)

    def scale_up(site: str, req: TaskRequest) -> TaskRequest:
        if site != "site3":
            return req
        return dataclasses.replace(req, secure={**req.secure, "weight": req.secure["weight"] * 5})

    t = SecureArrayTransport(creds, OFFSETS, N_TRAIN, cheat=scale_up)
    with pytest.raises(Exception, match="only 0 site"):
        Coordinator(secure, t).run()
    with RunStore(secure) as store:
        logs = [e[2] for e in store.events()]
    line = [m for m in logs if "sum rejected" in m]
    assert len(line) == 1 and "which one cannot be told" in line[0]


def test_lying_weight_is_bounded_and_the_divisor_is_the_aggregators(tmp_path, creds):
    """A site encoding its update with twice its weight (or reporting other cases) moves the
    mean by its own scaled update over the aggregator's divisor: bounded by the sum check
    (the accepted mean update has norm <= clip_norm), never a wrong division."""
    _, secure, clip = _runs(tmp_path, creds, "fedavg", rounds=1)
    from fedseg.federation.rounds.coordinator import initial_weights

    def lie(site: str, req: TaskRequest) -> TaskRequest:
        if site != "site1":
            return req
        return dataclasses.replace(req, secure={**req.secure, "weight": req.secure["weight"] * 2})

    t = SecureArrayTransport(creds, OFFSETS, N_TRAIN, cheat=lie)
    Coordinator(secure, t).run()
    w0 = initial_weights(load_plan(secure / PLAN_FILE))
    w1 = load_model(model_path(secure, 1)).weights
    # the aggregator divides by its own W = 1 + 2 + 5 (declared cases), whatever site1 encodes
    step = (2 * 1 * 0.1 + 2 * 0.2 + 5 * 0.4) / 8
    sq = 0.0
    for k in float_keys(w0):
        np.testing.assert_allclose(w1[k], w0[k] + step, atol=1e-6)
        sq += float(np.sum((w1[k].astype(np.float64) - w0[k]) ** 2))
    assert np.sqrt(sq) <= clip * (1 + 1e-6)  # bounded: an accepted mean update is within C


def test_site_level_dp_weighs_every_site_equally(tmp_path, creds):
    """Under ``dp.level: site`` each site's whole contribution is what DP protects: the
    secure sum weighs the sites 1 each. The sites' noise shares (the DP step's, tested in
    test_central_dp) are made small here and bound the tolerance."""
    from fedseg.federation.rounds.central_dp import noise_share_sites, share_std
    from fedseg.federation.rounds.coordinator import initial_weights
    from fedseg.federation.rounds.secure_aggregation import value_range
    from fedseg.privacy.config import PrivacyConfig

    clip = _clip(write_run(tmp_path / "probe", tiny_plan(_sites(tmp_path), rounds=1)))
    sigma = 1e-6
    dp = {"level": "site", "clip_norm": clip, "noise_multiplier": sigma, "epsilon": 1e12}
    privacy = {"min_summary_cases": 1, "secure_aggregation": True, "dp": dp}
    run = write_run(tmp_path / "dp", tiny_plan(_sites(tmp_path), rounds=1, privacy=privacy))
    Coordinator(run, SecureArrayTransport(creds, OFFSETS, N_TRAIN)).run()
    w0 = initial_weights(load_plan(run / PLAN_FILE))
    w1 = load_model(model_path(run, 1)).weights
    # each site's share has std sigma C / sqrt(m_min), m_min = 2 here (secure aggregation's
    # threshold for 3 sites); the mean of 3 shares has sqrt(3) / 3 of that. 8 stds: no element
    # of the model strays that far by chance
    m_min = noise_share_sites(load_plan(run / PLAN_FILE), 3)
    assert m_min == 2
    tol = 8 * share_std(sigma, clip, m_min) * math.sqrt(3) / 3 + 1e-6
    for k in float_keys(w0):  # case-weighted it would be (0.1*n1 + 0.2*n2 + 0.4*n3) / N
        np.testing.assert_allclose(w1[k], w0[k] + (0.1 + 0.2 + 0.4) / 3, atol=tol)
    # the fixed-point range keeps room for the noise; without a multiplier it cannot be sized
    dp["noise_multiplier"] = 0.5
    assert value_range(PrivacyConfig.model_validate({"secure_aggregation": True, "dp": dp})) == (
        clip,
        clip * (1 + 6 * 0.5),
    )
    with pytest.raises(FedsegError, match=r"needs privacy\.dp\.noise_multiplier"):
        value_range(
            PrivacyConfig.model_validate({"secure_aggregation": True, "dp": {"level": "site"}})
        )


def test_site_cut_after_quorum_is_a_dropped_peer(tmp_path, creds):
    """Plan ``straggler``: site3 answers the key stages, then is cut after the quorum (2 of
    3, secure aggregation's threshold 2): the unmask stage rebuilds its masks as a dropped
    peer's and the model is the case-weighted mean of site1 and site2's updates."""
    from fedseg.federation.rounds.coordinator import initial_weights
    from fedseg.run_folder import SiteRoundStatus
    from tests.federation.fed_helpers import FakeClock

    clip = _clip(write_run(tmp_path / "probe", tiny_plan(_sites(tmp_path), rounds=1)))
    privacy = {"min_summary_cases": 1, "secure_aggregation": True,
               "secagg": {"clip_norm": clip}}  # fmt: skip
    cut = {"quorum": 0.6, "grace_s": 5}
    run = write_run(tmp_path / "cut", tiny_plan(_sites(tmp_path), rounds=1, privacy=privacy,
                                                straggler=cut))  # fmt: skip
    clock = FakeClock()
    t = SecureArrayTransport(creds, OFFSETS, N_TRAIN, delays={"site3": 100.0}, clock=clock)
    Coordinator(run, t, clock=clock).run()
    assert t.elapsed[0] == 5.0  # quorum at once, then the grace
    assert t.queries == ["secagg_keys", "secagg_shares", "secagg_unmask"]
    w0 = initial_weights(load_plan(run / PLAN_FILE))
    w1 = load_model(model_path(run, 1)).weights
    step = (1 * 0.1 + 2 * 0.2) / 3  # site3 (5 cases, offset 0.4) is not in the sum
    for k in float_keys(w0):
        np.testing.assert_allclose(w1[k], w0[k] + step, atol=1e-5)
    with RunStore(run) as store:
        rows = {r.site: r for r in store.site_rounds()}
        logs = [e[2] for e in store.events()]
    assert rows["site3"].status == SiteRoundStatus.TIMEOUT
    assert rows["site3"].error == "cut after quorum (2 of 3)"
    assert any("unmasked the sum of 2 site(s) (site1, site2); dropped after the key stages: "
               "site3" in m for m in logs)  # fmt: skip
