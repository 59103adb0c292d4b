"""OpenVINO export: agreement with PyTorch (FP32 and INT8), metadata written and checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import discover_cases, load_case
from fedseg.errors import FedsegError
from fedseg.model.export import ExportConfig, export_openvino
from fedseg.model.metrics import case_metrics, mean_dice
from fedseg.model.model_file import load_model, weights_hash
from fedseg.model.openvino_backend import META_FILE, ExportMeta, read_export_meta
from fedseg.model.segmenter import ModelSet, segment_volumes


def _segment(model: Path, site: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, probabilities) of every case of the site with one model."""
    models = ModelSet.from_files([model])
    out = []
    for case in discover_cases(site):
        seg = segment_volumes(load_case(case, with_label=False), models)
        out.append((seg.labels, seg.probabilities))
    return out


def test_fp32_export_segments_like_pytorch(trained: Path, fp32_export: Path, site: Path) -> None:
    ref = _segment(trained, site)
    got = _segment(fp32_export, site)
    got_xml = _segment(fp32_export / "model.xml", site)  # the xml names the same model
    for (lr, pr), (lg, pg), (lx, _) in zip(ref, got, got_xml, strict=True):
        assert (lr > 0).sum() > 50  # the trained model finds tumor: a real comparison
        assert mean_dice(case_metrics(lg, lr, (1, 1, 1), ("dice",))) > 0.99
        np.testing.assert_allclose(pg, pr, atol=1e-4)
        np.testing.assert_array_equal(lx, lg)


def test_int8_export_meets_accuracy_control_and_agrees(
    trained: Path, int8_export: tuple[Path, ExportMeta], site: Path
) -> None:
    folder, meta = int8_export
    assert meta.precision == "int8" and meta.calibration is not None
    cal = meta.calibration
    assert cal.dice_fp32 - cal.dice_int8 <= cal.max_drop == 0.005
    assert cal.dice_fp32 > 0.3  # trained: the control compares meaningful Dice values
    ref = _segment(trained, site)
    got = _segment(folder, site)
    for (lr, pr), (lg, pg) in zip(ref, got, strict=True):
        assert mean_dice(case_metrics(lg, lr, (1, 1, 1), ("dice",))) > 0.95
        assert not np.array_equal(pg, pr)  # really quantized, not the FP32 graph
    xml = (folder / "model.xml").read_text()
    assert "FakeQuantize" in xml or "u8" in xml or "i8" in xml


def test_int8_instance_norms_run_on_int8(int8_export: tuple[Path, ExportMeta]) -> None:
    """Symmetric activations let OpenVINO normalize the int8 tensors themselves: no float
    dequantization before each instance norm (the 1.3x of the fast path)."""
    import openvino as ov

    folder, meta = int8_export
    assert meta.calibration is not None and meta.calibration.activations == "symmetric"
    core = ov.Core()
    model = core.read_model(folder / "model.xml")
    model.reshape({model.inputs[0]: ov.PartialShape([1, 4, 24, 24, 24])})
    runtime = core.compile_model(model, "CPU").get_runtime_model()
    infos = [op.get_rt_info() for op in runtime.get_ordered_ops()]
    norms = [rt for rt in infos if rt["layerType"].astype(str) == "MVN"]
    precisions = [rt["runtimePrecision"].astype(str) for rt in norms]
    assert len(precisions) == 15  # depth 2: stem 2, down 2x3, up 2x3, head 1
    assert set(precisions) <= {"i8", "u8"}, precisions


def test_metadata_is_written(trained: Path, fp32_export: Path) -> None:
    meta = ExportMeta.model_validate_json((fp32_export / META_FILE).read_text())
    mf = load_model(trained)
    assert meta.source_hash == weights_hash(mf.weights)
    assert meta.regions == ["ET", "TC", "WT"] and meta.roi == mf.roi
    assert meta.divisor == 4 and meta.in_channels == 4 and meta.precision == "fp32"
    assert meta.inference_precision == "f32" and meta.calibration is None
    assert meta.normalization == "crop-nonzero-zscore" and meta.source_model == "tiny.pt"


def _copy(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / META_FILE).read_text())
    meta.update(changes)
    (dst / META_FILE).write_text(json.dumps(meta))
    return dst


def test_other_version_or_regions_refused(fp32_export: Path, tmp_path: Path) -> None:
    old = _copy(fp32_export, tmp_path / "old", fedseg_version="0.0.9")
    with pytest.raises(FedsegError, match=r"exported with fedseg 0\.0\.9, this is fedseg"):
        ModelSet.from_files([old])
    other = _copy(fp32_export, tmp_path / "regions", regions=["WT", "TC", "ET"])
    with pytest.raises(FedsegError, match="predicts regions"):
        ModelSet.from_files([other / "model.xml"])


def test_damaged_or_mismatched_export_refused(fp32_export: Path, tmp_path: Path) -> None:
    bad = _copy(fp32_export, tmp_path / "bad")
    (bad / META_FILE).write_text("{not json")
    with pytest.raises(FedsegError, match="damaged export metadata"):
        read_export_meta(bad)
    gone = _copy(fp32_export, tmp_path / "gone")
    (gone / META_FILE).unlink()
    with pytest.raises(FedsegError, match=r"metadata fedseg_export\.json missing"):
        read_export_meta(gone)
    swapped = _copy(fp32_export, tmp_path / "swapped")
    data = bytearray((swapped / "model.bin").read_bytes())
    data[100] ^= 0xFF
    (swapped / "model.bin").write_bytes(bytes(data))
    with pytest.raises(FedsegError, match="weights do not match"):
        read_export_meta(swapped)
    with pytest.raises(FedsegError, match="no exported model here"):
        read_export_meta(tmp_path)


def test_int8_needs_calibration_and_out_must_be_free(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(FedsegError, match="--int8 needs --calibration"):
        export_openvino(trained, tmp_path / "x", ExportConfig(int8=True))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(FedsegError, match="not an exported model"):
        export_openvino(trained, busy, ExportConfig())
    assert (busy / "notes.txt").read_text() == "keep me"
