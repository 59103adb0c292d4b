"""Sliding-window inference: exact reconstruction, seamless blending, crop undone."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.model.inference import (
    predict_cropped,
    probabilities_to_labels,
    sliding_window,
    tile_starts,
)


def identity(batch: np.ndarray) -> np.ndarray:
    return batch[:, :3].copy()


@pytest.mark.parametrize("shape", [(9, 12, 5), (40, 33, 21), (16, 50, 16)])
def test_identity_predictor_reproduces_input(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(4, *shape)).astype(np.float32)
    out = sliding_window(image, identity, (16, 16, 16), overlap=0.5, batch_size=3)
    assert out.shape == (3, *shape)
    np.testing.assert_allclose(out, image[:3], atol=1e-5)


def test_constant_predictor_gives_constant_output_without_seams() -> None:
    calls: list[int] = []

    def constant(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return np.full((batch.shape[0], 3, *batch.shape[2:]), 0.7, np.float32)

    out = sliding_window(np.zeros((4, 45, 30, 20), np.float32), constant, (16, 16, 16))
    np.testing.assert_allclose(out, 0.7, atol=1e-6)
    # Tiles: x 45 -> starts 0..29 step 8 (5), y 30 -> 0..14 (3), z 20 -> 0, 4 (2) = 30.
    assert len(tile_starts(45, 16, 0.5)) == 5 and sum(calls) == 30


def test_tiles_cover_the_volume() -> None:
    for size in (16, 17, 40, 129):
        starts = tile_starts(size, 16, 0.5)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + 16] = True
        assert covered.all() and starts[-1] == max(0, size - 16)


def test_predict_cropped_undoes_the_crop() -> None:
    image = np.zeros((4, 30, 26, 20), np.float32)
    image[:, 5:21, 3:20, 2:18] = np.random.default_rng(2).uniform(1, 2, (4, 16, 17, 16))
    seen: list[tuple[int, ...]] = []

    def ones(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return np.ones((batch.shape[0], 3, *batch.shape[2:]), np.float32)

    probs = predict_cropped(image, ones, (16, 16, 16)).full()
    assert probs.shape == (3, 30, 26, 20)
    inside = np.zeros((30, 26, 20), bool)
    inside[5:21, 3:20, 2:18] = True
    assert (probs[:, inside] == 1).all() and (probs[:, ~inside] == 0).all()
    assert seen[0] == (1, 4, 16, 16, 16)  # the crop (16, 17, 16) tiled, not the full grid


def test_cropped_probabilities_give_the_full_grid_labels() -> None:
    rng = np.random.default_rng(3)
    image = np.zeros((4, 30, 26, 20), np.float32)
    image[:, 5:21, 3:20, 2:18] = rng.uniform(1, 2, (4, 16, 17, 16))

    def noisy(batch: np.ndarray) -> np.ndarray:
        return rng.uniform(0, 1, (batch.shape[0], 3, *batch.shape[2:])).astype(np.float32)

    cropped = predict_cropped(image, noisy, (16, 16, 16))
    assert cropped.values.shape == (3, 16, 17, 16)
    full = cropped.full()
    assert full.shape == (3, 30, 26, 20) and (full[:, :5] == 0).all()
    assert np.array_equal(cropped.labels(), probabilities_to_labels(full))
    assert np.array_equal(cropped.region(1), full[1])
