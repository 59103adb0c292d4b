"""Export a fedseg model file to OpenVINO (FP32, or INT8 with accuracy control).

INT8 uses NNCF post-training quantization with accuracy control
(``nncf.quantize_with_accuracy_control``): tiles of a site's validation cases calibrate the
activation ranges, and the metric is the mean Dice (ET/TC/WT, whole cases through the same
sliding window as ``fedseg segment``) against the labels. NNCF reverts the layers that cost
most accuracy to floating point until the drop from FP32 is at most ``max_drop``.
Writes ``model.xml``/``model.bin`` and ``fedseg_export.json`` (``ExportMeta``) into a folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedseg import __version__
from fedseg.data.cases import CaseVolumes, load_case
from fedseg.data.preprocess import crop_and_normalize
from fedseg.errors import FedsegError
from fedseg.model.evaluate import evaluate_cases, summarize_cases
from fedseg.model.inference import Predictor, tile_grid
from fedseg.model.openvino_backend import (
    INSTALL_HINT,
    META_FILE,
    MODEL_XML,
    CalibrationReport,
    ExportMeta,
    Precision,
    compile_config,
    file_sha256,
)
from fedseg.model.segmenter import Member, ModelSet

#: Called with a short description of the step now running (for the CLI's progress).
StepCallback = Callable[[str], None]


class ExportConfig(BaseModel):
    """How to export: precision, and for INT8 the calibration cases and allowed Dice drop."""

    model_config = ConfigDict(extra="forbid")

    int8: bool = False
    max_drop: float = Field(0.005, ge=0.0, le=1.0, description="largest mean-Dice drop")
    max_cases: int = Field(4, ge=1, description="validation cases used for calibration")
    subset_size: int = Field(300, ge=1, description="calibration tiles at most")
    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="sliding-window overlap")
    inference_precision: Precision = "f32"
    #: symmetric: OpenVINO runs instance norm and transposed convolutions on the int8
    #: tensors (fast); asymmetric: a float dequantization before each (about 1.3x slower on
    #: the FeTS network), sometimes closer to FP32 for very small networks.
    activations: Literal["symmetric", "asymmetric"] = "symmetric"


def require_openvino() -> None:
    """Fail with one line naming the extra when OpenVINO or NNCF is missing."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        raise FedsegError(INSTALL_HINT) from None


def mean_case_dice(
    predictor: Predictor,
    cases: Iterable[CaseVolumes],
    roi: tuple[int, int, int],
    divisor: int,
    overlap: float,
) -> float:
    """Mean over ``cases`` of the per-case mean Dice (ET/TC/WT) of ``predictor``, evaluated
    as ``fedseg segment`` runs it (tiles shrunk to fit, multiples of ``divisor``)."""
    models = ModelSet((Member(predictor, roi, "export", divisor),))
    results = evaluate_cases(cases, models, overlap=overlap, metrics=("dice",))
    return summarize_cases(results)["mean"]["dice"].mean


def calibration_cases(site: Path, max_cases: int) -> list[CaseVolumes]:
    """Up to ``max_cases`` validation cases of the site's persistent split, loaded."""
    from fedseg.data.splits import load_split

    val = load_split(Path(site)).val[:max_cases]
    if not val:
        raise FedsegError(
            f"{site}: the split has no validation cases to calibrate on; add labelled cases "
            "(a split puts 1 in 5 in validation)"
        )
    cases = []
    for case in val:
        vol = load_case(case)
        if vol.label is None:
            raise FedsegError(f"case {case.case_id} in {site}: no label map; calibration needs one")
        cases.append(vol)
    return cases


def calibration_tiles(
    cases: Iterable[CaseVolumes],
    roi: tuple[int, int, int],
    divisor: int,
    overlap: float,
    limit: int,
) -> list[np.ndarray]:
    """The sliding-window tiles (1, 4, x, y, z) of the cases, as inference will see them
    (``inference.tile_grid`` of the cropped, z-scored image), at most ``limit`` of them."""
    tiles: list[np.ndarray] = []
    for c in cases:
        cropped, _ = crop_and_normalize(c.image)
        tiles += [batch.copy() for _, batch in tile_grid(cropped, roi, overlap, divisor).batches()]
    rng = np.random.default_rng(0)
    if len(tiles) > limit:
        tiles = [tiles[i] for i in sorted(rng.choice(len(tiles), limit, replace=False))]
    return tiles


def convert_to_openvino(model_path: Path) -> tuple[Any, Any]:
    """(openvino.Model with sigmoid outputs and dynamic spatial dims, fedseg ModelFile)."""
    import openvino as ov
    import torch
    from torch import nn

    from fedseg.model.model_file import load_model

    mf = load_model(Path(model_path))
    net = nn.Sequential(mf.build(), nn.Sigmoid()).eval()
    # A small example traces the graph fast; the sizes are then made dynamic.
    side = 2 * mf.network.divisor
    example = torch.zeros(1, mf.network.in_channels, side, side, side)
    with torch.no_grad():
        model = ov.convert_model(
            net, example_input=example, input=[(-1, mf.network.in_channels, -1, -1, -1)]
        )
    return model, mf


def _ov_predictor(compiled: Any) -> Predictor:
    """Predictor over an already compiled (dynamic-shape) model, for NNCF's validation."""

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(compiled([np.ascontiguousarray(batch, dtype=np.float32)])[0])

    return predict


def quantize_int8(
    model: Any,
    cases: list[CaseVolumes],
    roi: tuple[int, int, int],
    divisor: int,
    config: ExportConfig,
) -> tuple[Any, CalibrationReport]:
    """INT8 model whose mean Dice on ``cases`` is at most ``config.max_drop`` below FP32's."""
    import nncf
    import openvino as ov

    tiles = calibration_tiles(cases, roi, divisor, config.overlap, config.subset_size)
    calib = nncf.Dataset(tiles)
    val = nncf.Dataset(cases)

    def validate(compiled: Any, items: Iterable[CaseVolumes]) -> float:
        return mean_case_dice(_ov_predictor(compiled), items, roi, divisor, config.overlap)

    core = ov.Core()
    compile_cfg = compile_config(config.inference_precision)
    dice_fp32 = validate(core.compile_model(model, "CPU", compile_cfg), cases)
    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration_dataset=calib,
        validation_dataset=val,
        validation_fn=validate,
        max_drop=config.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(tiles),
        target_device=nncf.TargetDevice.CPU,
        # PERFORMANCE = symmetric activations: OpenVINO then runs every instance norm (MVN)
        # and transposed convolution on the int8 tensors directly; with asymmetric ones
        # (MIXED) it inserts a float dequantization before each: 1.36 vs 1.77 s per
        # 96x112x128 tile of the FeTS network on a 2-core CPU.
        preset=nncf.QuantizationPreset.PERFORMANCE
        if config.activations == "symmetric"
        else nncf.QuantizationPreset.MIXED,
    )
    dice_int8 = validate(core.compile_model(quantized, "CPU", compile_cfg), cases)
    if dice_fp32 - dice_int8 > config.max_drop + 1e-9:
        raise FedsegError(
            f"INT8 lowers the mean Dice from {dice_fp32:.4f} to {dice_int8:.4f} (more than "
            f"--max-drop {config.max_drop}) even with reverted layers; try --activations "
            "asymmetric, allow a larger drop, or export without --int8"
        )
    reverted = _count_float_convs(quantized)
    report = CalibrationReport(
        cases=[c.case_id for c in cases],
        dice_fp32=round(dice_fp32, 6),
        dice_int8=round(dice_int8, 6),
        max_drop=config.max_drop,
        reverted_layers=reverted,
        activations=config.activations,
    )
    return quantized, report


def _count_float_convs(model: Any) -> int:
    """Convolutions of ``model`` without a quantized (FakeQuantize/FakeConvert) input."""
    n = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "ConvolutionBackpropData"):
            continue
        src = op.input_value(0).get_node()
        if src.get_type_name() not in ("FakeQuantize", "FakeConvert"):
            n += 1
    return n


def refuse_generator(model_path: Path) -> None:
    """One line when ``model_path`` is a generator file (``model.generator_file``, format
    ``fedseg-generator``): export converts segmentation networks only. Anything else that
    is no segmentation model is left to ``load_model``'s own error."""
    import torch

    from fedseg.model.generator_file import GENERATOR_FORMAT

    path = Path(model_path)
    if not path.is_file():
        return
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file: load_model says so
        return
    if isinstance(payload, dict) and payload.get("format") == GENERATOR_FORMAT:
        raise FedsegError(f"export converts segmentation models; {path} is a generator")


def export_openvino(
    model_path: Path,
    out_dir: Path,
    config: ExportConfig,
    calibration: Path | None = None,
    on_step: StepCallback | None = None,
) -> ExportMeta:
    """Export ``model_path`` (.pt) into ``out_dir``; returns the metadata written there."""
    refuse_generator(model_path)
    require_openvino()
    if config.int8 and calibration is None:
        raise FedsegError("--int8 needs --calibration SITE_DIR (a site with labelled cases)")
    import openvino as ov

    from fedseg.model.model_file import weights_hash

    step = on_step or (lambda _: None)
    out_dir = Path(out_dir)
    if (
        out_dir.exists()
        and not (out_dir / META_FILE).is_file()
        and (not out_dir.is_dir() or any(out_dir.iterdir()))
    ):
        raise FedsegError(
            f"{out_dir}: exists and is not an exported model; give a new or empty folder for --out"
        )
    step("converting to OpenVINO")
    model, mf = convert_to_openvino(model_path)
    report = None
    if config.int8:
        assert calibration is not None
        step(f"loading calibration cases from {calibration}")
        cases = calibration_cases(calibration, config.max_cases)
        step(f"quantizing to INT8 on {len(cases)} cases (max Dice drop {config.max_drop})")
        logging.getLogger("nncf").setLevel(logging.WARNING)
        model, report = quantize_int8(model, cases, mf.roi, mf.network.divisor, config)
    step(f"writing {out_dir}")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # compress_to_fp16 would silently halve the FP32 weights' precision on disk.
    ov.save_model(model, tmp / MODEL_XML, compress_to_fp16=False)
    meta = ExportMeta(
        fedseg_version=__version__,
        precision="int8" if config.int8 else "fp32",
        inference_precision=config.inference_precision,
        regions=list(mf.regions),
        in_channels=mf.network.in_channels,
        roi=mf.roi,
        divisor=mf.network.divisor,
        source_model=Path(model_path).name,
        source_hash=weights_hash(mf.weights),
        network=mf.network.model_dump(),
        model_sha256=file_sha256((tmp / MODEL_XML).with_suffix(".bin")),
        calibration=report,
    )
    (tmp / META_FILE).write_text(json.dumps(meta.model_dump(), indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return meta
