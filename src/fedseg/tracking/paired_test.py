"""Paired comparison of two models on the same cases (runs at the site holding the cases).

Per-case CSV files (written by ``fedseg evaluate``) are read in either layout:

- long: columns ``case_id, region, metric, value`` and optionally ``site`` and ``model``;
- wide: ``case_id`` (optionally ``site``, ``model``) and one column per ``<REGION>_<metric>``
  (e.g. ``ET_dice``, ``WT_hd95``); ``<metric>_<REGION>`` is accepted too.

A file holding several models (a ``model`` column) is split by it. Cases are paired on
(site, case_id). Only the comparison table (counts, means, medians, Wilcoxon signed-rank
statistic and two-sided p-value) needs to leave the site.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.tracking.curves import ALL_REGIONS

#: (site, case_id) -> region -> metric -> value
CaseTable = dict[tuple[str, str], dict[str, dict[str, float]]]
LOWER_IS_BETTER = frozenset({"hd95", "loss"})


@dataclass(frozen=True)
class ComparisonRow:
    """Paired comparison of model B against model A in one region and metric."""

    region: str
    metric: str
    n: int
    mean_a: float
    mean_b: float
    median_a: float
    median_b: float
    mean_diff: float  # B - A
    statistic: float
    p: float
    better: str  # "A", "B" or "-" (no significant difference at alpha)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def read_case_tables(path: Path) -> dict[str, CaseTable]:
    """All models in a per-case CSV: ``model name -> CaseTable`` (name = file stem if none)."""
    path = Path(path)
    if not path.is_file():
        raise FedsegError(f"{path}: per-case CSV not found (write one with `fedseg evaluate`)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = list(reader)
    if "case_id" not in header:
        raise FedsegError(f"{path}: no case_id column; expected a per-case CSV from evaluate")
    tables: dict[str, CaseTable] = {}
    long = {"region", "metric", "value"} <= set(header)
    wide_cols = {} if long else _wide_columns(header)
    if not long and not wide_cols:
        raise FedsegError(
            f"{path}: no metric columns; expected columns region,metric,value or e.g. ET_dice"
        )
    for i, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        model = row.get("model") or path.stem
        key = (row.get("site", ""), row["case_id"])
        case = tables.setdefault(model, {}).setdefault(key, {})
        try:
            if long:
                case.setdefault(row["region"], {})[row["metric"].lower()] = float(row["value"])
            else:
                for col, (region, metric) in wide_cols.items():
                    if row.get(col, "") != "":
                        case.setdefault(region, {})[metric] = float(row[col])
        except ValueError:
            raise FedsegError(f"{path}:{i}: a metric value is not a number") from None
    if not tables:
        raise FedsegError(f"{path}: no cases")
    return tables


def read_case_table(path: Path, model: str | None = None) -> CaseTable:
    """One model's cases from a per-case CSV (``model`` needed if the file holds several)."""
    tables = read_case_tables(path)
    if model is None:
        if len(tables) > 1:
            raise FedsegError(
                f"{path}: holds models {sorted(tables)}; name one with --model-a/--model-b"
            )
        return next(iter(tables.values()))
    if model not in tables:
        raise FedsegError(f"{path}: no model {model!r}; it holds {sorted(tables)}")
    return tables[model]


def values(table: CaseTable, region: str, metric: str) -> dict[tuple[str, str], float]:
    """Per-case values; region ``mean`` is the mean over ET/TC/WT when not stored."""
    out: dict[tuple[str, str], float] = {}
    for key, case in table.items():
        if metric in case.get(region, {}):
            out[key] = case[region][metric]
        elif region == "mean" and all(metric in case.get(r, {}) for r in REGIONS):
            out[key] = float(np.mean([case[r][metric] for r in REGIONS]))
    return out


def paired_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired samples; (statistic, p). p=1 if a == b."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size == 0 or not np.any(d != 0):
        return float("nan"), 1.0
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def compare_tables(
    a: CaseTable, b: CaseTable, metrics: tuple[str, ...] = ("dice", "hd95"), alpha: float = 0.05
) -> list[ComparisonRow]:
    """Paired comparison per region (ET, TC, WT, mean) and metric on the common cases."""
    rows: list[ComparisonRow] = []
    for metric in metrics:
        for region in ALL_REGIONS:
            va, vb = values(a, region, metric), values(b, region, metric)
            keys = sorted(set(va) & set(vb))
            if not keys:
                continue
            xa = np.array([va[k] for k in keys])
            xb = np.array([vb[k] for k in keys])
            stat, p = paired_test(xa, xb)
            diff = float(np.mean(xb - xa))
            better = "-"
            if p < alpha and diff != 0:
                b_up = diff > 0
                better = "B" if b_up != (metric in LOWER_IS_BETTER) else "A"
            rows.append(ComparisonRow(
                region, metric, len(keys), float(np.mean(xa)), float(np.mean(xb)),
                float(np.median(xa)), float(np.median(xb)), diff, stat, p, better,
            ))  # fmt: skip
    if not rows:
        raise FedsegError(
            "the two per-case tables share no case with a common metric; "
            "compare files evaluated on the same cases"
        )
    return rows


def compare_models(
    csv_a: Path,
    csv_b: Path | None = None,
    *,
    model_a: str | None = None,
    model_b: str | None = None,
    metrics: tuple[str, ...] = ("dice", "hd95"),
    alpha: float = 0.05,
) -> list[ComparisonRow]:
    """Compare model B with model A on the cases of two per-case CSVs (or one with 2 models)."""
    if csv_b is None:
        tables = read_case_tables(csv_a)
        names = sorted(tables)
        if model_a is None and model_b is None and len(names) == 2:
            model_a, model_b = names
        if model_a is None or model_b is None:
            raise FedsegError(
                f"{csv_a}: holds models {names}; give a second CSV or --model-a and --model-b"
            )
        return compare_tables(
            read_case_table(csv_a, model_a), read_case_table(csv_a, model_b), metrics, alpha
        )
    return compare_tables(
        read_case_table(csv_a, model_a), read_case_table(csv_b, model_b), metrics, alpha
    )


def _wide_columns(header: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for col in header:
        parts = col.split("_", 1)
        if len(parts) != 2:
            continue
        x, y = parts
        if x in ALL_REGIONS:
            out[col] = (x, y.lower())
        elif y in ALL_REGIONS:
            out[col] = (y, x.lower())
    return out


def fmt_p(p: float) -> str:
    """p-value for tables: 3 significant digits, '<1e-4' below that."""
    if not math.isfinite(p):
        return "-"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"
