"""Site-level differential privacy (plan ``privacy.dp.level: site``) at the aggregator,
engine-free: the noise multiplier, the budget, the ledger, and the noisy mean of the
clipped updates when the aggregator sees single updates.

The guarantee: any one site's whole contribution to the run (all its updates) changes
what the aggregator releases (the global models) by at most (ε, δ) (DP-FedAvg, McMahan et
al. 2018). Mechanism per round, with ``C = dp.clip_norm`` and ``sigma`` the noise multiplier:

- every site's update (new weights minus the global model, floating arrays) is clipped to
  L2 norm ``C`` — by the site (``update_protection``) and again here when it is visible;
- the m clipped updates are averaged with EQUAL weights, not by training cases: the
  sensitivity of a case-weighted mean to one site depends on that site's (self-declared)
  weight, of the plain mean it is ``C / m`` whatever the sites report;
- Gaussian noise: without a hiding mechanism the aggregator adds N(0, (sigma C/m)²) to every
  value of the mean (central DP: it protects against whoever receives the models and
  against the other sites, not against the aggregator, which sees the single updates).
  With secure aggregation or HE each site adds N(0, sigma² C²/m_min) to its clipped update
  before hiding it (``noise_share_sites``: m_min is the fewest sites a round may sum), so a
  revealed sum of m >= m_min sites carries noise of variance >= sigma² C²; ``c`` colluding
  sites can remove their own shares of it;
- the mechanism hands the strategy ONE update (``DP_MEAN``, like ``hidden_sum.SECURE_SUM``):
  only streaming strategies (``Strategy.streams``) are allowed, which give the same model
  from one pre-averaged update. The data-dependent norm bounds (``bounds.update_norm_ratio``,
  ``reject_norm_ratio``: relative to the round's median) are not applied, they would change
  the sensitivity; the finiteness and shape checks stay. No single site's norm is stored.

Accounting (``privacy.accounting``): each round whose mechanism runs is one Gaussian step
of multiplier sigma at sample rate 1 (participation is drawn from a public seed: no
amplification; a round that aggregates nothing spends nothing). sigma is the plan's
``noise_multiplier`` or the smallest that keeps the planned rounds within ``epsilon`` at
``delta``. Before a round, a round that would take ε past the budget stops the run (one
line); after it, the ledger row ``(round, "*")`` says the ε spent so far — ``*``: the
guarantee covers every site at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedseg.errors import FedsegError
from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.model.weights import Weights
from fedseg.plan import PlanConfig
from fedseg.privacy import accounting
from fedseg.privacy.clipping import add_noise
from fedseg.run_folder import PrivacySpent
from fedseg.tracking.store import RunStore

#: the site name of the one update the mechanism hands the strategy
DP_MEAN = "<dp mean>"
#: the ledger's site for a guarantee that covers every site at once
ALL_SITES = "*"
#: ``TaskRequest.secure`` key: the m_min a site's noise share is sized for (under hiding)
NOISE_SHARE_SITES = "dp_noise_share_sites"


def applies(plan: PlanConfig) -> bool:
    return plan.privacy.dp.level == "site"


def noise_multiplier(plan: PlanConfig) -> float:
    """sigma: the plan's ``dp.noise_multiplier``, else the smallest that keeps ``plan.rounds``
    steps within ``dp.epsilon`` at ``dp.delta``."""
    dp = plan.privacy.dp
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    return accounting.noise_for_budget(dp.epsilon, dp.delta, plan.rounds, 1.0, dp.accountant)


def secagg_threshold(plan: PlanConfig, n_trainers: int) -> int:
    """Secure aggregation's t for ``n_trainers`` sites: the plan's, else ceil(2n/3), >= 2."""
    t = plan.privacy.secagg.threshold
    return t if t is not None else max(2, math.ceil(2 * n_trainers / 3))


def noise_share_sites(plan: PlanConfig, n_trainers: int) -> int:
    """m_min, the fewest sites a round with ``n_trainers`` training sites may sum under a
    hiding mechanism: the larger of the plan's ``min_sites`` (capped at the trainers, as the
    coordinator applies it) and, with secure aggregation, its threshold t (a sum of fewer
    than t sites cannot be unmasked). Each site adds noise of std sigma C/sqrt(m_min)."""
    floor = min(plan.min_sites, n_trainers)
    if plan.privacy.secure_aggregation:
        floor = max(floor, secagg_threshold(plan, n_trainers))
    return max(1, floor)


def share_std(sigma: float, clip_norm: float, min_sites: int) -> float:
    """A site's noise-share std, sigma C / sqrt(m_min): m >= m_min shares sum to a noise of
    variance >= sigma² C²."""
    return sigma * clip_norm / math.sqrt(min_sites)


class SiteDp:
    """The aggregator's site-level DP for one run: sigma, the budget and the ledger."""

    def __init__(self, plan: PlanConfig, store: RunStore) -> None:
        accounting.require_accounting()
        self.store = store
        self.dp = plan.privacy.dp
        spent = store.privacy_ledger(ALL_SITES)
        # a resumed run keeps the noise its first rounds had (the ledger's): the accounting
        # composes one multiplier, whatever the plan file says now
        self.sigma = spent[-1][2].sigma if spent else noise_multiplier(plan)
        #: the plan as the sites get it: ``dp.noise_multiplier`` resolved to sigma
        dp = self.dp.model_copy(update={"noise_multiplier": self.sigma})
        privacy = plan.privacy.model_copy(update={"dp": dp})
        self.plan = plan.model_copy(update={"privacy": privacy})
        b = plan.bounds
        if b.enabled and (b.update_norm_ratio is not None or b.reject_norm_ratio is not None):
            store.log(
                "privacy.dp level site: the norm bounds relative to the round's median "
                "(bounds.update_norm_ratio, reject_norm_ratio) are not applied; every update "
                f"is clipped to privacy.dp.clip_norm {self.dp.clip_norm:g}"
            )

    def steps(self) -> int:
        """Rounds composed so far (the ledger's last ``*`` row; 0 for a new run)."""
        rows = self.store.privacy_ledger(ALL_SITES)
        return rows[-1][2].steps if rows else 0

    def epsilon_after(self, steps: int) -> float:
        return accounting.epsilon(self.sigma, steps, 1.0, self.dp.delta, self.dp.accountant)

    def check_budget(self, rnd: int) -> None:
        """Raise the one-line ``FedsegError`` when round ``rnd`` would take ε past the budget."""
        eps = self.epsilon_after(self.steps() + 1)
        if eps > self.dp.epsilon:
            raise FedsegError(
                f"privacy budget: round {rnd} would take ε to {eps:.3g} > {self.dp.epsilon:g} "
                f"at δ={self.dp.delta:g}; the run stops with model {rnd - 1} (a longer run "
                "needs a new run with a larger privacy.dp.epsilon or noise_multiplier)"
            )

    def record(self, rnd: int) -> PrivacySpent:
        """One more step composed by round ``rnd``: its ledger row (site ``*``)."""
        steps = self.steps() + 1
        spent = PrivacySpent(
            level="site", epsilon=self.epsilon_after(steps), delta=self.dp.delta,
            sigma=self.sigma, clip_norm=self.dp.clip_norm, steps=steps, sample_rate=1.0,
            accountant=self.dp.accountant,
        )  # fmt: skip
        self.store.record_privacy(rnd, ALL_SITES, spent)
        return spent

    def central_mean(
        self, global_weights: Weights, updates: Sequence[SiteUpdate], norms: Mapping[str, float],
        rng: np.random.Generator | None = None,
    ) -> tuple[list[SiteUpdate], list[str]]:  # fmt: skip
        """The round's one update: the global model plus the equal-weight mean of the m
        updates clipped to C, plus N(0, (sigma C/m)²) per value (see the module doc), and the
        sites in it; nothing when there is no update. ``norms``: each update's change norm
        (``aggregation.difference_norm``, floating arrays). Reads the updates one array at a
        time (they may be spooled)."""
        if not updates:
            return [], []
        rng = rng if rng is not None else np.random.default_rng()  # OS entropy
        m, c = len(updates), self.dp.clip_norm
        factors = [min(1.0, c / norms[u.site]) if norms[u.site] > 0 else 1.0 for u in updates]
        std = self.sigma * c / m
        out: Weights = {}
        for k, ref in global_weights.items():
            if ref.dtype.kind not in "fc":
                out[k] = ref  # counters carry no update
                continue
            g = ref.astype(np.float64)
            acc = np.zeros(ref.shape, dtype=np.float64)
            for f, u in zip(factors, updates, strict=True):
                acc += f * (u.weights[k].astype(np.float64) - g)
            mean = add_noise({k: acc / m}, std, rng)[k]
            out[k] = (g + mean).astype(ref.dtype)
        n_train = sum(u.n_train for u in updates)
        return [SiteUpdate(DP_MEAN, out, n_train, float("nan"))], [u.site for u in updates]


def make_site_dp(plan: PlanConfig, store: RunStore) -> SiteDp | None:
    """The run's site-level DP at the aggregator, or None when the plan has none."""
    return SiteDp(plan, store) if applies(plan) else None
