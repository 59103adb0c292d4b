"""What a site's reply may claim: plain checks against what the site declared when it joined.

A site declares its split's case counts in its hello (``run_folder.DeclaredCases``); the
coordinator records the first declaration of each site in the run store and keeps it for
the run. Every later reply is checked against it here (plan key ``bounds``):

- a declaration is believed only with counts in ``[0, max_cases]`` and, when it names the
  site's modalities, known distinct ones (at least one); a site whose hello declared
  nothing (its data folder did not read then) declares with its first reply;
- a reply's ``n_train``/``n_val`` must be in ``[0, declared]``: a site whose split grew
  during the run is rejected until a new run (its cases are fixed for this one). A site's
  aggregation weight (its training cases) is thereby capped at its declaration, itself at
  most ``max_cases``;
- a validation summary must name a known metric, count ``n`` in ``[0, declared n_val]``,
  a finite mean inside the metric's range (``model.metrics.METRIC_RANGES``: Dice-like
  metrics in [0, 1], HD95 in [0, 373.13] mm) and a std in ``[0, (hi - lo) / 2]`` (the
  largest population std of values in a range); ``n = 0`` rows carry no value and pass.
  A synthesis run's summaries (``task: synthesis``, ``synth.validate``) are per modality
  the site declared, with the metrics ssim, psnr and mae only; a segmentation run's name
  no synthesis metric.

A failed check raises ``UpdateRejected`` (``aggregation``) with a one-line reason: the
whole reply is ``rejected`` for that round, its validation and weights are not used, and
the round goes on with the other sites.

A reply's cross-site part (``TaskReply.cross``/``home``, ``check_cross``) must name only the
models it was asked to validate (and a home check only when asked), regions ET/TC/WT/mean,
metrics ``dice`` (mean in [0, 1], std in [0, 0.5]) and ``dice_diff`` (mean in [-1, 1], std
in [0, 1]), each over ``n`` in ``[0, declared n_val]`` cases; otherwise only that part is
dropped (the coordinator logs why), the reply's validation and update are judged as above.
"""

from __future__ import annotations

import math

from fedseg.data.cases import MODALITIES
from fedseg.data.labels import REGIONS
from fedseg.federation.rounds.aggregation import UpdateRejected
from fedseg.model.metrics import METRIC_RANGES
from fedseg.model.summary import Summary
from fedseg.run_folder import DeclaredCases, Task
from fedseg.synth.validate import SYNTH_METRICS


def check_declaration(declared: DeclaredCases, max_cases: int) -> None:
    """Raise ``UpdateRejected`` unless both counts are in ``[0, max_cases]``."""
    for what, n in (("training", declared.n_train), ("validation", declared.n_val)):
        if not 0 <= n <= max_cases:
            raise UpdateRejected(
                f"claims {n} {what} cases, outside [0, {max_cases}] (plan bounds.max_cases)"
            )
    mods = declared.modalities
    if mods is not None and (
        not mods or len(set(mods)) != len(mods) or any(m not in MODALITIES for m in mods)
    ):
        raise UpdateRejected(
            f"declares modalities {mods}, not distinct names out of {', '.join(MODALITIES)}"
        )


def check_counts(n_train: int, n_val: int, declared: DeclaredCases | None) -> None:
    """Raise ``UpdateRejected`` unless the reply's counts are within the declaration."""
    if declared is None:
        raise UpdateRejected(
            "the site declared no case counts when it joined; restart it with this fedseg"
        )
    for what, n, top in (
        ("training", n_train, declared.n_train),
        ("validation", n_val, declared.n_val),
    ):
        if n < 0:
            raise UpdateRejected(f"reports {n} {what} cases (negative)")
        if n > top:
            raise UpdateRejected(
                f"reports {n} {what} cases, more than the {top} it declared when it joined"
            )


def check_summary(
    region: str,
    metric: str,
    s: Summary,
    n_val: int,
    task: Task = Task.SEGMENTATION,
    modalities: list[str] | None = None,
) -> None:
    """Raise ``UpdateRejected`` unless ``s`` is a possible summary of ``metric`` over at
    most ``n_val`` cases in a ``task`` run (synthesis: ``region`` one of ``modalities``,
    the site's; None: any modality)."""
    where = f"validation {region}/{metric}"
    if task == Task.SYNTHESIS:
        known = list(SYNTH_METRICS)
        if region not in (MODALITIES if modalities is None else modalities):
            raise UpdateRejected(f"{where}: not a modality the site declared")
    else:
        known = [m for m in METRIC_RANGES if m not in SYNTH_METRICS]
    rng = METRIC_RANGES.get(metric) if metric in known else None
    if rng is None:
        raise UpdateRejected(f"{where}: unknown metric (known: {', '.join(known)})")
    check_range(where, s, n_val, rng)


def check_range(where: str, s: Summary, n_val: int, rng: tuple[float, float]) -> None:
    """Raise ``UpdateRejected`` unless ``s`` counts at most ``n_val`` cases and its mean lies
    in ``rng`` with a std of at most half the range (the largest a bounded metric has)."""
    if not 0 <= s.n <= n_val:
        raise UpdateRejected(f"{where} over {s.n} cases, declared {n_val} validation cases")
    if s.n == 0:
        return
    lo, hi = rng
    if not (math.isfinite(s.mean) and lo <= s.mean <= hi):
        raise UpdateRejected(f"{where}: mean {s.mean} outside [{lo:g}, {hi:g}]")
    top_std = (hi - lo) / 2
    if not (math.isfinite(s.std) and 0 <= s.std <= top_std):
        raise UpdateRejected(f"{where}: std {s.std} outside [0, {top_std:g}]")


def check_validation(
    summaries: dict[str, dict[str, Summary]],
    n_val: int,
    task: Task = Task.SEGMENTATION,
    modalities: list[str] | None = None,
) -> None:
    """``check_summary`` on every ``summaries[region][metric]``."""
    for region, by_metric in summaries.items():
        for metric, s in by_metric.items():
            check_summary(region, metric, s, n_val, task, modalities)


def check_report(
    n_train: int,
    n_val: int,
    validation: dict[str, dict[str, Summary]],
    declared: DeclaredCases | None,
    task: Task = Task.SEGMENTATION,
) -> None:
    """A reply's counts and validation summaries against the site's declaration."""
    check_counts(n_train, n_val, declared)
    assert declared is not None  # check_counts rejects a missing declaration
    check_validation(validation, declared.n_val, task, declared.modalities)


#: the metrics of a cross-site summary and the range of their means
CROSS_RANGES = {"dice": (0.0, 1.0), "dice_diff": (-1.0, 1.0)}


def check_cross(
    cross: dict[str, dict[str, dict[str, Summary]]],
    home: dict[str, dict[str, Summary]],
    declared: DeclaredCases | None,
    asked: set[str],
    home_asked: bool,
) -> None:
    """Raise ``UpdateRejected`` unless a reply's cross-site summaries (``cross``: per model
    label) and home summaries are possible answers to what it was asked (module doc)."""
    if declared is None:
        raise UpdateRejected("the site declared no case counts when it joined")
    extra = sorted(set(cross) - asked)
    if extra:
        raise UpdateRejected(f"cross-site summaries of {extra[0]}, a model it was not sent")
    if home and not home_asked:
        raise UpdateRejected("a home check it was not asked for")
    parts = [(f"cross-site {label}", by) for label, by in cross.items()] + [("home", home)]
    for what, by_region in parts:
        for region, by_metric in by_region.items():
            if region not in (*REGIONS, "mean"):
                raise UpdateRejected(f"{what}: unknown region {region!r}")
            for metric, s in by_metric.items():
                where = f"{what} {region}/{metric}"
                rng = CROSS_RANGES.get(metric)
                if rng is None:
                    raise UpdateRejected(f"{where}: unknown metric (known: dice, dice_diff)")
                check_range(where, s, declared.n_val, rng)
