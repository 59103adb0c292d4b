"""A site's scanner: contrast curve, point-spread blur (thick slices blur one axis more),
smooth multiplicative bias field, intensity scale and Rician noise, then skull-stripping."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fedseg.data.synth.config import SiteProfile
from fedseg.data.synth.fields import smooth_noise

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def blur_sigma_vox(profile: SiteProfile, spacing: float) -> tuple[float, float, float]:
    """Gaussian sigma per voxel axis: the in-plane PSF, plus the slice profile along
    ``slice_axis``; the part finer than the output voxel is already averaged away."""
    inplane = profile.blur_fwhm_mm * _FWHM_TO_SIGMA
    sigmas = [inplane, inplane, inplane]
    thick = profile.slice_thickness_mm * _FWHM_TO_SIGMA
    sigmas[profile.slice_axis] = float(np.hypot(inplane, thick))
    voxel = spacing * _FWHM_TO_SIGMA
    out = [float(np.sqrt(max(s**2 - voxel**2, 0.0))) / spacing for s in sigmas]
    return (out[0], out[1], out[2])


def acquire(
    images: np.ndarray,
    brain: np.ndarray,
    profile: SiteProfile,
    spacing: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """What the site's scanner records from noise-free ``images`` (4, X, Y, Z): float32 in
    scanner units, skull-stripped (exactly 0 outside ``brain``, > 0 inside)."""
    sigma = blur_sigma_vox(profile, spacing)
    mask = brain.astype(np.float32)
    weight = ndi.gaussian_filter(mask, sigma) if any(s > 0.05 for s in sigma) else mask
    # The coil's sensitivity is shared by all sequences; each sequence adds its own part.
    shared = smooth_noise(brain.shape, 80.0 / spacing, rng)
    out = np.empty_like(images)
    for m in range(images.shape[0]):
        img = np.power(np.maximum(images[m], 1e-3), np.float32(profile.contrast_gamma[m]))
        if any(s > 0.05 for s in sigma):
            # Normalized convolution: blur within the brain without darkening its edge.
            img = ndi.gaussian_filter(img * mask, sigma) / np.maximum(weight, 1e-3)
        own = smooth_noise(brain.shape, 60.0 / spacing, rng)
        bias = np.exp(np.float32(profile.bias_strength) * (0.75 * shared + 0.66 * own))
        scale = np.float32(profile.intensity_scale * profile.modality_scale[m])
        signal = img * bias * scale
        noise_sd = np.float32(profile.noise) * scale
        real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * noise_sd
        imag = rng.standard_normal(signal.shape, dtype=np.float32) * noise_sd
        magnitude = np.sqrt(real * real + imag * imag)  # Rician: magnitude of complex signal
        out[m] = np.where(brain, np.maximum(magnitude, np.float32(1e-3) * scale), 0.0)
    return out
