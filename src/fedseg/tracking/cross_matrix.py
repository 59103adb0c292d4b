"""The cross-site matrix: how each site's local models did on each site's validation cases.

One cell per (model site, evaluating site): the stored summaries of the local models of
the chosen model rounds, collapsed over those rounds. Every round re-measures the same
cases, so the rounds are not independent samples: a cell's ``mean`` is the mean over
rounds of the per-round means, its ``sd`` bounds the per-case standard deviation of the
round-averaged values by the mean of the rounds' standard deviations (Minkowski; the same
conservative bound ``curves`` uses), and its ``n`` is the evaluator's number of cases,
never the number of rounds. The diagonal (a site's own cases) is the home check.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fedseg.tracking.store import CROSS_DICE_DIFF, CrossRow


@dataclass(frozen=True)
class CrossCell:
    """``model_site``'s local models on ``eval_site``'s cases, rounds collapsed: ``mean``
    and ``sd`` of the per-case values (metric units), ``n`` cases, ``rounds`` the model
    rounds behind it and ``round_means`` their per-round means (same order)."""

    model_site: str
    eval_site: str
    mean: float
    sd: float
    n: int
    rounds: tuple[int, ...]
    round_means: tuple[float, ...]

    @property
    def home(self) -> bool:
        return self.model_site == self.eval_site


def cross_cells(
    rows: list[CrossRow],
    *,
    region: str = "mean",
    metric: str = CROSS_DICE_DIFF,
    model_rounds: set[int] | None = None,
) -> list[CrossCell]:
    """The collapsed cells of ``rows`` for one region and metric, only local models of
    ``model_rounds`` when given; ordered by model site, then evaluating site."""
    by_pair: dict[tuple[str, str], list[CrossRow]] = defaultdict(list)
    for r in rows:
        if r.region != region or r.metric != metric or r.summary.n <= 0:
            continue
        if model_rounds is not None and r.model_round not in model_rounds:
            continue
        by_pair[(r.model_site, r.eval_site)].append(r)
    cells = []
    for (model_site, eval_site), pair in sorted(by_pair.items()):
        pair.sort(key=lambda r: r.model_round)
        means = np.array([r.summary.mean for r in pair], dtype=np.float64)
        sds = np.array([r.summary.std for r in pair], dtype=np.float64)
        cells.append(CrossCell(
            model_site, eval_site, float(means.mean()), float(sds.mean()),
            max(r.summary.n for r in pair), tuple(r.model_round for r in pair),
            tuple(float(m) for m in means),
        ))  # fmt: skip
    return cells


def cross_matrix(
    cells: list[CrossCell],
) -> tuple[list[str], list[str], np.ndarray]:
    """``(model_sites, eval_sites, M)`` with ``M[i, j]`` the mean of model site i's cell at
    evaluator j (NaN where no evidence), for a heatmap."""
    models = sorted({c.model_site for c in cells})
    evaluators = sorted({c.eval_site for c in cells})
    m = np.full((len(models), len(evaluators)), np.nan)
    for c in cells:
        m[models.index(c.model_site), evaluators.index(c.eval_site)] = c.mean
    return models, evaluators, m
