"""Rigid registration for the harmonized pipeline (SimpleITK): N4 for the metric only,
Mattes mutual information, multi-resolution, and composition into one transform.

Transforms follow ITK: a transform maps points of the fixed (output) space to points of
the moving (input) space, which is what resampling needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from fedseg.intake.config import PreprocessConfig


@dataclass(frozen=True)
class RegistrationResult:
    """A fixed->moving rigid transform and the final metric value (negative MI: lower is
    better)."""

    transform: sitk.Transform
    metric: float


def block_average(image: sitk.Image, spacing: float) -> sitk.Image:
    """Average blocks of voxels so no axis is finer than ``spacing`` mm (anti-aliased shrink)."""
    factors = [max(1, round(spacing / s)) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def n4_corrected(image: sitk.Image, cfg: PreprocessConfig) -> sitk.Image:
    """``image`` divided by its N4 bias field, estimated on a ``n4_shrink``-times smaller copy.

    Used only to compute registrations; harmonized outputs keep the original intensities.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    small = sitk.Shrink(image, [cfg.n4_shrink] * 3)
    small_mask = sitk.Shrink(mask, [cfg.n4_shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(cfg.n4_iterations))
    # N4 needs positive intensities; clamp below a tiny epsilon (MR is nonnegative anyway).
    corrector.Execute(sitk.Clamp(small, lowerBound=1e-3), small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    return sitk.Cast(image / sitk.Exp(log_bias), sitk.sitkFloat32)


def rigid_register(
    fixed: sitk.Image, moving: sitk.Image, cfg: PreprocessConfig, *, init: str
) -> RegistrationResult:
    """Rigid (Euler 3D) fixed->moving transform maximizing Mattes mutual information.

    ``init``: "identity" for sequences of one session (they share scanner coordinates) or
    "moments" (centers of intensity mass) across subjects/spaces, e.g. to the atlas.
    """
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    if init == "moments":
        initial = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
    else:
        initial = sitk.Euler3DTransform()
        center = fixed.TransformContinuousIndexToPhysicalPoint(
            [(s - 1) / 2 for s in fixed.GetSize()]
        )
        initial.SetCenter(center)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(cfg.sampling, cfg.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=cfg.iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    # Rotations (rad) and translations (mm) on one scale: how far a 1 unit step moves voxels.
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(cfg.shrink_factors))
    reg.SetSmoothingSigmasPerLevel(list(cfg.smoothing_sigmas))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    out = reg.Execute(fixed, moving)
    return RegistrationResult(_as_euler(out), float(reg.GetMetricValue()))


def matrix_offset(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with transform(x) = A x + b, for a rigid/affine (possibly composite) transform."""
    probe = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in probe])
    b = mapped[0]
    return (mapped[1:] - b).T, b


def _as_euler(transform: sitk.Transform) -> sitk.Euler3DTransform:
    a, b = matrix_offset(transform)
    return euler_from(a, b)


def euler_from(a: np.ndarray, b: np.ndarray) -> sitk.Euler3DTransform:
    """An Euler 3D transform x -> A x + b (A a rotation), centered at the origin."""
    u, _, vt = np.linalg.svd(a)  # re-orthonormalize away round-off before SetMatrix
    out = sitk.Euler3DTransform()
    out.SetMatrix(tuple((u @ vt).ravel()))
    out.SetTranslation(tuple(float(v) for v in b))
    return out


def compose(outer: sitk.Transform, inner: sitk.Transform) -> sitk.Euler3DTransform:
    """One rigid transform x -> outer(inner(x)), so an image is interpolated only once."""
    a1, b1 = matrix_offset(outer)
    a2, b2 = matrix_offset(inner)
    return euler_from(a1 @ a2, a1 @ b2 + b1)


def describe(transform: sitk.Transform) -> dict[str, float]:
    """Rotation angle (degrees) and translation length (mm) of a rigid transform."""
    a, b = matrix_offset(transform)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(a) - 1) / 2, -1, 1))))
    return {"rotation_deg": round(angle, 3), "translation_mm": round(float(np.linalg.norm(b)), 3)}
