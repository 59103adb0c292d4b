"""The released-model file: weights plus everything needed to use them (``*.pt``).

Contents (torch.save of plain types, loadable with ``weights_only=True``):
``format`` (``fedseg-model``), ``fedseg_version``, ``network`` (NetworkConfig as dict),
``roi`` (inference tile, voxels), ``regions`` (channel order), ``state_dict``, ``meta``
(free-form JSON-able provenance: run, round, metrics).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedseg import __version__
from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.config import NetworkConfig
from fedseg.model.registry import build_network
from fedseg.model.weights import Weights, set_weights
from fedseg.run_folder import missing_model_hint

FORMAT = "fedseg-model"


@dataclass
class ModelFile:
    """A loaded model file: config, weights (numpy), inference tile and provenance."""

    network: NetworkConfig
    weights: Weights
    roi: tuple[int, int, int]
    regions: tuple[str, ...] = REGIONS
    meta: dict[str, Any] = field(default_factory=dict)
    fedseg_version: str = __version__

    def build(self) -> torch.nn.Module:
        """The network with these weights, in eval mode."""
        net = build_network(self.network)
        set_weights(net, self.weights)
        return net.eval()


def save_model(path: Path, model: ModelFile) -> Path:
    """Write ``model`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "fedseg_version": model.fedseg_version,
        "network": model.network.model_dump(),
        "roi": list(model.roi),
        "regions": list(model.regions),
        "state_dict": {k: torch.from_numpy(v.copy()) for k, v in model.weights.items()},
        "meta": model.meta,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(path: Path) -> ModelFile:
    """Read a model file written by ``save_model``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FedsegError(f"{path}: model file not found{missing_model_hint(path)}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FedsegError(f"{path}: not a fedseg model file ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FedsegError(f"{path}: not a fedseg model file (export one with `fedseg select`)")
    regions = tuple(payload.get("regions") or ())
    if regions != REGIONS:
        raise FedsegError(f"{path}: model predicts regions {regions}, fedseg expects {REGIONS}")
    try:
        return ModelFile(
            network=NetworkConfig(**payload["network"]),
            weights={k: v.numpy() for k, v in payload["state_dict"].items()},
            roi=tuple(int(r) for r in payload["roi"]),  # type: ignore[arg-type]
            regions=regions,
            meta=payload.get("meta", {}),
            fedseg_version=payload.get("fedseg_version", "unknown"),
        )
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise FedsegError(
            f"{path}: damaged fedseg model file ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}); export it again"
        ) from None


def weights_hash(weights: Weights) -> str:
    """Short SHA-256 of the weights' names and bytes (identifies a model across formats)."""
    h = hashlib.sha256()
    for k, v in weights.items():
        h.update(k.encode())
        h.update(v.tobytes())
    return h.hexdigest()[:16]
