"""SimpleITK <-> NIfTI geometry, coarse grids, and transform composition."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from fedseg.intake import itk_bridge
from fedseg.intake.registration import compose, euler_from, matrix_offset


def test_affine_round_trip_matches_nibabel_convention() -> None:
    affine = np.array(
        [[-1.5, 0, 0, 90.0], [0, 1.2, 0.1, -120.0], [0, -0.1, 1.2, -60.0], [0, 0, 0, 1]]
    )
    arr = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    img = itk_bridge.from_array(arr, affine)
    np.testing.assert_allclose(itk_bridge.affine_of(img), affine, atol=1e-9)
    np.testing.assert_array_equal(itk_bridge.to_array(img), arr)
    # Voxel (1, 2, 3) sits at affine @ (1, 2, 3) in RAS, i.e. (-x, -y, z) in ITK's LPS.
    ras = affine @ [1, 2, 3, 1]
    lps = img.TransformIndexToPhysicalPoint((1, 2, 3))
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-9)
    assert img[1, 2, 3] == arr[1, 2, 3]


def test_reference_grid_keeps_field_of_view() -> None:
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    grid = itk_bridge.reference_grid(affine, (240, 240, 155), 2.0)
    assert grid.GetSize() == (120, 120, 78)
    out = itk_bridge.affine_of(grid)
    np.testing.assert_allclose(np.diag(out)[:3], [-2.0, 2.0, 2.0])
    # The first voxel's outer corner stays where the 1 mm grid's corner was.
    corner_1mm = affine @ [-0.5, -0.5, -0.5, 1]
    corner_2mm = out @ [-0.5, -0.5, -0.5, 1]
    np.testing.assert_allclose(corner_1mm, corner_2mm)
    full = itk_bridge.reference_grid(affine, (240, 240, 155), None)
    np.testing.assert_allclose(itk_bridge.affine_of(full), affine)


def test_compose_is_one_transform_for_two() -> None:
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q2, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q1 *= np.sign(np.linalg.det(q1))
    q2 *= np.sign(np.linalg.det(q2))
    outer = euler_from(q1, np.array([3.0, -2.0, 5.0]))
    inner = sitk.Euler3DTransform((10.0, 0.0, 0.0), 0.1, -0.2, 0.3, (1.0, 2.0, 3.0))
    inner.SetMatrix(tuple(q2.ravel()))
    both = compose(outer, inner)
    for p in rng.normal(scale=50, size=(5, 3)):
        expected = outer.TransformPoint(inner.TransformPoint(tuple(p)))
        np.testing.assert_allclose(both.TransformPoint(tuple(p)), expected, atol=1e-6)
    a, _ = matrix_offset(both)
    np.testing.assert_allclose(a @ a.T, np.eye(3), atol=1e-9)
