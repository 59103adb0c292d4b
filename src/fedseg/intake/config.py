"""Typed intake configuration read from small YAML files: series mapping, pseudonyms, PACS peer."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from fedseg.config_files import first_error, read_yaml_mapping
from fedseg.errors import FedsegError

#: Environment variable that may hold the pseudonym salt instead of the mapping file.
SALT_ENV = "FEDSEG_INTAKE_SALT"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
    return value


class SeriesRule(_Strict):
    """A series is this modality when its description matches ``include`` and not ``exclude``
    (Python regexes, case-insensitive, searched anywhere in the text)."""

    include: str
    exclude: str | None = None

    @field_validator("include", "exclude")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _check_regex(value)

    def matches(self, text: str) -> bool:
        if not re.search(self.include, text, re.IGNORECASE):
            return False
        return not (self.exclude and re.search(self.exclude, text, re.IGNORECASE))


# Description tokens. Vendor naming covered by the defaults (tests/intake/test_intake_classify):
#   Siemens  t1_mprage_sag_p2_iso, t1_se_tra, t1_vibe, t1_fl2d, "_KM"/"+KM"/"_Gd" post-contrast,
#            t2_tse_tra, t2_tirm_tra_dark-fluid, t2_space_dark-fluid_sag (FLAIR), t1_tirm (T1)
#   GE       Ax T1 FSE, Sag 3D BRAVO, 3D FSPGR, Ax T1 FLAIR (T1-weighted), "+C"/"C+"/"POST",
#            Ax T2 FRFSE, Ax T2 PROPELLER, Ax T2 FLAIR, Sag CUBE FLAIR
#   Philips  T1W_3D_TFE, sT1W_SE, T1W_SE +C, T2W_TSE, T2W_FLAIR, 3D_Brain_VIEW_FLAIR, VISTA FLAIR
# "t1"/"t2" as tokens: not preceded by a letter or digit (Philips' SENSE prefix "s" allowed) and
# not followed by a digit (T1, T1W, AX_T1, sT1W; not T12).
_T1 = r"(?<![a-z0-9])s?t1(?![0-9])"
_T2 = r"(?<![a-z0-9])s?t2(?![0-9])"
_T1_NAMES = rf"{_T1}|mp[-_]?rage|spgr|bravo|(?<![a-z])tfe(?![a-z])|(?<![a-z])vibe(?![a-z])"
# No contrast word right after "pre", "non", "w/o", "without", "no" (pre-contrast, non-gad).
_NOT_NEGATED = r"(?<!pre)(?<!pre[-_ ])(?<!non)(?<!non[-_ ])(?<!w/o )(?<!without )(?<!no )"
_CONTRAST = (
    rf"{_NOT_NEGATED}(?:contrast|kontrast|gado|(?<![a-z])gad(?![a-z])|(?<![a-z])gd(?![a-z])"
    r"|(?<![a-z])km(?![a-z])|(?<![a-z])ce(?![a-z])|post(?![-_ ]?op)(?!erior)|\+\s*c"
    r"|(?<![a-z])c\s*\+|(?<=t1)c(?![a-z])|w/\s*c(?![a-z]))"
)
_PRECONTRAST = (
    r"(?<![a-z])pre(?![a-z])|pre[-_ ]?(?:contrast|gd|gad|km)|(?<![a-z])nativ"
    r"|non[-_ ]?(?:contrast|con|gd|gad)|w/o|without"
)
# Series that are none of the four whatever their parameters say: localizers, calibration,
# diffusion, susceptibility, angiography, perfusion, spectroscopy, STIR, double inversion
# recovery (DIR: a long TI like FLAIR's), projections and subtractions for display.
_IGNORE = (
    r"(?<![a-z])loc(?:ali[sz]er)?(?![a-z])|localizer|scout|survey|(?<![a-z])cal(?:ibration)?"
    r"(?![a-z])|sense[-_ ]?ref|(?<![a-z])dwi|diff|(?<![a-z])adc(?![a-z])|trace|(?<![a-z])dti"
    r"|(?<![a-z])fa(?![a-z])|(?<![a-z])swi|swan|suscept|(?<![a-z])tof(?![a-z])|angio"
    r"|(?<![a-z])mra(?![a-z])|perf|(?<![a-z])dsc(?![a-z])|(?<![a-z])dce(?![a-z])"
    r"|(?<![a-z])p?c?asl(?![a-z])|bold|fmri|(?<![a-z])mip(?![a-z])|(?<![a-z])stir(?![a-z])"
    r"|(?<![a-z])sub(?:tract\w*)?(?![a-z])|phase|spectro|(?<![a-z])svs(?![a-z])|(?<![a-z])csi(?![a-z])"
    r"|(?<![a-z])dir(?![a-z])|double[-_ ]?(?:ir|inversion)"
)


def _default_rules() -> dict[str, SeriesRule]:
    return {
        "t1": SeriesRule(include=_T1_NAMES, exclude=_CONTRAST),
        "t1ce": SeriesRule(
            include=rf"({_T1_NAMES}).*({_CONTRAST})|({_CONTRAST}).*({_T1_NAMES})",
            exclude=_PRECONTRAST,
        ),
        "t2": SeriesRule(
            include=rf"{_T2}|frfse|(?<![a-z])drive(?![a-z])",
            exclude=rf"flair|dark[-_ ]?fluid|tirm|star|\*|{_T1}",
        ),
        "flair": SeriesRule(include=r"flair|dark[-_ ]?fluid|tirm", exclude=_T1),
    }


class ParameterRules(_Strict):
    """Physics of the four contrasts, from the standard acquisition tags (no private tags).

    All times are in milliseconds, as DICOM stores RepetitionTime (0018,0080), EchoTime
    (0018,0081) and InversionTime (0018,0082). Defaults hold at 1.5 T and 3 T for the three
    major vendors. Inversion is known from ScanningSequence (0018,0020) or ScanOptions
    (0018,0022) holding IR, or an InversionTime above 0; a series without ScanningSequence
    cannot rule inversion out and is never called T2 by its parameters. Echo-planar series
    (ScanningSequence EP: diffusion, perfusion) are left to the description.

    - FLAIR: inversion with TI >= ``flair_min_ti_ms``, TR >= ``flair_min_tr_ms`` and
      TE >= ``long_te_ms`` (2D TIRM/FLAIR and 3D SPACE/CUBE/VISTA FLAIR alike).
    - T1 with an inversion pulse (MPRAGE, BRAVO, TFE, T1-FLAIR): TI between
      ``t1_min_ti_ms`` and ``t1_max_ti_ms`` and TE <= ``t1_max_te_ms``. TR is not used:
      Siemens reports the inversion repeat (~2000 ms), GE and Philips the readout (~8 ms).
    - T2: no inversion, TR >= ``t2_min_tr_ms`` and TE >= ``long_te_ms``.
    - T1 without inversion: TR <= ``t1_max_tr_ms`` and TE <= ``t1_max_te_ms`` for spin echo
      (SE/FSE/TSE), TE <= ``t1_gradient_max_te_ms`` for gradient echo (GR: SPGR, VIBE,
      FLASH; a longer TE is T2*-weighted).
    - Anything else (PD, T2*, STIR with TI < ``t1_min_ti_ms``) is not decided by parameters.
    """

    flair_min_ti_ms: float = Field(default=1500.0, gt=0, description="FLAIR: least TI, ms")
    flair_min_tr_ms: float = Field(default=4000.0, gt=0, description="FLAIR: least TR, ms")
    long_te_ms: float = Field(default=60.0, gt=0, description="T2 and FLAIR: least TE, ms")
    t1_min_ti_ms: float = Field(default=300.0, gt=0, description="IR-prepared T1: least TI, ms")
    t1_max_ti_ms: float = Field(default=1300.0, gt=0, description="IR-prepared T1: most TI, ms")
    t1_max_te_ms: float = Field(default=30.0, gt=0, description="T1: most TE, ms")
    t1_gradient_max_te_ms: float = Field(
        default=10.0, gt=0, description="gradient-echo T1: most TE, ms"
    )
    t1_max_tr_ms: float = Field(default=1000.0, gt=0, description="T1 without IR: most TR, ms")
    t2_min_tr_ms: float = Field(default=2000.0, gt=0, description="T2: least TR, ms")

    @field_validator("t1_max_ti_ms")
    @classmethod
    def _ti_order(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("t1_min_ti_ms")
        if low is not None and value <= low:
            raise ValueError("t1_max_ti_ms must be above t1_min_ti_ms")
        flair = info.data.get("flair_min_ti_ms")
        if flair is not None and value >= flair:
            raise ValueError("t1_max_ti_ms must be below flair_min_ti_ms")
        return value


class MappingConfig(_Strict):
    """How ``fedseg intake dicom`` names cases and tells T1, T1Gd, T2 and FLAIR apart.

    ``rules`` maps each modality to a regex rule on SeriesDescription (ProtocolName when the
    description is empty); ``parameters`` are the acquisition-parameter rules (see
    ``ParameterRules``; ``use_parameters: false`` leaves descriptions alone to decide).
    Where both decide and disagree, the parameters win: they are what the scanner did.
    ``contrast`` / ``precontrast`` are regexes for a description's post- and pre-contrast
    words (a T1 decided by its parameters is T1Gd when ``contrast`` matches or a contrast
    agent tag is set, unless ``precontrast`` matches). ``ignore`` names series that are none
    of the four whatever their parameters (localizers, diffusion, SWI, TOF, perfusion, ...).
    ``prefer_original_3d``: when several series are taken as one modality, keep the original
    (not DERIVED) ones, then the 3D ones, and take the one left if it is one.
    ``salt`` is a site secret: case ids are a keyed hash of the StudyInstanceUID, so the same
    study always gets the same pseudonym at this site and no one without the salt can link it
    back. Keep the salt off anything that leaves the site.
    ``linkage`` (relative to the YAML's folder) is where intake keeps the site's private
    linkage from each case back to its study (``intake.linkage``; needed for a DICOM SEG);
    None: none is kept.
    """

    rules: dict[str, SeriesRule] = Field(default_factory=_default_rules)
    parameters: ParameterRules = Field(default_factory=ParameterRules)
    use_parameters: bool = True
    contrast: str = _CONTRAST
    precontrast: str = _PRECONTRAST
    ignore: str | None = _IGNORE
    prefer_original_3d: bool = True
    salt: str | None = None
    linkage: Path | None = None
    case_prefix: str = "case"
    modalities: tuple[str, ...] = ("MR",)

    @field_validator("rules")
    @classmethod
    def _four(cls, rules: dict[str, SeriesRule]) -> dict[str, SeriesRule]:
        wanted = {"t1", "t1ce", "t2", "flair"}
        if set(rules) != wanted:
            raise ValueError(f"rules must name exactly {sorted(wanted)}, got {sorted(rules)}")
        return rules

    @field_validator("contrast", "precontrast", "ignore")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _check_regex(value)

    @field_validator("case_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", value):
            raise ValueError("case_prefix must be letters, digits and '-', starting with a letter")
        return value

    def resolved_salt(self) -> str:
        """The salt from the file, else from $FEDSEG_INTAKE_SALT; a FedsegError if neither."""
        salt = self.salt or os.environ.get(SALT_ENV)
        if not salt:
            raise FedsegError(
                f"no pseudonym salt: set `salt: <site secret>` in the mapping YAML or ${SALT_ENV}"
                " (case ids are a keyed hash of the study; keep the salt at the site)"
            )
        return salt


class TlsConfig(_Strict):
    """DICOM TLS: PEM files. ``ca`` verifies the PACS; ``cert``/``key`` identify us."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    check_hostname: bool = True


class PacsPeer(_Strict):
    """The remote PACS: where it listens and the AE title it answers to."""

    host: str
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(min_length=1, max_length=16)


class PacsConfig(_Strict):
    """Everything ``fedseg intake pacs`` needs to talk to one PACS.

    ``retrieve`` picks C-GET (images come back on the same association) or C-MOVE (the PACS
    opens a new association to us: it must know ``calling_ae`` at our host and ``move_port``).
    """

    calling_ae: str = Field(default="FEDSEG", min_length=1, max_length=16)
    peer: PacsPeer
    tls: TlsConfig | None = None
    retrieve: Literal["get", "move"] = "move"
    move_port: int = Field(default=11113, ge=1, le=65535)
    move_bind: str = "0.0.0.0"
    timeout_s: float = Field(default=30.0, gt=0)


def load_mapping(path: Path | None) -> MappingConfig:
    """The mapping config from YAML, or the defaults when ``path`` is None.

    Rules given in the file replace the default rule of that modality only.
    """
    if path is None:
        return MappingConfig()
    data = read_yaml_mapping(path, "mapping")
    rules = data.get("rules")
    if isinstance(rules, dict):
        data["rules"] = {**_default_rules(), **rules}
    if isinstance(data.get("linkage"), str):
        data["linkage"] = Path(path).parent / data["linkage"]  # absolute paths stay as given
    try:
        return MappingConfig.model_validate(data)
    except ValidationError as exc:
        raise FedsegError(f"{path}: {first_error(exc)}") from None


def load_pacs_config(path: Path) -> PacsConfig:
    """The PACS config from YAML (see ``PacsConfig``)."""
    data = read_yaml_mapping(path, "PACS config")
    try:
        return PacsConfig.model_validate(data)
    except ValidationError as exc:
        raise FedsegError(f"{path}: {first_error(exc)}") from None


class PreprocessConfig(_Strict):
    """Knobs of the harmonized pipeline (``fedseg intake preprocess``).

    ``spacing`` None keeps the BraTS grid (240x240x155 at 1 mm); a number gives a coarser
    isotropic grid over the same field of view (tests, CPU demos). Registration runs on
    images block-averaged to ``registration_spacing`` mm, then ``shrink_factors`` coarser.
    """

    spacing: float | None = Field(default=None, gt=0)
    registration_spacing: float = Field(default=2.0, gt=0)
    n4_shrink: int = Field(default=2, ge=1)
    n4_iterations: tuple[int, ...] = (50, 40, 30)
    histogram_bins: int = Field(default=32, ge=8)
    sampling: float = Field(default=0.05, gt=0, le=1)
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = Field(default=200, ge=1)
    brain_extractor: str = "atlas"
    seed: int = 20240517

    @field_validator("smoothing_sigmas")
    @classmethod
    def _levels(cls, sigmas: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        shrink = info.data.get("shrink_factors")
        if shrink is not None and len(shrink) != len(sigmas):
            raise ValueError("smoothing_sigmas needs one value per shrink factor")
        return sigmas
