"""Simulated time (``rounds.sim_time``): a site's round time as the challenge's sum of its
steps, the round's time under a straggler cut, the sites' speeds, and the challenge's
convergence score, each against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedseg.federation.rounds.sim_time import (
    MEDIAN_EPOCH_S,
    TRANSFER_S,
    VAL_SHARE,
    WEEK_S,
    SiteSpeed,
    best_so_far,
    convergence_score,
    round_time,
    site_round_time,
    site_speeds,
    time_to_fraction,
)

SPEED = SiteSpeed(download_s=10, upload_s=20, train_s_per_case=3, val_s_per_case=2)


def test_site_round_time_is_the_sum_of_its_steps() -> None:
    # download 10 + validate global 2 x 2 + train 4 x 2 x 3 + validate local 2 x 2 + upload 20
    assert site_round_time(SPEED, n_train=4, n_val=2, epochs=2) == 10 + 4 + 24 + 4 + 20 == 62
    # a validator only downloads and validates the global model
    assert site_round_time(SPEED, n_train=4, n_val=2, epochs=0) == 14
    assert site_round_time(SPEED, n_train=4, n_val=2, epochs=0, validate=False) == 0
    # a trainer that does not validate the global model first
    assert site_round_time(SPEED, 4, 2, 1, validate=False) == 10 + 12 + 4 + 20


def test_round_time_is_the_slowest_trainer_or_the_straggler_cut() -> None:
    assert round_time([5, 1, 3, 9]) == 9
    # quorum 0.5 of 4: the 2nd fastest (3) + grace 1
    assert round_time([5, 1, 3, 9], quorum=0.5, grace_s=1) == 4
    # the grace would end after the slowest: the slowest
    assert round_time([5, 1, 3, 9], quorum=0.5, grace_s=10) == 9
    # quorum 0.8 of 4: ceil(3.2) = 4th fastest
    assert round_time([5, 1, 3, 9], quorum=0.8, grace_s=0) == 9
    assert round_time([5, 1, 3, 9], quorum=0.75, grace_s=0) == 5
    assert round_time([]) == 0


def test_site_speeds_median_epoch_and_spread() -> None:
    flat = site_speeds({"a": 2, "b": 4, "c": 10}, compute_sigma=0, network_sigma=0)
    per_case = MEDIAN_EPOCH_S / 4  # the median site (b) trains an epoch in one hour
    assert flat["b"].train_s_per_case * 4 == MEDIAN_EPOCH_S
    assert flat["a"] == SiteSpeed(TRANSFER_S, TRANSFER_S, per_case, per_case * VAL_SHARE)
    drawn = site_speeds({"a": 2, "b": 4, "c": 10}, seed=3)
    # reproducible, independent of the order the sites are listed in
    assert drawn == site_speeds({"c": 10, "a": 2, "b": 4}, seed=3)
    assert drawn != site_speeds({"a": 2, "b": 4, "c": 10}, seed=4)
    # a site's own factors do not depend on the other sites (only the median's scale does)
    more = site_speeds({"a": 2, "b": 4, "c": 10, "d": 1, "e": 100}, seed=3)
    assert more["a"] == drawn["a"]
    # lognormal spread: median factor about 1, log spread about sigma 0.5
    many = site_speeds({f"s{i}": 5 for i in range(400)}, seed=0)
    factors = np.log([s.train_s_per_case / (MEDIAN_EPOCH_S / 5) for s in many.values()])
    assert abs(np.median(factors)) < 0.1 and 0.4 < np.std(factors) < 0.6
    net = np.log([s.download_s / TRANSFER_S for s in many.values()])
    assert 0.4 < np.std(net) < 0.6 and abs(np.corrcoef(factors, net)[0, 1]) < 0.2


def test_convergence_score_by_hand() -> None:
    # best so far 0.1, 0.5, 0.5 over rounds of 10, 20, 30 s; 0.5 carried to 100 s:
    # (0.1 x 10 + 0.5 x 20 + 0.5 x 30 + 0.5 x 40) / 100
    assert convergence_score([10, 20, 30], [0.1, 0.5, 0.3], budget_s=100) == pytest.approx(0.46)
    # a round that ends past the budget counts up to it: (1 + 10 + 0.5 x 20) / 50
    assert convergence_score([10, 20, 30], [0.1, 0.5, 0.3], budget_s=50) == pytest.approx(0.42)
    # rounds wholly past the budget do not count (their 0.9 is never reached)
    assert convergence_score([10, 20, 30], [0.1, 0.5, 0.9], 30) == pytest.approx(11 / 30)
    # right endpoint: round 2's Dice is credited over round 2 itself (left would give 0.5)
    assert convergence_score([10, 10], [0.0, 1.0], budget_s=40) == pytest.approx(0.75)
    # a round without a score keeps the best
    nan = math.nan
    assert convergence_score([10, 10, 10], [nan, 0.4, nan], 40) == pytest.approx(0.3)
    assert convergence_score([], [], 10) == 0
    assert convergence_score([WEEK_S], [0.8]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="2 round times but 1"):
        convergence_score([1, 2], [0.5])


def test_best_so_far_and_time_to_fraction() -> None:
    assert best_so_far([0.1, math.nan, 0.05, 0.3]) == [0.1, 0.1, 0.1, 0.3]
    # final best 0.5; 95 % of it (0.475) first reached by round 2, credited from its start
    assert time_to_fraction([10, 20, 30], [0.1, 0.5, 0.3], budget_s=100) == 10
    assert time_to_fraction([10, 20, 30], [0.5, 0.52, 0.6], budget_s=100) == 30
    # within the budget only: round 3 starts at 30, past a budget of 25
    assert time_to_fraction([10, 20, 30], [0.5, 0.52, 0.9], budget_s=25) == 0
    assert time_to_fraction([10], [0.0], budget_s=100) is None
