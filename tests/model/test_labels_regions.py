"""BraTS 2021 labels <-> overlapping regions, and inference's label reconstruction."""

from __future__ import annotations

import numpy as np

from fedseg.data.labels import labels_to_regions, regions_to_labels
from fedseg.model.inference import probabilities_to_labels


def test_round_trip_on_random_label_map() -> None:
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=(17, 13, 11))
    regions = labels_to_regions(label)
    assert regions.shape == (3, 17, 13, 11)
    et, tc, wt = regions
    assert not (et & ~tc).any() and not (tc & ~wt).any()  # ET in TC in WT
    np.testing.assert_array_equal(regions_to_labels(regions), label)
    # Thresholding probabilities that encode the regions gives the same labels back.
    probs = np.where(regions, 0.9, 0.1).astype(np.float32)
    out = probabilities_to_labels(probs)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, label)


def test_inconsistent_regions_inner_region_wins() -> None:
    regions = np.zeros((3, 1, 1, 3), bool)
    regions[0, 0, 0, 0] = True  # ET only -> 4
    regions[1, 0, 0, 1] = True  # TC only -> 1
    regions[2, 0, 0, 2] = True  # WT only -> 2
    assert regions_to_labels(regions).ravel().tolist() == [4, 1, 2]
