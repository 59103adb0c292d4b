"""Brain extraction by name: the registered atlas's brain mask by default, or a learned model.

A learned model plugs in without changes here, in either of two ways:

* in code: ``register("hdbet", fn)`` before running the pipeline;
* as an installed package: an entry point in the group ``fedseg.brain_extractors``, e.g.
  ``[project.entry-points."fedseg.brain_extractors"] hdbet = "mypkg.skullstrip:extract"``.

Either way ``fn`` takes a ``BrainExtractionInput`` and returns a boolean (X, Y, Z) mask on
the output grid; ``fedseg intake preprocess --brain-extractor hdbet`` then uses it. No
learned model ships with fedseg.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import numpy as np

from fedseg.errors import FedsegError

ENTRY_POINT_GROUP = "fedseg.brain_extractors"


@dataclass(frozen=True)
class BrainExtractionInput:
    """``volumes`` (4, X, Y, Z) float32 in MODALITIES order, registered to the atlas and
    resampled to the output grid (``affine``, RAS mm); ``atlas_brain`` the atlas's boolean
    brain mask on that grid."""

    volumes: np.ndarray
    affine: np.ndarray
    atlas_brain: np.ndarray


BrainExtractor = Callable[[BrainExtractionInput], np.ndarray]


def atlas_mask(inp: BrainExtractionInput) -> np.ndarray:
    """The SRI24 brain mask (CSF + GM + WM > 0.5) carried by the rigid registration."""
    return inp.atlas_brain


def no_mask(inp: BrainExtractionInput) -> np.ndarray:
    """Keep every voxel (for data that is already skull-stripped)."""
    return np.ones(inp.volumes.shape[1:], dtype=bool)


_REGISTRY: dict[str, BrainExtractor] = {"atlas": atlas_mask, "none": no_mask}


def register(name: str, fn: BrainExtractor) -> None:
    """Make ``fn`` available as ``name`` (overrides an entry point of the same name)."""
    _REGISTRY[name] = fn


def available() -> list[str]:
    """Registered names and installed entry points."""
    return sorted({*_REGISTRY, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def get(name: str) -> BrainExtractor:
    """The extractor called ``name``; a FedsegError listing the choices if there is none."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                fn = ep.load()
            except Exception as exc:  # a broken plug-in must not look like our bug
                raise FedsegError(f"brain extractor {name!r} failed to load: {exc}") from None
            _REGISTRY[name] = fn
            return fn
    raise FedsegError(
        f"unknown brain extractor {name!r}; choose one of {', '.join(available())} "
        f"or install a package that provides the entry point group {ENTRY_POINT_GROUP}"
    )


def apply_mask(fn: BrainExtractor, inp: BrainExtractionInput) -> np.ndarray:
    """Run an extractor and check what it returns: a boolean mask of the volumes' shape."""
    mask = np.asarray(fn(inp))
    if mask.shape != inp.volumes.shape[1:]:
        raise FedsegError(
            f"brain extractor returned a mask of shape {mask.shape}, expected "
            f"{inp.volumes.shape[1:]}; fix the plug-in"
        )
    return mask.astype(bool)
