"""privacy.accounting: ε from dp-accounting against an independent closed form, and the
noise multiplier that keeps a budget."""

from __future__ import annotations

import math

import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedseg.privacy import accounting
from fedseg.privacy.accounting import epsilon, noise_for_budget


def gaussian_dp_epsilon(sigma: float, steps: int, delta: float) -> float:
    """ε of ``steps`` Gaussian mechanisms of multiplier ``sigma`` composed, from the exact
    Gaussian-DP trade-off (Dong, Roth, Su): mu = sqrt(T)/sigma and
    delta(ε) = Phi(-ε/mu + mu/2) - e^ε Phi(-ε/mu - mu/2), solved for ε."""
    mu = math.sqrt(steps) / sigma

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return float(brentq(excess, 0.0, 100.0, xtol=1e-12))


def test_pld_matches_closed_form_gaussian_dp() -> None:
    exact = gaussian_dp_epsilon(2.0, 10, 1e-5)
    assert exact == pytest.approx(7.5113, abs=1e-3)
    assert epsilon(2.0, 10, 1.0, 1e-5, "pld") == pytest.approx(exact, abs=1e-3)


@pytest.mark.parametrize(("sigma", "steps"), [(2.0, 10), (1.0, 3), (5.0, 50)])
def test_rdp_is_never_below_pld(sigma: float, steps: int) -> None:
    pld = epsilon(sigma, steps, 1.0, 1e-5, "pld")
    assert epsilon(sigma, steps, 1.0, 1e-5, "rdp") >= pld - 1e-6


def test_zero_steps_spend_nothing_and_more_steps_spend_more() -> None:
    assert epsilon(1.0, 0) == 0.0
    assert epsilon(1.0, 5) < epsilon(1.0, 10) < epsilon(0.8, 10)


def test_poisson_sampling_amplifies() -> None:
    # the design's cross-check against Opacus's accountant: 6.62 (dp-accounting RDP)
    assert epsilon(1.1, 100, 0.1, 1e-5, "rdp") == pytest.approx(6.6208, abs=1e-3)
    assert epsilon(1.1, 100, 0.1) < epsilon(1.1, 100, 1.0)


@pytest.mark.parametrize(("target", "steps", "rate"), [(8.0, 10, 1.0), (3.0, 100, 0.1)])
def test_noise_for_budget_is_the_smallest_within_it(target: float, steps: int, rate: float) -> None:
    sigma = noise_for_budget(target, 1e-5, steps, rate, "rdp")
    assert epsilon(sigma, steps, rate, 1e-5, "rdp") <= target
    assert epsilon(sigma * (1 - 1e-3), steps, rate, 1e-5, "rdp") > target


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="accountant"):
        epsilon(1.0, 1, 1.0, 1e-5, "moments")
    with pytest.raises(ValueError):
        epsilon(0.0, 1)


@pytest.mark.usefixtures("without_dp_accounting")
def test_missing_extra_is_one_line() -> None:
    with pytest.raises(Exception) as exc:
        accounting.require_accounting()
    assert str(exc.value) == "privacy.dp needs the privacy extra: pip install 'fedseg[privacy]'"
