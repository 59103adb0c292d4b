"""Patch augmentation of the FeTS recipe (numpy), applied identically to image and label.

Image (C, X, Y, Z) float32, regions (R, X, Y, Z); spatial axes are 1, 2, 3. Every random
choice comes from the generator passed in, so a seeded generator gives the same result.
"""

from __future__ import annotations

import numpy as np

from fedseg.train.config import AugmentConfig

#: Rotation plane (two spatial axes of a (C, X, Y, Z) array) for each rotation axis x, y, z.
PLANES: tuple[tuple[int, int], ...] = ((2, 3), (1, 3), (1, 2))


def augment(
    image: np.ndarray, regions: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rot90 (p ``rot90_p``), rot180 (p ``rot180_p``) about a random axis, a flip along a
    random axis (p ``flip_p``), Gaussian noise on the image (p ``noise_p``).

    A 90-degree rotation swaps two sides, so it only turns about axes whose plane is square
    (all of them for cubic patches); the output shape always equals the input shape.
    """
    if rng.random() < cfg.rot90_p:
        square = [i for i, (a, b) in enumerate(PLANES) if image.shape[a] == image.shape[b]]
        if square:
            plane = PLANES[square[rng.integers(len(square))]]
            k = 1 if rng.random() < 0.5 else 3  # either direction
            image, regions = np.rot90(image, k, plane), np.rot90(regions, k, plane)
    if rng.random() < cfg.rot180_p:
        plane = PLANES[rng.integers(3)]
        image, regions = np.rot90(image, 2, plane), np.rot90(regions, 2, plane)
    if rng.random() < cfg.flip_p:
        axis = 1 + int(rng.integers(3))
        image, regions = np.flip(image, axis), np.flip(regions, axis)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if rng.random() < cfg.noise_p and cfg.noise_sigma > 0:
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(
            cfg.noise_sigma
        )
    return image, np.ascontiguousarray(regions)
