"""The FeTS residual U-Net: shapes, parameter count, and the tile-size rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedseg.errors import FedsegError
from fedseg.model.config import NetworkConfig
from fedseg.model.model_file import ModelFile, save_model
from fedseg.model.registry import build_network
from fedseg.model.resunet import count_parameters
from fedseg.model.segmenter import ModelSet, check_roi
from fedseg.model.weights import get_weights
from tests.helpers import run_fedseg
from tests.model.modelkit import TINY, tiny_model


def test_tiny_network_output_shape_non_cubic() -> None:
    net = build_network(TINY).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 4, 16, 8, 12))  # every side a multiple of 2**2
    assert out.shape == (2, 3, 16, 8, 12)
    assert torch.isfinite(out).all()


def _expected_resunet_parameters(cin: int, cout: int, c: int, depth: int) -> int:
    """Independent count from the layer layout in resunet's docstring (affine instance norm:
    2 parameters per channel; conv: cin*cout*k^3 weights + cout biases)."""

    def conv(i: int, o: int, k: int) -> int:
        return i * o * k**3 + o

    def norm(ch: int) -> int:
        return 2 * ch

    def block(ch: int) -> int:
        return 2 * norm(ch) + 2 * conv(ch, ch, 3)

    w = [c * 2**i for i in range(depth + 1)]
    total = conv(cin, w[0], 3) + block(w[0])
    for i in range(depth):
        total += norm(w[i]) + conv(w[i], w[i + 1], 3) + block(w[i + 1])  # down
        total += conv(w[i + 1], w[i], 2) + norm(2 * w[i]) + conv(2 * w[i], w[i], 3)  # up
        total += block(w[i])
    return total + norm(w[0]) + conv(w[0], cout, 1)


def test_fets_parameter_count_without_forward() -> None:
    cfg = NetworkConfig()  # FeTS defaults: 30 filters, depth 4
    assert (cfg.base_filters, cfg.depth) == (30, 4)
    n = count_parameters(build_network(cfg))
    assert n == _expected_resunet_parameters(4, 3, 30, 4)
    # The study reports about 29 M; this layout has 30,205,803.
    assert 28_000_000 < n < 32_000_000


def test_torch_crashes_on_bad_sides_so_we_check_first() -> None:
    net = build_network(TINY).eval()
    with pytest.raises(RuntimeError), torch.no_grad():
        net(torch.randn(1, 4, 18, 16, 16))  # what a user would see without the check
    with pytest.raises(FedsegError, match=r"not a multiple of 4 .*use e\.g\. \(20, 16, 16\)"):
        check_roi((18, 16, 16), TINY.divisor, "tiny.pt")
    assert check_roi([16, 8, 12], TINY.divisor) == (16, 8, 12)


def test_model_with_bad_tile_is_refused_when_loaded(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "bad.pt", roi=(18, 16, 16))
    with pytest.raises(FedsegError, match="not a multiple of 4"):
        ModelSet.from_files([path])
    # A valid override of the tile is accepted.
    assert ModelSet.from_files([path], roi=(16, 16, 16)).members[0].roi == (16, 16, 16)


@pytest.mark.slow
def test_cli_reports_bad_tile_in_one_line(tmp_path: Path, case_dir: Path) -> None:
    path = tiny_model(tmp_path / "bad.pt", roi=(18, 16, 16))
    proc = run_fedseg("segment", "--model", path, case_dir, "--out", tmp_path / "s.nii.gz")
    assert proc.returncode == 2
    assert "not a multiple of 4" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_model_with_wrong_channel_counts_is_refused(tmp_path: Path) -> None:
    cfg = TINY.model_copy(update={"in_channels": 2})
    net = build_network(cfg)
    path = save_model(tmp_path / "two.pt", ModelFile(cfg, get_weights(net), (16, 16, 16)))
    with pytest.raises(FedsegError, match="maps 2 -> 3 channels; segmentation needs 4"):
        ModelSet.from_files([path])
