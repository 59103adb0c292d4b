"""Evaluate a model set on labelled cases: typed per-case BraTS metrics, their summaries, a CSV.

This is the one evaluation path: a site validating the global model, the centralized
runner's epochs, ``fedseg compare``, the INT8 export's accuracy control and ``fedseg
evaluate`` all call ``evaluate_cases`` and get one ``CaseResult`` per case; what a site
shares is ``summarize_cases`` of those results.

Which cases to evaluate (a split, a whole site) is the caller's choice: pass ``Case``s (read
from disk one at a time) or already loaded ``CaseVolumes``. Segmentation is
``segmenter.segment_volumes`` (the same sliding window as ``fedseg segment``); metrics come
from ``model.metrics.case_metrics`` (the BraTS empty-mask rules live there). CSV columns:
``case_id`` then ``<region>_<metric>`` for REGIONS x METRICS, e.g. ``ET_dice, ET_jaccard,
ET_hd95, ET_sensitivity, ET_specificity, TC_dice, ...``; HD95 in mm.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedseg.data.cases import (
    Case,
    CaseVolumes,
    discover_cases,
    load_case,
)
from fedseg.data.labels import REGIONS
from fedseg.data.splits import load_split
from fedseg.errors import FedsegError
from fedseg.model.metrics import METRICS, case_metrics, mean_dice
from fedseg.model.segmenter import ModelSet, segment_volumes
from fedseg.model.summary import Summary, summarize

#: Metric columns of the CSV, in order (after ``case_id``).
COLUMNS: tuple[str, ...] = tuple(f"{r}_{m}" for r in REGIONS for m in METRICS)

#: ``summaries[region][metric]``: what a site sends for one validated model.
Summaries = dict[str, dict[str, Summary]]


@dataclass(frozen=True)
class CaseResult:
    """Metrics of one case: ``metrics[region][metric]`` (``case_metrics``' layout)."""

    case_id: str
    metrics: dict[str, dict[str, float]]

    @property
    def values(self) -> dict[str, float]:
        """The metrics as CSV columns: ``values["ET_dice"]``, ..."""
        return {f"{r}_{m}": v for r, ms in self.metrics.items() for m, v in ms.items()}

    @property
    def mean_dice(self) -> float:
        """Mean Dice over ET, TC, WT."""
        return mean_dice(self.metrics)

    @classmethod
    def from_columns(cls, case_id: str, values: dict[str, float]) -> CaseResult:
        """A result from CSV columns (``COLUMNS`` names)."""
        return cls(case_id, {r: {m: float(values[f"{r}_{m}"]) for m in METRICS} for r in REGIONS})


def select_cases(data: Path, split: str, *, allow_absent: bool = False) -> list[Case]:
    """The cases of ``data`` on side ``split`` (train/val) of its persistent split, or all.
    A site that declares a modality absent is refused (its cases would be scored on a zero
    channel) unless ``allow_absent``, or once its cases are completed."""
    if split == "all":
        cases = discover_cases(data)
    elif split not in ("train", "val"):
        raise FedsegError(f"--split {split}: use train, val or all")
    else:
        cases = list(getattr(load_split(data), split))
    lacking = next((c for c in cases if c.absent), None)
    if lacking is not None and not allow_absent:
        raise FedsegError(
            f"{data}: case {lacking.case_id} lacks {', '.join(lacking.absent)} (declared absent "
            "in the site's fedseg_site.yaml); complete the site with `fedseg complete` first"
        )
    return cases


def evaluate_case(
    case: Case | CaseVolumes,
    models: ModelSet,
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    metrics: Sequence[str] = METRICS,
    load: Callable[[Case], CaseVolumes] | None = None,
) -> CaseResult:
    """Segment one labelled case and score ``metrics`` against its reference label.
    ``load`` reads a ``Case`` (default ``load_case``; validation passes its case cache's)."""
    if case.label is None:
        raise FedsegError(
            f"case {case.case_id}: no label file; evaluation needs the reference segmentation"
        )
    if isinstance(case, CaseVolumes):
        volumes = case
    else:
        volumes = load(case) if load is not None else load_case(case, with_label=True)
    if volumes.label is None:
        raise FedsegError(f"case {case.case_id} has no label map; evaluation needs labels")
    seg = segment_volumes(volumes, models, overlap=overlap, batch_size=batch_size)
    return CaseResult(
        volumes.case_id, case_metrics(seg.labels, volumes.label, volumes.spacing, metrics)
    )


def evaluate_cases(
    cases: Iterable[Case | CaseVolumes],
    models: ModelSet,
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    metrics: Sequence[str] = METRICS,
    on_case: Callable[[CaseResult], None] | None = None,
    load: Callable[[Case], CaseVolumes] | None = None,
) -> list[CaseResult]:
    """Evaluate every case in order, one in memory at a time (``load``: as
    ``evaluate_case``); ``on_case`` is called after each (progress)."""
    cases = list(cases)
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
        result = evaluate_case(
            case, models, overlap=overlap, batch_size=batch_size, metrics=metrics, load=load
        )
        results.append(result)
        if on_case is not None:
            on_case(result)
    return results


def summarize_cases(results: Sequence[CaseResult]) -> Summaries:
    """Per-case results -> ``summaries[region][metric]`` (mean, population std, n; NaNs left
    out) for every region and metric they hold, plus region ``mean``/metric ``dice``: the
    per-case mean Dice over ET, TC, WT, summarized. No results: no summaries."""
    out: Summaries = {}
    if not results:
        return out
    for region, by_metric in results[0].metrics.items():
        for metric in by_metric:
            out.setdefault(region, {})[metric] = summarize(
                r.metrics[region][metric] for r in results
            )
    if all(g in out and "dice" in out[g] for g in REGIONS):
        out["mean"] = {"dice": summarize(r.mean_dice for r in results)}
    return out


def summarize_paired(results: Sequence[CaseResult], reference: Sequence[CaseResult]) -> Summaries:
    """Dice of ``results`` and its per-case difference to ``reference`` (the same cases,
    another model): ``summaries[region]`` with ``dice`` and ``dice_diff`` (results -
    reference) for ET, TC, WT and ``mean`` (mean Dice over the three). Cases are paired by
    id; a case missing from ``reference`` is left out of the difference."""
    ref = {r.case_id: r for r in reference}
    out: Summaries = {}
    for region in (*REGIONS, "mean"):

        def dice(r: CaseResult, region: str = region) -> float:
            return r.mean_dice if region == "mean" else r.metrics[region]["dice"]

        out[region] = {
            "dice": summarize(dice(r) for r in results),
            "dice_diff": summarize(
                dice(r) - dice(ref[r.case_id]) for r in results if r.case_id in ref
            ),
        }
    return out


def write_metrics_csv(results: Sequence[CaseResult], path: Path) -> Path:
    """Write one row per case (``case_id`` + ``COLUMNS``); values with full float precision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", *COLUMNS])
        for r in results:
            values = r.values
            writer.writerow([r.case_id, *(repr(values[c]) for c in COLUMNS)])
    tmp.replace(path)
    return path


def read_metrics_csv(path: Path) -> list[CaseResult]:
    """Read a CSV written by ``write_metrics_csv``."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [CaseResult.from_columns(r["case_id"], {c: float(r[c]) for c in COLUMNS}) for r in rows]
