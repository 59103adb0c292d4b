"""Which of T1, T1Gd, T2, FLAIR each series of a study is, and which series a study uses.

The one rule set of intake (``fedseg intake dicom`` and the dry run ``fedseg intake
classify`` both call ``classify_study``). A series is decided by two sources:

- its description (SeriesDescription, else ProtocolName) against the mapping's regex
  ``rules``, covering the three major vendors' naming (see ``fedseg.intake.config``);
- its acquisition parameters (``ParameterRules``: TI, TR, TE, ScanningSequence, ...): the
  weighting (T1, T2, FLAIR), and contrast agent tags for T1 against T1Gd.

The parameters decide the weighting when they can (they are what the scanner did); the
description decides when they cannot, and always may add the contrast (words such as "+C",
"POST", "Gd", "_KM"). A series is ambiguous only when neither decides; a study is skipped
when a modality has no series, or several that neither source nor the preference for an
original 3D acquisition tells apart; the notes name the series and candidates. Logs name
series by number and description only (no UIDs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError
from fedseg.intake.config import MappingConfig, ParameterRules
from fedseg.intake.deidentify import pseudonym
from fedseg.intake.dicom_series import Acquisition, Series, Study, scan_dicom

#: ImageType values of series that are none of the four (maps, projections, localizers).
IGNORED_IMAGE_TYPES = frozenset(
    {"LOCALIZER", "DIFFUSION", "ADC", "EADC", "TRACEW", "FA", "PERFUSION", "MIP", "MINIP",
     "SUBTRACTION", "SUB", "PHASE", "PROJECTION IMAGE", "SWI"}
)  # fmt: skip

#: AcquisitionContrast (0008,9209) values of series that are none of the four.
IGNORED_CONTRASTS = frozenset({"DIFFUSION", "PERFUSION", "FLOW_ENCODED", "TOF", "TAGGING"})
#: AcquisitionContrast values that name one of the four weightings.
STATED_CONTRASTS = {"T1": "t1", "T2": "t2", "FLUID_ATTENUATED": "flair"}

#: The weighting of each modality (T1Gd is T1-weighted; contrast is decided apart).
_WEIGHTING = {"t1": "t1", "t1ce": "t1", "t2": "t2", "flair": "flair"}

#: How a series' class was reached.
DESCRIPTION, PARAMETERS, BOTH = "description", "parameters", "description+parameters"


@dataclass(frozen=True)
class SeriesVerdict:
    """What one series was taken as (``None``: left out) and why.

    ``source`` is ``description``, ``parameters``, ``description+parameters``, or why the
    series was left out: ``not MR``, ``no pixels``, ``ignored``, ``ambiguous``, ``undecided``.
    ``candidates`` are the modalities still possible when the series is ambiguous.
    """

    series: Series
    taken_as: str | None
    source: str
    reason: str
    candidates: tuple[str, ...] = ()

    def note(self) -> str:
        """The skip-log line for a series left out."""
        s = self.series
        if self.source == "ambiguous":
            either = ", ".join(self.candidates)
            return f"skipped {s.label}: ambiguous mapping ({either}); {self.reason}"
        if self.source == "undecided":
            return f"skipped {s.label}: no mapping rule matches; {self.reason}"
        return f"skipped {s.label}: {self.reason}"


@dataclass
class StudyVerdict:
    """A study's verdicts, the series chosen per modality, and notes per modality (missing,
    ambiguous, a preference that decided)."""

    study: Study
    verdicts: list[SeriesVerdict]
    chosen: dict[str, Series]
    study_notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.chosen) == len(MODALITIES)

    @property
    def notes(self) -> list[str]:
        """The skip log: each series left out, then the study notes."""
        return [v.note() for v in self.verdicts if v.taken_as is None] + self.study_notes


def description_matches(description: str, mapping: MappingConfig) -> list[str]:
    """Modalities whose rule matches a series description (empty, one, or ambiguous many)."""
    return [m for m, rule in mapping.rules.items() if rule.matches(description)]


def _ms(value: float) -> str:
    return f"{value:g} ms"


def _inversion(acq: Acquisition) -> bool:
    flagged = "IR" in acq.scanning_sequence or any(o.startswith("IR") for o in acq.scan_options)
    return flagged or (acq.inversion_time or 0) > 0


def weighting_from_parameters(acq: Acquisition, rules: ParameterRules) -> tuple[str | None, str]:
    """``("t1" | "t2" | "flair" | None, why)`` from the acquisition tags (``ParameterRules``);
    ``why`` quotes the values the rule used. Where the times do not decide, an enhanced
    file's AcquisitionContrast (T1, T2, FLUID_ATTENUATED: the scanner's own label) does."""
    weighting, why = _weighting_by_times(acq, rules)
    stated = STATED_CONTRASTS.get(acq.acquisition_contrast)
    if weighting is None and stated and "EP" not in acq.scanning_sequence:
        return stated, f"AcquisitionContrast {acq.acquisition_contrast} ({why})"
    return weighting, why


def _weighting_by_times(acq: Acquisition, rules: ParameterRules) -> tuple[str | None, str]:
    tr, te, ti = acq.repetition_time, acq.echo_time, acq.inversion_time
    missing = [k for k, v in (("RepetitionTime", tr), ("EchoTime", te)) if v is None]
    if missing:
        return None, f"parameters do not decide: no {' or '.join(missing)}"
    assert tr is not None and te is not None
    if "EP" in acq.scanning_sequence:
        return None, "parameters do not decide: echo-planar (ScanningSequence EP)"
    head = " ".join(x for x in (acq.acquisition_type, "\\".join(acq.scanning_sequence)) if x)
    times = f"TR {_ms(tr)}, TE {_ms(te)}"
    if _inversion(acq):
        if not ti:
            return None, "parameters do not decide: inversion recovery without InversionTime"
        values = ", ".join(x for x in (head, f"TI {_ms(ti)}", times) if x)
        if ti >= rules.flair_min_ti_ms and tr >= rules.flair_min_tr_ms and te >= rules.long_te_ms:
            return "flair", f"long-TI inversion recovery ({values}): fluid-attenuated"
        if rules.t1_min_ti_ms <= ti <= rules.t1_max_ti_ms and te <= rules.t1_max_te_ms:
            return "t1", f"inversion-prepared, short TI and TE ({values}): T1-weighted"
        return (
            None,
            f"parameters do not decide: inversion recovery ({values}) is neither FLAIR nor T1",
        )
    if not acq.scanning_sequence:
        return None, "parameters do not decide: no ScanningSequence (inversion not ruled out)"
    values = f"{head}, {times}"
    if tr >= rules.t2_min_tr_ms and te >= rules.long_te_ms:
        return "t2", f"no inversion, long TR and TE ({values}): T2-weighted"
    gradient = "GR" in acq.scanning_sequence and "SE" not in acq.scanning_sequence
    max_te = rules.t1_gradient_max_te_ms if gradient else rules.t1_max_te_ms
    if tr <= rules.t1_max_tr_ms and te <= max_te:
        return "t1", f"no inversion, short TR and TE ({values}): T1-weighted"
    return None, f"parameters do not decide: {values} is neither T1, T2 nor FLAIR weighting"


def _search(pattern: str | None, text: str) -> bool:
    return bool(pattern and re.search(pattern, text, re.IGNORECASE))


def _contrast(series: Series, mapping: MappingConfig, matched: list[str]) -> tuple[bool, str]:
    """Whether a T1-weighted series is post-contrast, and the evidence."""
    desc, agent = series.description, series.acquisition.contrast_agent
    if _search(mapping.precontrast, desc):
        return False, "pre-contrast word in the description"
    if "t1ce" in matched or _search(mapping.contrast, desc):
        return True, "contrast word in the description"
    if agent:
        return True, f"contrast agent tag ({agent})"
    return False, "no contrast word or agent tag"


def classify_series(series: Series, mapping: MappingConfig) -> SeriesVerdict:
    """What one series is taken as, by its description and its acquisition parameters."""
    if series.modality not in mapping.modalities:
        why = f"modality {series.modality or 'unknown'}, not MR"
        return SeriesVerdict(series, None, "not MR", why)
    if not series.is_image:
        return SeriesVerdict(series, None, "no pixels", "no image pixels")
    acq, desc = series.acquisition, series.description
    if _search(mapping.ignore, desc):
        return SeriesVerdict(
            series,
            None,
            "ignored",
            "no mapping rule matches; the description names none of the four (ignore)",
        )
    odd = sorted(IGNORED_IMAGE_TYPES.intersection(acq.image_type))
    if odd or acq.acquisition_contrast in IGNORED_CONTRASTS:
        what = (
            f"ImageType {'/'.join(odd)}"
            if odd
            else f"AcquisitionContrast {acq.acquisition_contrast}"
        )
        why = f"no mapping rule matches; {what} is none of the four"
        return SeriesVerdict(series, None, "ignored", why)
    matched = description_matches(desc, mapping)
    weighting, why = (
        weighting_from_parameters(acq, mapping.parameters)
        if mapping.use_parameters
        else (None, "parameters not used (use_parameters: false)")
    )
    if weighting is None:
        if not matched:
            return SeriesVerdict(series, None, "undecided", why)
        if len(matched) > 1:
            return SeriesVerdict(series, None, "ambiguous", why, tuple(matched))
        taken, reason = matched[0], f"rule {matched[0]}"
        if taken == "t1" and acq.contrast_agent and not _search(mapping.precontrast, desc):
            taken, reason = "t1ce", f"rule t1, contrast agent tag ({acq.contrast_agent})"
        return SeriesVerdict(series, taken, DESCRIPTION, f"{reason}; {why}")
    taken = weighting
    if weighting == "t1":
        post, evidence = _contrast(series, mapping, matched)
        taken, why = ("t1ce" if post else "t1"), f"{why}; {evidence}"
    if len(matched) == 1 and _WEIGHTING[matched[0]] == weighting:
        return SeriesVerdict(series, taken, BOTH, f"rule {matched[0]}; {why}")
    if matched:
        why = f"{why} (overrules description rule {', '.join(matched)})"
    return SeriesVerdict(series, taken, PARAMETERS, why)


def _prefer(found: list[SeriesVerdict]) -> tuple[list[SeriesVerdict], str]:
    """Keep the original (not DERIVED) series, then the 3D ones, where that narrows the set."""
    kept, why = found, []
    for label, keep in (
        ("original", lambda v: not v.series.acquisition.is_derived),
        ("3D", lambda v: v.series.acquisition.is_3d),
    ):
        narrower = [v for v in kept if keep(v)]
        if narrower and len(narrower) < len(kept):
            kept = narrower
            why.append(label)
    return kept, " ".join(why)


def classify_study(study: Study, mapping: MappingConfig) -> StudyVerdict:
    """Classify every series and pick one per modality; notes say what was left out and why."""
    verdicts = [classify_series(s, mapping) for s in study.series]
    notes: list[str] = []
    chosen: dict[str, Series] = {}
    for m in MODALITIES:
        found = [v for v in verdicts if v.taken_as == m]
        if not found:
            maybe = [v.series.label for v in verdicts if m in v.candidates]
            could = f" ({', '.join(maybe)} could be)" if maybe else ""
            notes.append(f"missing sequence {m}{could}")
            continue
        kept, why = _prefer(found) if mapping.prefer_original_3d else (found, "")
        if len(kept) == 1:
            chosen[m] = kept[0].series
            if len(found) > 1:
                others = ", ".join(v.series.label for v in found if v is not kept[0])
                notes.append(f"{m}: took {kept[0].series.label} ({why} acquisition) over {others}")
            continue
        names = "; ".join(f"{v.series.label} [{v.source}: {v.reason}]" for v in kept)
        notes.append(
            f"ambiguous mapping: {len(kept)} series match {m} ({names}); neither descriptions"
            " nor parameters tell them apart"
        )
    return StudyVerdict(study, verdicts, chosen, notes)


@dataclass
class ClassifyReport:
    """The dry run of ``fedseg intake dicom``: each study's verdicts under the id it would get
    (its pseudonym when a salt is set, else ``study <n>``); nothing is written."""

    studies: list[tuple[str, StudyVerdict]]
    not_dicom: int
    pseudonyms: bool = True

    def to_dict(self) -> dict[str, object]:
        """Plain data for ``--json`` (series by number and description; no UIDs)."""
        studies = []
        for study_id, sv in self.studies:
            used = {s.series_uid: m for m, s in sv.chosen.items()}
            series = [
                {
                    "number": v.series.number,
                    "description": v.series.description,
                    "modality": v.series.modality,
                    "taken_as": v.taken_as,
                    "used_as": used.get(v.series.series_uid),
                    "source": v.source,
                    "reason": v.reason,
                    "candidates": list(v.candidates),
                    "parameters": v.series.acquisition.facts(),
                }
                for v in sv.verdicts
            ]
            studies.append(
                {
                    "study": study_id,
                    "status": "complete" if sv.complete else "skipped",
                    "notes": sv.study_notes,
                    "series": series,
                }
            )
        return {"studies": studies, "not_dicom": self.not_dicom}


def classify_folder(root: Path, mapping: MappingConfig) -> ClassifyReport:
    """Classify every study under ``root`` as ``fedseg intake dicom`` would, writing nothing."""
    scan = scan_dicom(root)
    try:
        salt: str | None = mapping.resolved_salt()
    except FedsegError:
        salt = None
    studies = [
        (
            pseudonym(study.study_uid, salt, mapping.case_prefix) if salt else f"study {i}",
            classify_study(study, mapping),
        )
        for i, study in enumerate(scan.studies, 1)
    ]
    return ClassifyReport(studies, scan.not_dicom, pseudonyms=salt is not None)
