"""Differential-privacy accounting: ε of a composed Gaussian mechanism, and the noise that
keeps a budget. Torch-free and engine-free; the only module that imports ``dp_accounting``
(Google's dp-accounting, the ``privacy`` extra), so that both DP levels count the same way:

- ``epsilon(sigma, steps, sample_rate, delta, accountant)``: ε after ``steps`` runs of the
  Gaussian mechanism with noise multiplier ``sigma`` (noise std / sensitivity), each on a
  Poisson sample of rate ``sample_rate`` (1.0: no sampling, the whole population every
  step), at ``delta``. ``accountant`` is ``"rdp"`` (Rényi DP, the usual choice, a little
  pessimistic) or ``"pld"`` (privacy-loss distributions, tighter). Zero steps spend 0;
- ``noise_for_budget(epsilon, delta, steps, sample_rate, accountant)``: the smallest noise
  multiplier whose ε after ``steps`` is at most ``epsilon`` (bisection on the accountant,
  to a relative ``SIGMA_RTOL``; the value returned is always within the budget);
- ``require_accounting()``: a one-line ``FedsegError`` when the extra is not installed.

Every argument and result is a plain ``float``/``int``/``str``. Users: site-level DP at the
aggregator (``federation.rounds.central_dp``: one step per round a site's update counts,
sample rate 1 — participation is drawn from a public seed, so it gives no amplification)
and case-level DP-SGD at each site (``train.dp``: one step per optimizer step, Poisson rate
of a case per step). The neighbouring relation is dp-accounting's default (add or remove
one record: one case, or one site's whole update).

dp-accounting logs absl warnings for low RDP orders with sampling ("failed to converge …
Excluding this order"): harmless, silenced here.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from fedseg.errors import FedsegError

#: the extra's install line, said whenever it is missing
INSTALL_HINT = "pip install 'fedseg[privacy]'"
#: relative precision of ``noise_for_budget``'s bisection
SIGMA_RTOL = 1e-4
#: ``noise_for_budget`` gives up above this multiplier (a budget no noise can keep)
SIGMA_MAX = 1e6


@cache
def _dp() -> Any:
    """The ``dp_accounting`` module (imported once, absl logging silenced)."""
    try:
        import dp_accounting
    except ImportError:
        raise FedsegError(f"privacy.dp needs the privacy extra: {INSTALL_HINT}") from None
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with dp-accounting
        pass
    return dp_accounting


def require_accounting() -> None:
    """Raise the one-line ``FedsegError`` when dp-accounting (the extra) is missing."""
    _dp()


def epsilon(
    sigma: float, steps: int, sample_rate: float = 1.0, delta: float = 1e-5,
    accountant: str = "rdp",
) -> float:  # fmt: skip
    """ε after ``steps`` Gaussian steps of noise multiplier ``sigma``, each on a Poisson
    sample of rate ``sample_rate`` (1.0: no sampling), at ``delta`` (see the module doc)."""
    if steps < 0 or sigma <= 0 or not 0 < sample_rate <= 1 or not 0 < delta < 1:
        raise ValueError(
            f"epsilon: need steps >= 0, sigma > 0, 0 < sample_rate <= 1, 0 < delta < 1; got "
            f"{steps}, {sigma}, {sample_rate}, {delta}"
        )
    if steps == 0:
        return 0.0
    if accountant not in ("rdp", "pld"):
        raise ValueError(f"accountant must be rdp or pld, got {accountant!r}")
    return _epsilon(float(sigma), int(steps), float(sample_rate), float(delta), accountant)


@cache
def _epsilon(sigma: float, steps: int, sample_rate: float, delta: float, accountant: str) -> float:
    dp = _dp()
    event = dp.GaussianDpEvent(sigma)
    if sample_rate < 1.0:
        event = dp.PoissonSampledDpEvent(sample_rate, event)
    acc = dp.rdp.RdpAccountant() if accountant == "rdp" else dp.pld.PLDAccountant()
    acc.compose(dp.SelfComposedDpEvent(event, steps))
    return float(acc.get_epsilon(delta))


_epsilon_of = epsilon  # ``noise_for_budget``'s first argument is named ``epsilon``


def noise_for_budget(
    epsilon: float, delta: float, steps: int, sample_rate: float = 1.0,
    accountant: str = "rdp",
) -> float:  # fmt: skip
    """The smallest noise multiplier (to ``SIGMA_RTOL``) whose ε after ``steps`` steps at
    ``sample_rate`` and ``delta`` is at most ``epsilon``. One-line ``FedsegError``
    when no multiplier up to ``SIGMA_MAX`` keeps it."""
    if epsilon <= 0:
        raise ValueError(f"the budget must be > 0, got {epsilon}")
    if steps <= 0:
        return SIGMA_RTOL  # nothing is spent: any noise keeps the budget

    def over(sigma: float) -> bool:
        return _epsilon_of(sigma, steps, sample_rate, delta, accountant) > epsilon

    lo, hi = 0.0, 1.0
    while over(hi):
        lo, hi = hi, hi * 2
        if hi > SIGMA_MAX:
            raise FedsegError(
                f"privacy.dp: no noise multiplier up to {SIGMA_MAX:g} keeps ε <= "
                f"{epsilon:g} at δ={delta:g} over {steps} steps; raise epsilon or delta"
            )
    if lo == 0.0:  # find a multiplier that is over the budget, halving down
        lo = hi / 2
        while not over(lo) and lo > 1e-6:
            hi, lo = lo, lo / 2
    while hi - lo > SIGMA_RTOL * hi:
        mid = (lo + hi) / 2
        if over(mid):
            lo = mid
        else:
            hi = mid
    return hi


def describe_budget(spent: float, budget: float, delta: float) -> str:
    """``ε 7.51 of 8 at δ=1e-05`` (status and report wording)."""
    return f"ε {spent:.3g} of {budget:g} at δ={delta:g}"
