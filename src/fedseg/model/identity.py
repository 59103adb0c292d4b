"""What identifies a model in the outputs made with it (e.g. a DICOM SEG's algorithm
version): the short weights hash of a model file, the source model's hash for an exported
one (the same value: ``model_file.weights_hash``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def model_id(path: Path) -> str:
    """16 hex digits identifying the weights of a model file (.pt) or exported model."""
    from fedseg.model.openvino_backend import is_exported_model, read_export_meta

    if is_exported_model(Path(path)):
        return read_export_meta(Path(path))[1].source_hash
    from fedseg.model.model_file import load_model, weights_hash

    return weights_hash(load_model(Path(path)).weights)


def models_id(paths: Sequence[Path]) -> str:
    """One model's id, or the ids of an ensemble joined by '+'."""
    return "+".join(model_id(p) for p in paths)
