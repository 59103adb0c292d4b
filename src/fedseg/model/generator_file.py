"""A trained generator on disk (``format: fedseg-generator``): the generator's config, its
weights, the modalities whose bank some site trained, how intensities were scaled, and where
it came from. Plain types only, written atomically, loadable with ``weights_only=True``
like ``model_file``'s segmentation models (which a generator file is not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedseg.errors import FedsegError
from fedseg.model.generator import GeneratorConfig, new_generator_names
from fedseg.model.model_file import FORMAT as MODEL_FORMAT
from fedseg.model.model_file import weights_hash
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
        """16 hex digits of SHA-256 over the weights (``model_file.weights_hash``)."""
        return weights_hash(self.weights)


def save_generator(path: Path, gf: GeneratorFile) -> Path:
    """Write ``gf`` atomically (temp file + rename)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": GENERATOR_FORMAT,
        "generator": gf.config.model_dump(mode="json"),
        "state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in gf.weights.items()},
        "trained": list(gf.trained),
        "intensity_percentile": float(gf.intensity_percentile),
        "meta": {str(k): str(v) for k, v in gf.meta.items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_generator(path: Path) -> GeneratorFile:
    """Read a generator file; one-line ``FedsegError`` for a missing file, a segmentation
    model given instead, or a damaged file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FedsegError(f"{path}: generator file not found; a synthesis run writes <run>/best.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        kind = exc.__class__.__name__
        raise FedsegError(f"{path}: not a fedseg generator file ({kind})") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt == MODEL_FORMAT:
        raise FedsegError(
            f"{path}: a segmentation model, not a generator; give the best.pt of a run "
            "with `task: synthesis`"
        )
    if fmt != GENERATOR_FORMAT:
        raise FedsegError(f"{path}: not a fedseg generator file (format {fmt!r})")
    try:
        cfg = GeneratorConfig.model_validate(payload["generator"])
        weights = {k: v.numpy() for k, v in payload["state_dict"].items()}
        expected = new_generator_names(cfg)
        if sorted(weights) != sorted(expected):
            raise ValueError("its weights do not match its generator config")
        return GeneratorFile(
            config=cfg,
            weights={k: weights[k] for k in expected},
            trained=[str(m) for m in payload["trained"]],
            intensity_percentile=float(payload.get("intensity_percentile", 99.5)),
            meta={str(k): str(v) for k, v in payload.get("meta", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FedsegError(
            f"{path}: damaged fedseg generator file ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]})"
        ) from None
