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


class SeriesRule(_Strict):
    """A series is this modality when its description matches ``include`` and not ``exclude``
    (Python regexes, case-insensitive, searched anywhere in the text)."""

    include: str
    exclude: str | None = None

    @field_validator("include", "exclude")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value

    def matches(self, text: str) -> bool:
        if not re.search(self.include, text, re.IGNORECASE):
            return False
        return not (self.exclude and re.search(self.exclude, text, re.IGNORECASE))


# "t1" as a token: not preceded by a letter/digit and not followed by a digit (T1, T1W, AX_T1).
_T1 = r"(?<![a-z0-9])t1(?![0-9])"
_CONTRAST = r"post|gd|gad|contrast|(?<![a-z])ce(?![a-z])|\+\s*c|mprage\s*\+\s*c"


def _default_rules() -> dict[str, SeriesRule]:
    return {
        "t1": SeriesRule(include=rf"{_T1}|mprage|spgr", exclude=rf"{_CONTRAST}|flair"),
        "t1ce": SeriesRule(include=rf"({_T1}|mprage|spgr).*({_CONTRAST})|({_CONTRAST}).*{_T1}"),
        "t2": SeriesRule(include=r"(?<![a-z0-9])t2(?![0-9])", exclude=r"flair|star|\*"),
        "flair": SeriesRule(include=r"flair", exclude=_T1),
    }


class MappingConfig(_Strict):
    """How ``fedseg intake dicom`` names cases and tells T1, T1Gd, T2 and FLAIR apart.

    ``rules`` maps each modality to a regex rule on SeriesDescription (ProtocolName when the
    description is empty). ``salt`` is a site secret: case ids are a keyed hash of the
    StudyInstanceUID, so the same study always gets the same pseudonym at this site and no one
    without the salt can link it back. Keep the salt off anything that leaves the site.
    ``linkage`` (relative to the YAML's folder) is where intake keeps the site's private
    linkage from each case back to its study (``intake.linkage``; needed for a DICOM SEG);
    None: none is kept.
    """

    rules: dict[str, SeriesRule] = Field(default_factory=_default_rules)
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
