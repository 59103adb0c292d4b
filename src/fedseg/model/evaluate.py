"""Evaluate a model set on labelled cases: per-case BraTS metrics, a CSV, and their means.

Which cases to evaluate (a split, a whole site) is the caller's choice: pass a list of
``Case``s. Metrics come from ``model.metrics.case_metrics`` (the BraTS empty-mask rules live
there). CSV columns: ``case_id`` then ``<region>_<metric>`` for REGIONS x METRICS, e.g.
``ET_dice, ET_jaccard, ET_hd95, ET_sensitivity, ET_specificity, TC_dice, ...``; HD95 in mm.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedseg.data.cases import Case, load_case
from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.metrics import METRICS, case_metrics
from fedseg.model.segmenter import ModelSet, segment_volumes

#: Metric columns of the CSV, in order (after ``case_id``).
COLUMNS: tuple[str, ...] = tuple(f"{r}_{m}" for r in REGIONS for m in METRICS)


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case: ``values[column]`` for every name in ``COLUMNS``."""

    case_id: str
    values: dict[str, float]


def flatten(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """``case_metrics`` output (region -> metric -> value) -> ``COLUMNS`` -> value."""
    return {f"{r}_{m}": float(metrics[r][m]) for r in REGIONS for m in METRICS}


def evaluate_case(
    case: Case, models: ModelSet, *, overlap: float = 0.5, batch_size: int = 1
) -> CaseResult:
    """Segment one labelled case and score it against its reference label."""
    if case.label is None:
        raise FedsegError(
            f"case {case.case_id}: no label file; evaluation needs the reference segmentation"
        )
    volumes = load_case(case, with_label=True)
    assert volumes.label is not None  # load_case reads it when case.label is set
    seg = segment_volumes(volumes, models, overlap=overlap, batch_size=batch_size)
    return CaseResult(
        case.case_id, flatten(case_metrics(seg.labels, volumes.label, volumes.spacing))
    )


def evaluate_cases(
    cases: Sequence[Case],
    models: ModelSet,
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    on_case: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Evaluate every case in order; ``on_case`` is called after each (progress)."""
    if not cases:
        raise FedsegError("no cases to evaluate; check --data and --split")
    unlabelled = [c.case_id for c in cases if c.label is None]
    if unlabelled:
        raise FedsegError(
            f"{len(unlabelled)} case(s) have no label file (e.g. {unlabelled[0]}); "
            "evaluate only labelled cases (pick a split that has labels)"
        )
    results = []
    for case in cases:
        result = evaluate_case(case, models, overlap=overlap, batch_size=batch_size)
        results.append(result)
        if on_case is not None:
            on_case(result)
    return results


def mean_metrics(results: Sequence[CaseResult]) -> dict[str, float]:
    """Mean over cases of every column."""
    return {col: float(np.mean([r.values[col] for r in results])) for col in COLUMNS}


def write_metrics_csv(results: Sequence[CaseResult], path: Path) -> Path:
    """Write one row per case (``case_id`` + ``COLUMNS``); values with full float precision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", *COLUMNS])
        for r in results:
            writer.writerow([r.case_id, *(repr(r.values[c]) for c in COLUMNS)])
    tmp.replace(path)
    return path


def read_metrics_csv(path: Path) -> list[CaseResult]:
    """Read a CSV written by ``write_metrics_csv``."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [CaseResult(row["case_id"], {c: float(row[c]) for c in COLUMNS}) for row in rows]
