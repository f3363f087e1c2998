"""Random appearance of a label map (the SynthSeg idea): any contrast, bias, noise, blur and resolution.

Billot et al. (Medical Image Analysis 2023) train a segmenter only on images synthesised from label
maps, each label given a random Gaussian intensity per case, so the network cannot lean on one
contrast. :func:`render_random_appearance` does that for any integer label map, in this order:

1. **Intensities**: each label gets a mean and a standard deviation drawn per case; with probability
   ``p_preset`` the means follow one of the given contrast presets (T1-, T2-, PD-like orderings),
   jittered, otherwise they are uniform in [0, 1]. Each voxel draws from its label's Gaussian.
2. **Blur**: a Gaussian of 0-0.8 voxel sigma per axis (scanner point-spread).
3. **Slice thickness**: a random array axis is acquired with a 1-6 mm slice (Gaussian of that FWHM,
   down-sampled to it and linearly up-sampled back, :func:`simulate_slice_thickness`).
4. **Bias field**: a multiplicative ``exp`` of a smooth random field (:func:`smooth_random_field`).
5. **Noise**: Rician (magnitude of a complex Gaussian), then the image is scaled to [0, 1] and a
   random gamma is applied.

Every draw comes from the one generator passed in, so a seed gives the same image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

SLICE_THICKNESS_MM = (1.0, 6.0)
"""Range of the simulated slice thickness."""
_SD_RANGE = (0.01, 0.08)  # per-label intensity sd, relative to the [0, 1] mean range
_PRESET_JITTER = 0.08
_BLUR_SIGMA_VOXELS = 0.8
_BIAS_SD = (0.0, 0.3)
_NOISE_SD = (0.0, 0.04)
_GAMMA_LOG_SD = 0.25


def smooth_random_field(
    rng: np.random.Generator, shape: Sequence[int], coarse: int | Sequence[int], sd: float
) -> np.ndarray:
    """A smooth random field: Gaussian values ``N(0, sd)`` on a coarse grid, cubic-upsampled to ``shape``.

    Args:
        rng: random generator.
        shape: ``(I, J, K)`` of the result.
        coarse: coarse grid size (an int for every axis); 2-8 gives the low frequencies of bias
            fields and elastic deformations.
        sd: standard deviation of the coarse values.

    Returns:
        float32 ``(I, J, K)``.
    """
    c = np.broadcast_to(np.asarray(coarse, dtype=int), (3,))
    field = rng.normal(0.0, sd, tuple(int(v) for v in c))
    zoom = [n / m for n, m in zip(shape, c, strict=True)]
    out = ndimage.zoom(field, zoom, order=3, mode="nearest", grid_mode=True)
    return out.astype(np.float32, copy=False)


def draw_label_intensities(
    rng: np.random.Generator,
    num_labels: int,
    presets: Mapping[str, Sequence[float]] | None = None,
    p_preset: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-label Gaussian mean and sd of one case, and the contrast they follow.

    Args:
        rng: random generator.
        num_labels: label values ``0 .. num_labels - 1``.
        presets: ``{contrast name: mean per label in [0, 1]}`` (e.g. a T1-like ordering);
            ``None``: always random.
        p_preset: chance of following a preset (chosen uniformly) instead of random means.

    Returns:
        ``means (L,)``, ``sds (L,)`` (float32) and the contrast name (a preset's or ``"random"``).
    """
    names = sorted(presets or {})
    if names and rng.random() < p_preset:
        contrast = names[int(rng.integers(len(names)))]
        base = np.asarray((presets or {})[contrast], dtype=np.float64)
        means = np.clip(base + rng.normal(0.0, _PRESET_JITTER, num_labels), 0.0, 1.0)
    else:
        contrast = "random"
        means = rng.uniform(0.0, 1.0, num_labels)
    sds = rng.uniform(*_SD_RANGE, num_labels)
    return means.astype(np.float32), sds.astype(np.float32), contrast


def simulate_slice_thickness(
    image: np.ndarray, spacing: Sequence[float], axis: int, thickness_mm: float
) -> np.ndarray:
    """``image`` as if acquired with ``thickness_mm`` slices along ``axis``, on its own grid.

    A Gaussian whose FWHM is the slice thickness, then sampling at the slice spacing and linear
    interpolation back (when the slice is thicker than the voxel). Other axes are untouched.

    Args:
        image: float ``(I, J, K)``.
        spacing: voxel size in mm per array axis.
        axis: the slice axis.
        thickness_mm: slice thickness in mm.

    Returns:
        float32 ``(I, J, K)``.
    """
    step = float(thickness_mm) / float(spacing[axis])
    sigma = step / 2.3548
    out = ndimage.gaussian_filter1d(image.astype(np.float32), sigma, axis=axis, mode="nearest")
    n = image.shape[axis]
    m = max(2, int(round(n / step)))
    if m >= n:
        return out
    down = [1.0] * 3
    down[axis] = m / n
    coarse = ndimage.zoom(out, down, order=1, mode="nearest", grid_mode=True)
    up = [1.0] * 3
    up[axis] = n / coarse.shape[axis]
    return ndimage.zoom(coarse, up, order=1, mode="nearest", grid_mode=True).astype(np.float32, copy=False)


def render_random_appearance(
    label: np.ndarray,
    spacing: Sequence[float],
    rng: np.random.Generator,
    *,
    presets: Mapping[str, Sequence[float]] | None = None,
    num_labels: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A random-contrast image of an integer label map (steps in the module docstring).

    Args:
        label: integer ``(I, J, K)``, values ``0 .. num_labels - 1``.
        spacing: voxel size in mm per array axis.
        rng: random generator (the only source of randomness).
        presets: contrast presets for :func:`draw_label_intensities`.
        num_labels: number of label values (default: ``label.max() + 1``).

    Returns:
        float32 ``(I, J, K)`` in [0, 1], and the appearance facts drawn (JSON-serialisable).
    """
    n = int(label.max()) + 1 if num_labels is None else int(num_labels)
    means, sds, contrast = draw_label_intensities(rng, n, presets)
    image = means[label] + sds[label] * rng.standard_normal(label.shape, dtype=np.float32)
    blur = rng.uniform(0.0, _BLUR_SIGMA_VOXELS, 3)
    image = ndimage.gaussian_filter(image, tuple(blur), mode="nearest")
    axis = int(rng.integers(3))
    thickness = float(rng.uniform(*SLICE_THICKNESS_MM))
    image = simulate_slice_thickness(image, spacing, axis, thickness)
    bias_sd = float(rng.uniform(*_BIAS_SD))
    image = np.maximum(image, 0.0) * np.exp(smooth_random_field(rng, image.shape, 4, bias_sd))
    noise = float(rng.uniform(*_NOISE_SD))
    image = _rician(image, noise, rng)
    gamma = float(np.exp(rng.normal(0.0, _GAMMA_LOG_SD)))
    image = np.power(image / max(float(image.max()), 1e-6), gamma).astype(np.float32)
    facts = {
        "contrast": contrast,
        "label_means": [round(float(v), 4) for v in means],
        "slice_axis": axis,
        "slice_thickness_mm": thickness,
        "blur_sigma_voxels": [float(v) for v in blur],
        "bias_sd": bias_sd,
        "noise_sd": noise,
        "gamma": gamma,
    }
    return image, facts


def _rician(image: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``image`` plus complex Gaussian noise of ``sd`` per component."""
    real = image + sd * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sd * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)
