"""Site-level DP at the aggregator (``federation.rounds.central_dp``) through the round loop
with hand-made site answers: the model is the global model plus the equal-weight mean of
the clipped updates plus Gaussian noise of std sigma C / m; the ledger; the budget stop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.rounds.central_dp import (
    ALL_SITES,
    NOISE_SHARE_SITES,
    noise_share_sites,
    share_std,
)
from fedseg.federation.rounds.coordinator import Coordinator, initial_weights
from fedseg.model.model_file import load_model
from fedseg.plan import load_plan
from fedseg.privacy.accounting import epsilon, noise_for_budget
from fedseg.run_folder import RunStatus, model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, float_keys, tiny_plan, write_run

# one site pulls the other way: a case-weighted mean would go down, the equal mean goes up
OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": -0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}
CLIP = 0.5


def _plan(tmp_path: Path, rounds: int = 1, **dp: object) -> Path:
    privacy = {"min_summary_cases": 1, "dp": {"level": "site", "clip_norm": CLIP, **dp}}
    sites = {s: tmp_path / s for s in SITES}
    return write_run(tmp_path / "run", tiny_plan(sites, rounds=rounds, privacy=privacy))


def _residual(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Model 1 minus model 0 (floating values), and the noise-free DP mean step."""
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    w1 = load_model(model_path(run, 1)).weights
    keys = float_keys(w0)
    d = sum(w0[k].size for k in keys)
    # every site's update is its offset on every value: norm |off| sqrt(d) > CLIP, so each is
    # clipped to sign(off) CLIP / sqrt(d) per value; equal weights: (1 + 1 - 1) / 3
    step = np.full(d, CLIP / np.sqrt(d) / 3)
    got = np.concatenate([(w1[k].astype(np.float64) - w0[k]).ravel() for k in keys])
    for k, v in w0.items():
        if k not in keys:
            np.testing.assert_array_equal(w1[k], v)  # counters carry no update
    return got, step


@pytest.mark.parametrize("sigma", [1e-4, 50.0])
def test_model_is_global_plus_mean_of_clipped_updates_plus_noise(
    tmp_path: Path, sigma: float
) -> None:
    run = _plan(tmp_path, noise_multiplier=sigma, epsilon=1e12)
    t = ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    got, step = _residual(run)
    noise = got - step
    std = sigma * CLIP / len(SITES)
    assert abs(noise.std() / std - 1) < 0.03  # thousands of values: within a few %
    assert abs(noise.mean()) < 5 * std / np.sqrt(noise.size)  # centred on the DP mean
    # sites got the resolved multiplier; no single norm reached the store
    assert t.requests[0]["site1"].privacy.dp.noise_multiplier == sigma
    with RunStore(run) as store:
        assert all(r.update_norm is None and r.update_distance is None
                   for r in store.site_rounds())  # fmt: skip
        ledger = store.privacy_ledger()
        logs = " ".join(e[2] for e in store.events())
    assert [(r, s) for r, s, _ in ledger] == [(1, ALL_SITES)]
    spent = ledger[0][2]
    assert spent.level == "site" and spent.sigma == sigma and spent.steps == 1
    assert spent.clip_norm == CLIP and spent.sample_rate == 1.0
    assert spent.epsilon == pytest.approx(epsilon(sigma, 1, 1.0, 1e-5, "rdp"))
    assert "norm bounds relative to the round's median" in logs


def test_sigma_from_budget_and_ledger_per_round(tmp_path: Path) -> None:
    run = _plan(tmp_path, rounds=2, epsilon=8.0)
    t = ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    sigma = noise_for_budget(8.0, 1e-5, 2)
    with RunStore(run) as store:
        ledger = store.privacy_ledger()
    assert [(r, s, p.steps) for r, s, p in ledger] == [(1, "*", 1), (2, "*", 2)]
    assert all(p.sigma == pytest.approx(sigma) for _, _, p in ledger)
    assert ledger[0][2].epsilon < ledger[1][2].epsilon <= 8.0
    assert t.requests[1]["site2"].privacy.dp.noise_multiplier == pytest.approx(sigma)


def test_round_past_the_budget_stops_the_run(tmp_path: Path) -> None:
    sigma = 2.0
    budget = (epsilon(sigma, 2) + epsilon(sigma, 3)) / 2  # two rounds fit, three do not
    run = _plan(tmp_path, rounds=3, noise_multiplier=sigma, epsilon=budget)
    with pytest.raises(FedsegError) as exc:
        Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    assert str(exc.value) == (
        f"privacy budget: round 3 would take ε to {epsilon(sigma, 3):.3g} > {budget:g} at "
        "δ=1e-05; the run stops with model 2 (a longer run needs a new run with a larger "
        "privacy.dp.epsilon or noise_multiplier)"
    )
    with RunStore(run) as store:
        assert [r for r, _, _ in store.privacy_ledger()] == [1, 2]
        assert store.meta.status() == RunStatus.FAILED
        assert [r["status"] for r in store.rounds()] == ["done", "done"]


def test_noise_share_sites_and_share_std() -> None:
    sites = {s: Path(s) for s in ("a", "b", "c", "d", "e", "f")}
    plain = tiny_plan(sites, min_sites=2)
    secagg = tiny_plan(sites, min_sites=2, privacy={"secure_aggregation": True})
    assert noise_share_sites(plain, 6) == 2
    assert noise_share_sites(plain, 1) == 1  # min_sites is capped at the round's trainers
    assert noise_share_sites(secagg, 6) == 4  # ceil(2n/3) > min_sites
    with_t = tiny_plan(sites, min_sites=5, privacy={"secure_aggregation": True,
                                                     "secagg": {"threshold": 3}})  # fmt: skip
    assert noise_share_sites(with_t, 6) == 5
    # m >= m_min shares of std sigma C / sqrt(m_min) sum to variance >= sigma^2 C^2
    rng = np.random.default_rng(1)
    s = share_std(2.0, 0.5, 4)
    total = sum(rng.normal(0, s, 100_000) for _ in range(4))
    assert abs(total.std() / (2.0 * 0.5) - 1) < 0.02


def test_a_resumed_run_keeps_the_ledger_noise(tmp_path: Path) -> None:
    run = _plan(tmp_path, rounds=1, epsilon=8.0)
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    plan = load_plan(run / "plan.yaml")  # a longer run with the same budget: less noise...
    (run / "plan.yaml").write_text(plan.model_copy(update={"rounds": 2}).to_yaml())
    with pytest.raises(FedsegError, match="privacy budget: round 2 would take ε to"):
        Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()  # ...but round 1 had more
    with RunStore(run) as store:
        assert [r for r, _, _ in store.privacy_ledger()] == [1]


class _PlainHiddenSum:
    """A stand-in for a hiding mechanism (secure aggregation, HE: other modules): it
    "hides" nothing, and reveals the equal-weight mean of what the sites sent, as the real
    ones must under site-level DP (weight 1 per site)."""

    def __init__(self) -> None:
        self.parts: dict[str, dict] = {}
        self.taken: dict[str, dict] = {}

    def prepare(self, rnd, sites, declared, global_weights, transport):  # type: ignore[no-untyped-def]
        self.taken = {}
        return {s: {"round": rnd} for s in sites}

    def take(self, site, hidden, n_train):  # type: ignore[no-untyped-def]
        self.taken[site] = dict(hidden)

    def combine(self, rnd, global_weights, transport):  # type: ignore[no-untyped-def]
        from fedseg.federation.rounds.hidden_sum import RevealedMean

        sites = sorted(self.taken)
        mean = {k: (sum(self.taken[s][k].astype(np.float64) for s in sites) / len(sites)
                    ).astype(v.dtype) if k in self.taken[sites[0]] else v
                for k, v in global_weights.items()}  # fmt: skip
        return RevealedMean(mean, sites, len(sites))


class _NoisySharesTransport(ArrayTransport):
    """Sites that train like ``ArrayTransport``'s, then do the site's DP step of
    ``update_protection`` (clip, noise share) and send the result as their hidden update."""

    def exchange(self, requests, timeout_s, on_result):  # type: ignore[no-untyped-def]
        from fedseg.federation.rounds.update_protection import site_dp_weights

        def hide(site, ex):  # type: ignore[no-untyped-def]
            rep, req = ex.result, requests[site]
            if req.epochs > 0:
                self.secure_parts = {**getattr(self, "secure_parts", {}), site: req.secure}
                rep.hidden = site_dp_weights(req, rep.weights)
                rep.weights = None
            on_result(site, ex)

        super().exchange(requests, timeout_s, hide)


def test_with_hiding_the_sites_add_noise_shares_sized_for_the_fewest_summed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedseg.federation.rounds.coordinator as coordinator

    monkeypatch.setattr(coordinator, "make_hidden_sum", lambda *a: _PlainHiddenSum())
    sigma = 50.0
    privacy = {"min_summary_cases": 1, "secure_aggregation": True,
               "dp": {"level": "site", "clip_norm": CLIP, "noise_multiplier": sigma,
                      "epsilon": 1e12}}  # fmt: skip
    plan = tiny_plan({s: tmp_path / s for s in SITES}, rounds=1, privacy=privacy)
    run = write_run(tmp_path / "run", plan)
    t = _NoisySharesTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    # 3 trainers, min_sites 2, threshold ceil(2 x 3 / 3) = 2: shares sized for m_min = 2
    assert {s: p[NOISE_SHARE_SITES] for s, p in t.secure_parts.items()} == dict.fromkeys(SITES, 2)
    got, step = _residual(run)
    share = share_std(sigma, CLIP, 2)
    expected = share * np.sqrt(3) / 3  # the mean of 3 shares
    assert expected >= sigma * CLIP / 3  # at least the central noise
    assert abs((got - step).std() / expected - 1) < 0.03
    with RunStore(run) as store:
        assert [(r, s) for r, s, _ in store.privacy_ledger()] == [(1, ALL_SITES)]
