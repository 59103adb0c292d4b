"""OpenVINO inference backend: an exported model (folder with ``model.xml``/``model.bin`` and
``fedseg_export.json``) as a numpy ``Predictor``. No torch here: a laptop needs only numpy,
nibabel and OpenVINO to segment with an exported model.

The exported graph ends with the sigmoid, so it maps (B, 4, x, y, z) float32 to region
probabilities (B, 3, x, y, z); its spatial dimensions are dynamic, and the predictor
compiles one static-shape copy per tile shape it meets (static shapes run faster on CPU).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from fedseg import __version__
from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.inference import Predictor

if TYPE_CHECKING:
    from fedseg.model.segmenter import Member

EXPORT_FORMAT = "fedseg-openvino"
META_FILE = "fedseg_export.json"
MODEL_XML = "model.xml"
INSTALL_HINT = "OpenVINO is not installed; install the extra: pip install 'fedseg[openvino]'"
Precision = Literal["f32", "bf16"]


class CalibrationReport(BaseModel):
    """Mean Dice (over ET/TC/WT and the cases) against the labels, before/after INT8."""

    model_config = ConfigDict(extra="forbid")

    cases: list[str]
    dice_fp32: float
    dice_int8: float
    max_drop: float
    reverted_layers: int = 0  # layers kept in floating point by the accuracy control
    activations: Literal["symmetric", "asymmetric"] = "symmetric"  # int8 activation scheme


class ExportMeta(BaseModel):
    """``fedseg_export.json``: what a user of the exported model needs and where it came from.

    ``roi`` is the largest inference tile (voxels); tiles shrink to fit a volume in multiples
    of ``divisor``. ``normalization`` names the preprocessing the network expects.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["fedseg-openvino"] = EXPORT_FORMAT
    fedseg_version: str
    precision: Literal["fp32", "int8"]
    inference_precision: Precision = "f32"
    regions: list[str]
    in_channels: int
    roi: tuple[int, int, int]
    divisor: int
    normalization: Literal["crop-nonzero-zscore"] = "crop-nonzero-zscore"
    source_model: str
    source_hash: str
    network: dict[str, Any]
    model_sha256: str
    calibration: CalibrationReport | None = None


def is_exported_model(path: Path) -> bool:
    """Whether ``path`` names an exported model (its folder or its ``.xml``), by file type."""
    path = Path(path)
    return path.suffix.lower() == ".xml" or path.is_dir()


def _paths(path: Path) -> tuple[Path, Path]:
    """(xml, metadata) of an exported model given its folder or its xml."""
    path = Path(path)
    xml = path / MODEL_XML if path.is_dir() else path
    if not xml.is_file():
        raise FedsegError(
            f"{path}: no exported model here (expected {MODEL_XML}); export one with "
            "`fedseg export MODEL.pt --format openvino --out DIR`"
        )
    return xml, xml.with_name(META_FILE)


def file_sha256(path: Path) -> str:
    """Short SHA-256 of a file's bytes (ties the metadata to the weights next to it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_export_meta(path: Path) -> tuple[Path, ExportMeta]:
    """The xml and checked metadata of an exported model (folder or xml); clear errors for
    a missing or damaged metadata file, another fedseg version, other regions or a weights
    file that does not belong to the metadata."""
    xml, meta_path = _paths(path)
    again = "export it again with `fedseg export MODEL.pt --format openvino`"
    if not meta_path.is_file():
        raise FedsegError(f"{xml}: metadata {META_FILE} missing next to the model; {again}")
    try:
        meta = ExportMeta.model_validate_json(meta_path.read_text())
    except (OSError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise FedsegError(f"{meta_path}: damaged export metadata ({first}); {again}") from None
    if meta.fedseg_version != __version__:
        raise FedsegError(
            f"{xml}: exported with fedseg {meta.fedseg_version}, this is fedseg {__version__}; "
            f"{again} (or use fedseg {meta.fedseg_version})"
        )
    if tuple(meta.regions) != REGIONS:
        raise FedsegError(
            f"{xml}: model predicts regions {tuple(meta.regions)}, fedseg expects {REGIONS}; "
            f"{again}"
        )
    bin_path = xml.with_suffix(".bin")
    if not bin_path.is_file():
        raise FedsegError(f"{xml}: weights file {bin_path.name} missing; {again}")
    if file_sha256(bin_path) != meta.model_sha256:
        raise FedsegError(f"{bin_path}: weights do not match {META_FILE}; {again}")
    return xml, meta


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise FedsegError(INSTALL_HINT) from None
    return openvino


def _usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask on Linux, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def compile_config(precision: Precision = "f32", threads: int | None = None) -> dict[str, Any]:
    """CPU plugin settings for the latency of one case: one stream using all cores.

    The precision is forced: the CPU plugin's default on bf16-capable CPUs is bf16, which
    changes results and is not always faster (see benchmarks/inference.py). bf16 asked on a
    CPU without native bf16 falls back to f32 (emulated bf16 is slower and no more exact).
    """
    if precision == "bf16" and "BF16" not in _openvino().Core().get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES"
    ):
        precision = "f32"
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads or _usable_cpus(),
        "INFERENCE_PRECISION_HINT": precision,
    }


def openvino_predictor(
    model: Any, precision: Precision = "f32", threads: int | None = None
) -> Predictor:
    """Predictor over an ``openvino.Model`` with dynamic spatial dims: each new batch shape
    gets its own static-shape compiled copy (cached; a case uses one tile shape)."""
    ov = _openvino()
    core = ov.Core()
    config = compile_config(precision, threads)
    compiled: dict[tuple[int, ...], Any] = {}

    def predict(batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        request = compiled.get(shape)
        if request is None:
            if len(compiled) >= 2:  # tile shapes change per case; keep memory bounded
                compiled.clear()
            static = model.clone()
            static.reshape({static.inputs[0]: ov.PartialShape(list(shape))})
            request = core.compile_model(static, "CPU", config).create_infer_request()
            compiled[shape] = request
        request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # copy: reused

    return predict


def load_exported(
    path: Path, *, threads: int | None = None, precision: Precision | None = None
) -> tuple[Predictor, ExportMeta]:
    """An exported model (folder or xml) as a predictor, after checking its metadata;
    ``precision`` overrides the one recorded at export."""
    xml, meta = read_export_meta(path)
    ov = _openvino()
    model = ov.Core().read_model(xml)
    channels = model.inputs[0].get_partial_shape()[1]
    if channels.is_static and channels.get_length() != meta.in_channels:
        raise FedsegError(
            f"{xml}: model takes {channels} channels, metadata says {meta.in_channels}"
        )
    return openvino_predictor(model, precision or meta.inference_precision, threads), meta


def load_exported_member(path: Path, *, roi: Sequence[int] | None = None) -> Member:
    """An exported model as a segmenter ``Member`` (``roi`` overrides the exported tile)."""
    from fedseg.model.segmenter import Member, check_roi

    predictor, meta = load_exported(path)
    tile = check_roi(roi if roi is not None else meta.roi, meta.divisor, str(path))
    name = Path(path).name if Path(path).is_dir() else Path(path).parent.name
    return Member(predictor, tile, name, meta.divisor)
