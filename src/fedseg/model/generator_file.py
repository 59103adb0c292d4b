"""A trained generator on disk (``format: fedseg-generator``): the generator's config, its
weights, the modalities whose bank some site trained, how intensities were scaled, and where
it came from. Plain types only, written atomically, loadable with ``weights_only=True``
like ``model_file``'s segmentation models (which a generator file is not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedseg.model.generator import GeneratorConfig
from fedseg.model.weights import Weights

GENERATOR_FORMAT = "fedseg-generator"


@dataclass
class GeneratorFile:
    """``trained``: modalities whose bank was trained (completion of another is refused);
    ``intensity_percentile``: the brain percentile each modality was scaled to 1 by;
    ``meta``: provenance (run id, round, plan name; strings)."""

    config: GeneratorConfig
    weights: Weights
    trained: list[str]
    intensity_percentile: float = 99.5
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def weights_hash(self) -> str:
        """sha256 hex of the weights (names, dtypes, shapes, bytes), for provenance marks."""
        raise NotImplementedError  # helper A


def save_generator(path: Path, gf: GeneratorFile) -> Path:
    raise NotImplementedError  # helper A


def load_generator(path: Path) -> GeneratorFile:
    """Read a generator file; one-line ``FedsegError`` for a missing file, a segmentation
    model given instead, or a damaged file."""
    raise NotImplementedError  # helper A
