"""Cross-site validation, engine-free and torch-free: when it runs and who validates what.

Plan key ``cross_site`` (``plan.CrossSiteConfig``). After round r (a *cross round*: rounds
1, 1 + every, 1 + 2 every, ...) the aggregator keeps the local models of up to
``models_per_round`` sites (``kept_models``: round-robin over the cross rounds in the plan's
site order, so every site is covered) and sends each one, with round r+1's task, to the
``evaluators_per_model`` sites ``assign`` gives it; the last round's models ride on the
final validation. In a cross round every training site also validates its own fresh local
model on its own cases (the home check; no model moves).

``assign``: an *evaluator* is a site that declared at least the plan's
``privacy.min_summary_cases`` validation cases (fewer could send no summary); a site with
fewer is never an evaluator, but its local model is still validated elsewhere. Per model
round a permutation of the model sites and evaluators together is drawn from
``SeedSequence([plan.seed, model_round, 0xC5])`` (the set is sorted first, so the draw does
not depend on the order sites are given in); each model goes to the evaluators that follow
its site cyclically, never to its own site. With every site an evaluator and every site
training, each evaluator gets exactly ``evaluators_per_model`` models; over the rounds every
pair occurs.

``resolve``: ``enabled: null`` is on unless the plan's privacy keeps single updates from
the aggregator (``privacy.visibility.withheld_by``: secure aggregation, HE, site-level DP):
a local model sent to another site would show it one site's update. ``true`` under such
privacy is refused (``check_cross_site``, a one-line ``PlanError``); ``false`` is off
(no home check either). ``task: synthesis`` and sequential strategies (one site trains per
round: there is no round of parallel local models to compare) never run it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedseg.errors import PlanError
from fedseg.plan import CrossSiteConfig, PlanConfig
from fedseg.privacy.visibility import withheld_by
from fedseg.run_folder import DeclaredCases, Task

#: the last entry of the assignment's seed (``SeedSequence([seed, round, CROSS_SEED])``)
CROSS_SEED = 0xC5


def off_reason(plan: PlanConfig, sequential: bool = False) -> str | None:
    """Why cross-site validation does not run for ``plan`` (None: it runs). ``sequential``:
    the plan's strategy trains one site per round."""
    cfg = plan.cross_site
    if cfg.enabled is False:
        return "cross_site.enabled is false"
    if plan.task == Task.SYNTHESIS:
        return "task: synthesis (the evidence is Dice of segmentation)"
    key = withheld_by(plan.privacy)
    if key is not None:
        return f"{key} keeps single updates from the aggregator; a site would see another's"
    if sequential:
        return f"strategy {plan.strategy.name} trains one site per round"
    return None


def check_cross_site(plan: PlanConfig) -> None:
    """Refuse ``cross_site.enabled: true`` where it cannot run (one-line ``PlanError``)."""
    if plan.cross_site.enabled is not True:
        return
    key = withheld_by(plan.privacy)
    if key is not None:
        raise PlanError(
            f"cross_site.enabled true: other sites would validate single local models, which "
            f"{key} keeps even from the aggregator; set cross_site.enabled to null or false"
        )
    if plan.task == Task.SYNTHESIS:
        raise PlanError(
            "cross_site.enabled true: task synthesis has no segmentation Dice to compare; "
            "set cross_site.enabled to null or false"
        )


def resolve(plan: PlanConfig, sequential: bool = False) -> CrossSiteConfig | None:
    """The plan's cross-site settings when it runs (after ``check_cross_site``), else None."""
    check_cross_site(plan)
    return plan.cross_site if off_reason(plan, sequential) is None else None


def is_cross_round(cfg: CrossSiteConfig, rnd: int) -> bool:
    """Whether round ``rnd``'s local models are validated (and home-checked): rounds 1,
    1 + every, 1 + 2 every, ..."""
    return rnd >= 1 and (rnd - 1) % cfg.every == 0


def evaluators(
    declared: Mapping[str, DeclaredCases], sites: Sequence[str], floor: int
) -> list[str]:
    """The ``sites`` that may evaluate: those that declared at least ``floor`` val cases."""
    return [s for s in sites if s in declared and declared[s].n_val >= max(int(floor), 1)]


def kept_models(
    cfg: CrossSiteConfig, rnd: int, trained: Sequence[str], order: Sequence[str]
) -> list[str]:
    """The ``trained`` sites whose round-``rnd`` local models are kept: all, or at most
    ``models_per_round`` of them, taken cyclically in the plan's site ``order`` from where
    the previous cross round stopped (round-robin), returned in ``order``."""
    have = [s for s in order if s in set(trained)]
    cap = cfg.models_per_round
    if cap is None or cap >= len(have) or not have:
        return have
    index = (rnd - 1) // cfg.every  # the how-manieth cross round
    start = (index * cap) % len(order)
    ring = [order[(start + i) % len(order)] for i in range(len(order))]
    chosen = [s for s in ring if s in have][:cap]
    return [s for s in order if s in chosen]


def assign(
    models: Sequence[str], evaluator_sites: Sequence[str], per_model: int, seed: int,
    model_round: int,
) -> dict[str, list[str]]:  # fmt: skip
    """``{evaluator: [model sites it validates]}`` for the local models of ``models`` (see
    the module doc); evaluators with nothing to validate are absent. Deterministic."""
    evals = set(evaluator_sites)
    pool = sorted(set(models) | evals)
    if not pool or not evals:
        return {}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(model_round), CROSS_SEED]))
    ring = [pool[i] for i in rng.permutation(len(pool))]
    pos = {s: i for i, s in enumerate(ring)}
    out: dict[str, list[str]] = {}
    for m in sorted(set(models)):
        got = 0
        for step in range(1, len(ring)):
            e = ring[(pos[m] + step) % len(ring)]
            if e in evals:
                out.setdefault(e, []).append(m)
                got += 1
                if got == per_model:
                    break
    return {e: sorted(ms) for e, ms in sorted(out.items())}
