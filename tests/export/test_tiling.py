"""Tile planning: shrunk tiles still cover the volume, stay multiples of 2**depth, and
blend back exactly; the progress count matches what is predicted."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.model.inference import sliding_window, tile_plan, tile_starts
from fedseg.model.segmenter import Member, ModelSet


@pytest.mark.parametrize(
    ("shape", "overlap"),
    [((140, 172, 136), 0.5), ((30, 35, 22), 0.5), ((200, 10, 129), 0.25), ((64, 64, 64), 0.0)],
)
def test_plan_covers_with_fewer_voxels(shape: tuple[int, int, int], overlap: float) -> None:
    roi = (128, 128, 128) if max(shape) > 64 else (24, 24, 24)
    tile, starts = tile_plan(shape, roi, overlap, divisor=16 if roi[0] == 128 else 4)
    fixed_tile, fixed = tile_plan(shape, roi, overlap)
    assert fixed_tile == roi
    assert all(
        t <= r and t % (16 if roi[0] == 128 else 4) == 0 for t, r in zip(tile, roi, strict=True)
    )
    covered = np.zeros([max(s, t) for s, t in zip(shape, tile, strict=True)], bool)
    for st in starts:
        covered[tuple(slice(s, s + t) for s, t in zip(st, tile, strict=True))] = True
    assert covered.all()
    assert len(starts) <= len(fixed)
    assert len(starts) * np.prod(tile) <= len(fixed) * np.prod(roi)


def test_brats_brain_box_needs_half_the_voxels() -> None:
    # A typical brain box of a 240x240x155 case: 2x2x2 tiles either way, 96x128x96 not 128^3.
    tile, starts = tile_plan((140, 172, 136), (128, 128, 128), 0.5, divisor=16)
    assert tile == (96, 128, 96) and len(starts) == 8
    assert len(tile_plan((140, 172, 136), (128, 128, 128), 0.5)[1]) == 8
    assert tile_starts(140, 96, 0.5) == [0, 44]


def test_shrunk_tiles_blend_back_exactly() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 37, 50, 21)).astype(np.float32)
    shapes: list[tuple[int, ...]] = []

    def identity(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return batch[:, :3].copy()

    out = sliding_window(image, identity, (32, 32, 32), batch_size=2, divisor=8)
    np.testing.assert_allclose(out, image[:3], atol=1e-5)
    assert {s[2:] for s in shapes} == {tile_plan((37, 50, 21), (32, 32, 32), 0.5, 8)[0]}
    single = sliding_window(image[:, :20, :20, :20], identity, (32, 32, 32), divisor=8)
    np.testing.assert_array_equal(single, image[:3, :20, :20, :20])  # one tile, no blending


def test_tile_count_matches_predictions() -> None:
    image = np.zeros((4, 60, 50, 30), np.float32)
    image[:, 3:57, 5:45, 2:28] = 1.0
    seen: list[int] = []

    def const(batch: np.ndarray) -> np.ndarray:
        return np.full((batch.shape[0], 3, *batch.shape[2:]), 0.5, np.float32)

    models = ModelSet((Member(const, (24, 24, 24), "c", divisor=8),))
    models.predict(image, on_tiles=seen.append)
    assert sum(seen) == models.tile_count(image, 0.5) > 1


def test_calibration_tiles_are_the_tiles_inference_predicts() -> None:
    from fedseg.data.cases import CaseVolumes
    from fedseg.data.preprocess import crop_and_normalize
    from fedseg.model.export import calibration_tiles
    from fedseg.model.inference import predict_cropped

    rng = np.random.default_rng(3)
    image = np.zeros((4, 40, 30, 20), np.float32)
    image[:, 2:38, 3:29, 1:15] = rng.normal(1, 0.3, size=(4, 36, 26, 14))
    seen: list[np.ndarray] = []

    def record(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return np.zeros((batch.shape[0], 3, *batch.shape[2:]), np.float32)

    predict_cropped(image, record, (24, 24, 24), overlap=0.5, divisor=8)
    case = CaseVolumes("c", image, np.zeros(image.shape[1:], np.uint8), np.eye(4))
    tiles = calibration_tiles([case], (24, 24, 24), 8, 0.5, limit=1000)
    assert len(tiles) == len(seen) > 1
    for t, s in zip(tiles, seen, strict=True):
        assert t.shape == s.shape and t.dtype == np.float32 and t.flags.c_contiguous
        np.testing.assert_array_equal(t, s)
    short = crop_and_normalize(image[:, :10, :10, :10])[0]  # shorter than the tile: padded
    padded = calibration_tiles(
        [CaseVolumes("s", image[:, :10, :10, :10], None, np.eye(4))], (24, 24, 24), 8, 0.5, 9
    )
    assert short.shape == (4, 8, 7, 9)  # the brain box of the corner
    assert len(padded) == 1 and padded[0].shape == (1, 4, 8, 8, 16)  # multiples of 8
    np.testing.assert_array_equal(padded[0][0, :, :, :7, :9], short)
    assert not padded[0][0, :, :, 7:].any() and not padded[0][0, :, :, :, 9:].any()
    assert len(calibration_tiles([case], (24, 24, 24), 8, 0.5, limit=2)) == 2
