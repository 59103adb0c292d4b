"""ε of the Gaussian mechanism composed over steps, from dp-accounting (never by hand).

One DP-SGD step (or one round of site-level DP) is ``PoissonSampledDpEvent(q,
GaussianDpEvent(sigma))`` (q = 1: no sampling, the plain Gaussian event), composed ``steps``
times; ``accountant`` is dp-accounting's ``rdp`` (Rényi DP, conservative) or ``pld``
(privacy loss distributions, tighter). δ is the plan's; ε is what the accountant says.
"""

from __future__ import annotations

import logging

from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

# low RDP orders with sampling "fail to converge" and are excluded: absl says so at length
logging.getLogger("absl").setLevel(logging.ERROR)

_SIGMA_MAX = 1e4


def _event(sigma: float, steps: int, sample_rate: float) -> dp_event.DpEvent:
    step: dp_event.DpEvent = dp_event.GaussianDpEvent(sigma)
    if sample_rate < 1.0:
        step = dp_event.PoissonSampledDpEvent(sample_rate, step)
    return dp_event.SelfComposedDpEvent(step, steps)


def epsilon(sigma: float, steps: int, sample_rate: float, delta: float, accountant: str) -> float:
    """ε after ``steps`` Gaussian steps of noise multiplier ``sigma`` (noise std / clip),
    each over a Poisson sample of rate ``sample_rate`` (1.0: everything), at ``delta``."""
    if steps <= 0:
        return 0.0
    acc = PLDAccountant() if accountant == "pld" else RdpAccountant()
    acc.compose(_event(sigma, steps, sample_rate))
    return float(acc.get_epsilon(delta))


def noise_for_budget(
    epsilon: float, delta: float, steps: int, sample_rate: float, accountant: str
) -> float:
    """The smallest noise multiplier whose ``steps`` steps stay within ``epsilon`` at
    ``delta`` (bisection on the accountant, to 0.1 %); ValueError when even a huge one
    does not."""
    hi = 1.0
    while _eps(hi, steps, sample_rate, delta, accountant) > epsilon:
        hi *= 2
        if hi > _SIGMA_MAX:
            raise ValueError(f"no noise multiplier keeps {steps} steps within ε={epsilon}")
    lo = 0.0
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2
        if _eps(mid, steps, sample_rate, delta, accountant) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def _eps(sigma: float, steps: int, sample_rate: float, delta: float, accountant: str) -> float:
    return epsilon(sigma, steps, sample_rate, delta, accountant) if sigma > 0 else float("inf")
