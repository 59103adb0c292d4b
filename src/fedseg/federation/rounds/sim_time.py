"""Simulated time: how long a round would take at real sites, and the challenge's score on it.

Engine-free and torch-free plain functions (and one frozen dataclass, ``SiteSpeed``), in
the spirit of the FeTS 2021 challenge (``fets_challenge/experiment.py``): each site's time
in a round is the sum of its steps, the round lasts as long as its slowest trainer, and a
plan is scored by the area under its best-so-far validation Dice over one simulated week.

Sites' speeds (``site_speeds``) are drawn once per site, reproducibly from
``SeedSequence([seed, 0x71AE, sha256(site)[:4]])``: a compute factor and a network factor,
each ``exp(sigma * z)`` with ``z`` standard normal (lognormal spread across sites, median
1). **The defaults are stated assumptions, not FeTS's measured tables** (which are not
public): one training epoch of the median site (by training cases) takes one hour
(``MEDIAN_EPOCH_S``: the per-case training cost is that hour over the median site's case
count), validating a case costs a quarter of training on it, moving the model one way
takes 5 minutes, compute spread sigma 0.5 and network spread sigma 0.5. There is no
round-to-round noise: a site's time is a function of its speed and its work.

A site's time in a round (``site_round_time``), the challenge's sum of its steps::

    download + validate the global model (n_val x val_s)
    [trainers: + train (n_train x epochs x train_s; with a fixed number of local steps,
               steps x train_s) + validate the local model (n_val x val_s) + upload]

The round's time (``round_time``) is the slowest of its trainers; under a straggler cut
(plan ``straggler``, ``rounds.straggler``) the time at which ``ceil(quorum x m)`` of its
``m`` trainers are done plus ``grace_s``, when that is earlier.

``convergence_score`` is the challenge's convergence metric, exactly: with ``d_r`` the
mean Dice measured in round r (of the model that round received), ``b_r`` the best of
``d_1..d_r`` and ``t_r`` round r's duration, the area ``sum b_r x t_r`` (each round's
best credited over that round's whole duration: the right endpoint of a step function),
plus the last best carried to the end of the budget, over the budget; a round that ends
past the budget counts only up to it. In fedseg's terms round r validates model r - 1,
so a model's Dice is credited from the end of the round that made it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: one simulated week, the challenge's budget
WEEK_S = 7 * 86400.0
#: one training epoch of the median site (by training cases), seconds (an assumption)
MEDIAN_EPOCH_S = 3600.0
#: validating a case costs this share of one training epoch on it (an assumption)
VAL_SHARE = 0.25
#: moving the model one way at the median site, seconds (an assumption)
TRANSFER_S = 300.0
#: lognormal spread across sites of the compute and of the network speed
COMPUTE_SIGMA = 0.5
NETWORK_SIGMA = 0.5
SPEED_STREAM = 0x71AE


@dataclass(frozen=True)
class SiteSpeed:
    """One site's costs in seconds: moving the model each way, one training epoch over one
    case, validating one case."""

    download_s: float
    upload_s: float
    train_s_per_case: float
    val_s_per_case: float


def _site_hash(site: str) -> int:
    return int.from_bytes(hashlib.sha256(site.encode()).digest()[:4], "big")


def site_speeds(
    n_train: Mapping[str, int], seed: int = 0, median_epoch_s: float = MEDIAN_EPOCH_S,
    compute_sigma: float = COMPUTE_SIGMA, network_sigma: float = NETWORK_SIGMA,
) -> dict[str, SiteSpeed]:  # fmt: skip
    """Each site's ``SiteSpeed`` from its training-case count (``n_train``, by site): the
    median per-case training cost makes one epoch of the median site ``median_epoch_s``;
    each site's compute and network factors are its own draws (independent of the other
    sites and of their order)."""
    counts = [max(1, c) for c in n_train.values()]
    per_case = median_epoch_s / float(np.median(counts)) if counts else median_epoch_s
    out = {}
    for site in n_train:
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPEED_STREAM, _site_hash(site)]))
        z_compute, z_network = rng.standard_normal(2)
        compute = math.exp(compute_sigma * z_compute)
        network = math.exp(network_sigma * z_network)
        out[site] = SiteSpeed(
            download_s=TRANSFER_S * network,
            upload_s=TRANSFER_S * network,
            train_s_per_case=per_case * compute,
            val_s_per_case=per_case * VAL_SHARE * compute,
        )
    return out


def site_round_time(
    speed: SiteSpeed, n_train: int, n_val: int, epochs: int, validate: bool = True,
    steps: int = 0,
) -> float:  # fmt: skip
    """One site's seconds in a round (the module's sum): a site with ``epochs`` 0 only
    downloads and validates the global model (nothing when ``validate`` is false too); a
    trainer with ``steps`` > 0 trains that many steps (one case's worth each) instead of
    its epochs."""
    t = 0.0
    if validate or epochs > 0:
        t += speed.download_s
    if validate:
        t += n_val * speed.val_s_per_case
    if epochs > 0:
        t += (steps if steps > 0 else n_train * epochs) * speed.train_s_per_case
        t += n_val * speed.val_s_per_case + speed.upload_s
    return t


def round_time(
    trainer_times: Sequence[float], quorum: float | None = None, grace_s: float = 0.0
) -> float:
    """Seconds of a round whose trainers take ``trainer_times``: the slowest one; with a
    straggler ``quorum``, the ``ceil(quorum x m)``-th fastest plus ``grace_s`` when that is
    earlier (``rounds.straggler``'s rule in simulated time). 0 for no trainers."""
    if not trainer_times:
        return 0.0
    slowest = max(trainer_times)
    if quorum is None:
        return slowest
    need = max(1, math.ceil(quorum * len(trainer_times) - 1e-9))
    return min(slowest, sorted(trainer_times)[need - 1] + grace_s)


def best_so_far(dice: Sequence[float]) -> list[float]:
    """The running best of ``dice`` (a NaN, a round without a score, keeps the best; 0
    before any score)."""
    out, best = [], 0.0
    for d in dice:
        if not math.isnan(d) and d > best:
            best = d
        out.append(best)
    return out


def convergence_score(
    round_times_s: Sequence[float], dice: Sequence[float], budget_s: float = WEEK_S
) -> float:
    """The challenge's convergence score (module doc): ``round_times_s[i]`` is round i+1's
    duration, ``dice[i]`` the Dice measured in it; in [0, 1] for Dice in [0, 1]."""
    if len(round_times_s) != len(dice):
        raise ValueError(f"{len(round_times_s)} round times but {len(dice)} Dice values")
    if budget_s <= 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    area, clock = 0.0, 0.0
    best = best_so_far(dice)
    for t, b in zip(round_times_s, best, strict=True):
        step = min(t, budget_s - clock)
        if step <= 0:
            break
        area += b * step
        clock += t
    if best and clock < budget_s:
        area += best[-1] * (budget_s - clock)
    return area / budget_s


def time_to_fraction(
    round_times_s: Sequence[float], dice: Sequence[float], fraction: float = 0.95,
    budget_s: float = WEEK_S,
) -> float | None:  # fmt: skip
    """Simulated seconds until the best-so-far Dice first reaches ``fraction`` of its final
    value within the budget, credited as the score credits it (from the start of the round
    that measured it); None when there is no positive Dice within the budget."""
    ends = np.cumsum(round_times_s)
    starts = [float(s) for s in np.concatenate([[0.0], ends[:-1]])]
    inside = [i for i, s in enumerate(starts) if s < budget_s]
    best = best_so_far([dice[i] for i in inside])
    if not best or best[-1] <= 0:
        return None
    target = fraction * best[-1]
    return next(starts[i] for i, b in zip(inside, best, strict=True) if b >= target)
