"""`fedseg data show` pictures and the `fedseg data synth` command, run as real processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedseg.data.cases import discover_cases, load_case
from fedseg.data.show import LABEL_COLOURS, focus_point, render_case, show_case
from fedseg.errors import FedsegError
from tests.helpers import run_fedseg


def test_show_writes_a_png_with_the_overlay(
    tiny_dataset: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    _, result = tiny_dataset
    out = show_case(result["site1"][0], tmp_path / "case.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(out)[..., :3]
    assert pixels.shape[0] > 500 and pixels.shape[1] > 900
    # The overlay colours appear in the picture (alpha-blended over grey, so compare hue).
    for _, rgb in LABEL_COLOURS.values():
        target = np.array(rgb) / max(rgb)
        norm = pixels / np.maximum(pixels.max(axis=-1, keepdims=True), 1e-6)
        close = np.all(np.abs(norm - target) < 0.12, axis=-1) & (pixels.max(axis=-1) > 0.3)
        assert close.sum() > 50


def test_focus_is_the_tumor_centroid_or_the_brain_centre(
    tiny_dataset: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    _, result = tiny_dataset
    vols = load_case(discover_cases(result["site2"][1])[0])
    assert vols.label is not None
    point = focus_point(vols.image, vols.label)
    expected = np.argwhere(vols.label > 0).mean(axis=0)
    assert np.abs(np.array(point) - expected).max() <= 0.5
    brain_centre = np.argwhere(vols.image[0] != 0).mean(axis=0)
    no_tumor = focus_point(vols.image, np.zeros_like(vols.label))
    assert np.abs(np.array(no_tumor) - brain_centre).max() <= 0.5
    vols.label = None
    assert render_case(vols, tmp_path / "nolabel.png").stat().st_size > 10_000


def test_show_rejects_non_png_and_ambiguous_folders(
    tiny_dataset: tuple[Path, dict[str, list[Path]]], tmp_path: Path
) -> None:
    root, result = tiny_dataset
    with pytest.raises(FedsegError, match="PNG"):
        show_case(result["site1"][0], tmp_path / "case.jpg")
    with pytest.raises(FedsegError, match="--case"):
        show_case(root / "site1", tmp_path / "case.png")
    picked = show_case(root / "site1", tmp_path / "picked.png", case_id="site1_002")
    assert picked.is_file()


@pytest.mark.slow
def test_cli_synth_then_show(tmp_path: Path) -> None:
    out = tmp_path / "data"
    proc = run_fedseg(
        "data", "synth", str(out), "--sites", "2", "--cases-per-site", "2", "--spacing", "4",
        "--bad-site", "2", "--bad-kind", "shifted", "--seed", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "4/4" in proc.stdout  # the progress bar's final state
    for site in ("site1", "site2"):
        assert sorted(p.name for p in (out / site).iterdir()) == [f"{site}_000", f"{site}_001"]
    assert "bad_kind: shifted" in (out / "synth.yaml").read_text()
    png = tmp_path / "c.png"
    proc = run_fedseg("data", "show", str(out / "site2" / "site2_001"), "--out", str(png))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    proc = run_fedseg("data", "synth", str(tmp_path / "d"), "--sites", "2", "--bad-site", "3")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "numbered 1..2" in proc.stderr
    proc = run_fedseg("data", "synth", str(tmp_path / "d"), "--bad-kind", "flipped")
    assert proc.returncode == 2 and "eroded, shifted, swapped" in proc.stderr
    assert not (tmp_path / "d" / "site1").exists()
