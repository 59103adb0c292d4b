"""A metric summarized over cases: ``Summary`` (mean, std, n) and how to compute it.

It is what a site shares of its validation (the wire message), what a training run
reports and what the run store keeps: never the per-case values themselves. The std is
the population std; NaN values (a metric undefined for a case) are left out of all three.
A summary over fewer than ``MIN_SUMMARY_CASES`` cases (by default) never leaves a site
(``federation.rounds.disclosure``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: The default smallest number of cases a summary that leaves a site may cover: a mean of
#: one case is that patient's value; mean and std of two give both values.
MIN_SUMMARY_CASES = 3


@dataclass(frozen=True)
class Summary:
    """A metric summarized over a site's cases: mean, standard deviation, count."""

    mean: float
    std: float
    n: int


def summarize(values: Iterable[float]) -> Summary:
    """Mean, population std and count of ``values`` (NaNs excluded)."""
    arr = np.asarray([v for v in values if v == v], dtype=np.float64)
    if arr.size == 0:
        return Summary(float("nan"), float("nan"), 0)
    return Summary(float(arr.mean()), float(arr.std()), int(arr.size))
