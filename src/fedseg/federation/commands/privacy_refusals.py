"""Plan combinations the privacy mechanisms cannot run with, refused before a run starts
(``run_folder.check_plan_runs``, a new run and every restart), each with one line that says
why and what to do (``PlanError``).

The rules, by what the aggregator may see:

- secure aggregation and HE hide single updates: the aggregator learns only their sum;
  site-level DP hands the aggregation only the noisy mean of the clipped updates. So a
  strategy that needs single updates (``Strategy.streams`` False: median, trimmed-mean,
  krum, cyclic, single-pass), the update-outlier alarm switched on explicitly
  (``alarms.update_outlier: true``), the sites' optimizer states averaged in clear
  (``optimizer_state: average``: they would travel unprotected), and norm bounds relative
  to the round's median set to a value of one's own are refused with them (a bound left at
  its default is not applied: the mechanism's clip takes its place, one run-log line);
- secure aggregation needs at least ``MIN_SECAGG_SITES`` training sites per round (with
  two, each learns the other's update from the sum), a threshold no larger than them,
  and a straggler quorum (``rounds.straggler``) that keeps at least the threshold: a cut
  site is a dropped peer, and a sum of fewer than the threshold cannot be unmasked;
- case-level DP (DP-SGD): no batch norm (its running statistics are not private), one
  patch per case (a case would be several records);
- a DP budget: a plan that gives its noise multiplier must fit its planned rounds in the
  budget (site level: one step per round); the accountant (and, for HE, TenSEAL) must be
  installed: the ``privacy`` extra.
"""

from __future__ import annotations

import importlib.util

from fedseg.errors import PlanError
from fedseg.federation.rounds.central_dp import secagg_threshold
from fedseg.federation.rounds.participation import n_participants
from fedseg.federation.rounds.straggler import quorum_count
from fedseg.federation.rounds.strategies.base import Strategy
from fedseg.federation.rounds.strategies.registry import STRATEGIES
from fedseg.plan import BoundsConfig, PlanConfig
from fedseg.privacy import accounting, he
from fedseg.privacy.accounting import INSTALL_HINT
from fedseg.privacy.visibility import withheld_by

#: fewest training sites per round secure aggregation can hide one update among
MIN_SECAGG_SITES = 3


def _streaming_names() -> str:
    names = [n for n, cls in STRATEGIES.items() if cls.streams and "segmentation" in cls.tasks]
    return ", ".join(names[:-1]) + " or " + names[-1]


def check_privacy(plan: PlanConfig, strategy: Strategy) -> None:  # type: ignore[type-arg]
    """Raise the one-line ``PlanError`` of the first refused combination (module doc)."""
    p = plan.privacy
    key = withheld_by(p)
    if key is not None:
        sees = (
            "hands the aggregation only the noisy mean of the clipped updates"
            if key.startswith("privacy.dp")
            else "lets the aggregator see only their sum"
        )
        if not strategy.streams:
            raise PlanError(
                f"strategy {plan.strategy.name} needs every site's update; {key} {sees}: "
                f"choose {_streaming_names()}"
            )
        if plan.alarms.update_outlier:
            raise PlanError(
                f"alarms.update_outlier needs each site's update; {key} {sees}: set it to "
                "null or false"
            )
        if strategy.params.optimizer_state == "average":
            raise PlanError(
                f"strategy.params.optimizer_state average: the sites' optimizer states would "
                f"travel and be averaged in clear, outside {key}: choose reset or keep-local"
            )
        defaults = BoundsConfig()
        for name in ("update_norm_ratio", "reject_norm_ratio"):
            value = getattr(plan.bounds, name)
            if plan.bounds.enabled and value is not None and value != getattr(defaults, name):
                why = (
                    "must not use single norms (they would change the DP sensitivity)"
                    if key.startswith("privacy.dp")
                    else "cannot see single norms"
                )
                clip = "privacy.dp.clip_norm" if key.startswith("privacy.dp") else (
                    "privacy.secagg.clip_norm" if p.secure_aggregation else "the sites' clip"
                )  # fmt: skip
                raise PlanError(
                    f"bounds.{name} {value:g} cannot apply with {key}: the aggregator {why}; "
                    f"set it to null ({clip} bounds every update)"
                )
    if p.secure_aggregation:
        n = _trainers_per_round(plan, strategy)
        if n < MIN_SECAGG_SITES:
            raise PlanError(
                f"secure aggregation needs at least {MIN_SECAGG_SITES} sites training per "
                f"round, this plan has {n} (with 2, each learns the other's update from the "
                "sum): add sites or raise sites_per_round/fraction"
            )
        t = secagg_threshold(plan, n)
        if t > n:
            raise PlanError(
                f"privacy.secagg.threshold {t} exceeds the {n} sites training per round: "
                "lower it (null: ceil(2n/3))"
            )
        q = quorum_count(plan.straggler, n)
        if q is not None and q < t:
            raise PlanError(
                f"straggler.quorum {plan.straggler.quorum:g} may cut a round to {q} of its {n} "
                f"training sites, fewer than the {t} secure aggregation needs to unmask the "
                f"sum: raise the quorum to at least {t / n:.2f} or lower privacy.secagg.threshold"
            )
    if p.dp.level == "case":
        if plan.network.norm == "batch":
            raise PlanError(
                "privacy.dp level case: DP-SGD cannot keep batch statistics private: use "
                "network.norm instance or group"
            )
        if plan.train.patches_per_case > 1:
            raise PlanError(
                f"privacy.dp level case: train.patches_per_case {plan.train.patches_per_case} "
                "would make one case several records: set it to 1"
            )
    if p.dp.level != "none":
        try:
            accounting.require_accounting()
        except Exception as exc:
            raise PlanError(str(exc)) from None
    if p.dp.level == "site" and p.dp.noise_multiplier is not None:
        rounds = strategy.planned_rounds(plan.rounds, len(plan.sites))
        eps = accounting.epsilon(p.dp.noise_multiplier, rounds, 1.0, p.dp.delta,
                                 p.dp.accountant)  # fmt: skip
        if eps > p.dp.epsilon:
            raise PlanError(
                f"privacy.dp: {rounds} rounds at noise {p.dp.noise_multiplier:g} take ε to "
                f"{eps:.3g} > {p.dp.epsilon:g} at δ={p.dp.delta:g}: lower rounds, raise "
                "noise_multiplier or epsilon, or leave noise_multiplier null (the smallest "
                "that keeps the budget)"
            )
    if p.he.scheme != "none" and importlib.util.find_spec("tenseal") is None:
        raise PlanError(f"privacy.he needs the privacy extra: {INSTALL_HINT}")
    he.check_plan(p.he, plan.network, list(plan.sites))


def _trainers_per_round(plan: PlanConfig, strategy: Strategy) -> int:  # type: ignore[type-arg]
    params = strategy.params
    return n_participants(len(plan.sites), getattr(params, "fraction", None),
                          getattr(params, "sites_per_round", None))  # fmt: skip
