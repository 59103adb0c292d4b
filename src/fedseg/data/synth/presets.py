"""Named site profiles and edits of a profile, one implementation each (the demo, ``fedseg
data synth`` and the monitoring benchmark use these):

- :func:`harder`: a clean site whose cases are harder (``--hard-site N``): tumours 0.6 times
  as large, a noisier (Rician sigma 0.08) and blurrier (2.5 mm FWHM) scanner;
- :func:`other_scanner`: another scanner and population (``--scanner-site N``, the demo's
  site3): three times the intensity scale, 8 mm slices, a strong bias field (0.3), larger
  tumours (22 mm core radius, 18 mm edema);
- :func:`edit_profile`: any ``SiteProfile`` field set from text (``--profile
  SITE:KEY=VALUE``): a number, ``2x`` (twice the drawn value), a comma list for the
  per-modality tuples, a bad kind by name.

:func:`customized` applies them, in that order, to the profiles the seed draws and returns
the config with its profiles written out, so ``synth.yaml`` records what was generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from fedseg.data.synth.config import SiteProfile, SynthConfig, draw_profiles
from fedseg.errors import FedsegError

#: ``harder``: the tumour radius factor, the scanner's noise and blur
HARD_RADIUS_FACTOR = 0.6
HARD_NOISE = 0.08
HARD_BLUR_FWHM_MM = 2.5

#: ``other_scanner``: the intensity factor and the fixed scanner and population values
SCANNER_INTENSITY_FACTOR = 3.0
SCANNER_VALUES: dict[str, float] = {
    "slice_thickness_mm": 8.0,
    "bias_strength": 0.3,
    "tumor_radius_mm": 22.0,
    "edema_mm": 18.0,
}

#: the fields ``--profile`` may set (the site's name is its folder's)
EDITABLE = tuple(k for k in SiteProfile.model_fields if k != "name")


def harder(profile: SiteProfile) -> SiteProfile:
    """The same site with harder cases: smaller tumours, a noisier and blurrier scanner."""
    return profile.model_copy(
        update={
            "tumor_radius_mm": profile.tumor_radius_mm * HARD_RADIUS_FACTOR,
            "noise": HARD_NOISE,
            "blur_fwhm_mm": HARD_BLUR_FWHM_MM,
        }
    )


def other_scanner(profile: SiteProfile) -> SiteProfile:
    """The same site on another scanner, with another population (the demo's site3)."""
    return profile.model_copy(
        update={
            "intensity_scale": profile.intensity_scale * SCANNER_INTENSITY_FACTOR,
            **SCANNER_VALUES,
        }
    )


def _keys() -> str:
    return ", ".join(EDITABLE)


def edit_profile(profile: SiteProfile, key: str, text: str) -> SiteProfile:
    """``profile`` with field ``key`` set from ``text`` (validated as the field's type)."""
    where = f"--profile {profile.name}:{key}={text}"
    if key not in EDITABLE:
        raise FedsegError(f"{where}: unknown key {key!r}; the keys are {_keys()}")
    current = getattr(profile, key)
    value: Any = text
    if isinstance(current, tuple):
        value = [v.strip() for v in text.split(",")]
        if len(value) != len(current):
            raise FedsegError(
                f"{where}: give {len(current)} comma-separated values (one per "
                f"{'modality' if len(current) == 4 else 'axis'})"
            )
    elif isinstance(current, float) and text.endswith("x"):
        try:
            value = current * float(text[:-1])
        except ValueError:
            value = text
    try:
        return SiteProfile.model_validate({**profile.model_dump(), key: value})
    except ValidationError as exc:
        err = exc.errors()[0]
        kind = (
            "comma list" if isinstance(current, tuple)
            else "number" if isinstance(current, float)
            else "whole number" if isinstance(current, int)
            else "bad kind"
        )  # fmt: skip
        raise FedsegError(
            f"{where}: {err['msg'].removeprefix('Value error, ')} ({key} is a {kind}); "
            f"the keys are {_keys()}"
        ) from None


def parse_edit(item: str) -> tuple[str, str, str]:
    """``site2:noise=0.05`` -> ``("site2", "noise", "0.05")``."""
    site, sep, rest = item.partition(":")
    key, eq, value = rest.partition("=")
    if not (sep and eq and site and key and value):
        raise FedsegError(
            f"--profile {item}: give SITE:KEY=VALUE, e.g. site2:tumor_radius_mm=8; the keys "
            f"are {_keys()}"
        )
    return site, key.strip(), value.strip()


def _site_index(option: str, number: int, sites: int) -> int:
    if not 1 <= number <= sites:
        raise FedsegError(f"{option} {number}: sites are numbered 1..{sites}")
    return number - 1


def customized(
    config: SynthConfig,
    *,
    hard: Sequence[int] = (),
    scanner: Sequence[int] = (),
    edits: Sequence[str] = (),
) -> SynthConfig:
    """``config`` with its profiles (given, else drawn from the seed) written out after
    :func:`harder` for the site numbers in ``hard``, :func:`other_scanner` for those in
    ``scanner`` and the ``SITE:KEY=VALUE`` ``edits``; ``config`` itself when none is asked."""
    if not (hard or scanner or edits):
        return config
    profiles = list(config.profiles or draw_profiles(config.sites, config.seed, config.spacing))
    for n in hard:
        i = _site_index("--hard-site", n, config.sites)
        profiles[i] = harder(profiles[i])
    for n in scanner:
        i = _site_index("--scanner-site", n, config.sites)
        profiles[i] = other_scanner(profiles[i])
    names = config.site_names()
    for item in edits:
        site, key, value = parse_edit(item)
        if site not in names:
            raise FedsegError(
                f"--profile {item}: no site {site!r}; the sites are {config.names_hint()}"
            )
        i = names.index(site)
        profiles[i] = edit_profile(profiles[i], key, value)
    return config.model_copy(update={"profiles": profiles})
