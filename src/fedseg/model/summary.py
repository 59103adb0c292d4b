"""A metric summarized over cases: ``Summary`` (mean, std, n) and how to compute it.

It is what a site shares of its validation (the wire message), what a training run
reports and what the run store keeps: never the per-case values themselves. The std is
the population std; NaN values (a metric undefined for a case) are left out of all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np


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


def iter_summaries(
    per_case: list[dict[str, dict[str, float]]],
) -> Iterator[tuple[str, str, Summary]]:
    """Summaries ``(region, metric, Summary)`` of per-case ``values[region][metric]`` dicts."""
    if not per_case:
        return
    for region, by_metric in per_case[0].items():
        for metric in by_metric:
            yield region, metric, summarize(c[region][metric] for c in per_case)
