"""Appearance: each modality's intensity physics, blur, noise and bias field over a painted tissue map.

CT is in Hounsfield units (portal-venous phase); T1-weighted MRI reverses several contrasts and
carries a multiplicative bias field and Rician noise; PET is SUV-like, blurred by its point-spread
function, with Poisson-like noise. MRI can instead take a random contrast per case (``mri_appearance="random"``,
the SynthSeg-style appearance of :mod:`.contrast`). Each renderer draws its case-level variation (intensity gain,
enhancement, noise level) from its own stream, so adding a modality to a case never changes another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from duplus.data.phantoms.canvas import Canvas
from duplus.data.phantoms.contrast import render_random_appearance
from duplus.data.phantoms.shapes import Waves
from duplus.data.phantoms.tissues import AIRLIKE, TISSUES, TUMOURS, VASCULAR, tissue_ids
from duplus.vocab import PETCT_CHANNEL_ORDER

PHANTOM_MODALITIES = ("CT", "MRI", "PET", "PETCT")
MRI_APPEARANCES = ("fixed", "random")
"""MRI intensity physics: the T1-weighted tissue table, or a random contrast per case (:mod:`.contrast`)."""

_CT_LUT = np.array([t.ct for t in TISSUES], dtype=np.float32)
_MRI_LUT = np.array([t.mri for t in TISSUES], dtype=np.float32)
_PET_LUT = np.array([t.pet for t in TISSUES], dtype=np.float32)


def render_image(
    canvas: Canvas,
    modality: str,
    rngs: Mapping[str, np.random.Generator],
    spacing: np.ndarray,
    mri_appearance: str = "fixed",
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Render ``modality`` from a painted canvas.

    Args:
        canvas: the case's tissue map.
        modality: one of :data:`PHANTOM_MODALITIES`.
        rngs: ``{channel: generator}`` with each channel the modality uses (``CT``, ``MRI``, ``PET``).
        spacing: ``(3,)`` voxel size in mm.
        mri_appearance: ``"fixed"`` (T1-weighted table) or ``"random"`` (a random Gaussian
            intensity per tissue, T1-like in half the cases, with blur, slice thickness, bias
            field, noise and gamma: :func:`.contrast.render_random_appearance`).

    Returns:
        The float32 ``(I, J, K)`` image of each channel (``PETCT``: PET then CT, as
        :data:`duplus.vocab.PETCT_CHANNEL_ORDER`) and the appearance parameters drawn.
    """
    channels = list(PETCT_CHANNEL_ORDER) if modality == "PETCT" else [modality]
    images, appearance = [], {}
    renderers = _RENDERERS | ({"MRI": _render_mri_random} if mri_appearance == "random" else {})
    for ch in channels:
        img, facts = renderers[ch](canvas, rngs[ch], spacing)
        images.append(img.astype(np.float32, copy=False))
        appearance.update(facts)
    return images, appearance


def _psf_blur(image: np.ndarray, spacing: np.ndarray, sigma_mm: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma=tuple(sigma_mm / spacing), mode="nearest", truncate=3.0)


def _render_ct(canvas: Canvas, rng: np.random.Generator, spacing: np.ndarray) -> tuple[np.ndarray, dict]:
    lut = _CT_LUT + rng.normal(0.0, 3.0, _CT_LUT.shape).astype(np.float32)
    lut[tissue_ids(AIRLIKE)] = _CT_LUT[tissue_ids(AIRLIKE)]
    enhancement = float(rng.uniform(0.75, 1.25))
    vascular = tissue_ids(VASCULAR)
    lut[vascular] = 40.0 + (lut[vascular] - 40.0) * enhancement
    image = _psf_blur(lut[canvas.tissue], spacing, np.maximum(0.5, 0.4 * spacing))
    sigma = float(rng.uniform(10.0, 20.0))
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    np.clip(image, -1024.0, 3071.0, out=image)
    return image, {"ct_noise_hu": sigma, "ct_enhancement": enhancement}


def _render_mri(canvas: Canvas, rng: np.random.Generator, spacing: np.ndarray) -> tuple[np.ndarray, dict]:
    gain = float(math.exp(rng.uniform(math.log(0.6), math.log(1.6))))
    lut = _MRI_LUT * np.exp(rng.normal(0.0, 0.06, _MRI_LUT.shape)).astype(np.float32) * gain
    image = _psf_blur(lut[canvas.tissue], spacing, np.maximum(0.5, 0.4 * spacing))
    bias = Waves.draw(rng, 3, (150.0, 300.0), (0.05, 0.12))
    image *= np.exp(canvas.grid.waves_on_grid(bias))
    sigma = float(rng.uniform(0.02, 0.045)) * 600.0 * gain
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag), {"mri_gain": gain, "mri_noise": sigma}


def _render_mri_random(
    canvas: Canvas, rng: np.random.Generator, spacing: np.ndarray
) -> tuple[np.ndarray, dict]:
    image, facts = render_random_appearance(
        canvas.tissue,
        tuple(spacing),
        rng,
        presets={"T1": _MRI_LUT / _MRI_LUT.max()},
        num_labels=len(_MRI_LUT),
    )
    return image, {f"mri_{k}": v for k, v in facts.items()}


def _render_pet(canvas: Canvas, rng: np.random.Generator, spacing: np.ndarray) -> tuple[np.ndarray, dict]:
    lut = _PET_LUT * np.float32(rng.uniform(0.85, 1.15))
    for tid, suv in canvas.uptake.items():
        lut[tid] = suv
    activity = lut[canvas.tissue]
    if canvas.radial is not None:
        for tid in tissue_ids(TUMOURS):
            inside = canvas.tissue == tid
            if not inside.any():
                continue
            r = canvas.radial[inside]
            profile = 1.0 - 0.3 * r * r
            profile *= 1.0 - canvas.necrosis.get(int(tid), 0.0) * np.exp(-np.square(r / 0.45))
            activity[inside] *= profile
    fwhm = float(rng.uniform(6.0, 8.0))
    activity = _psf_blur(activity, spacing, np.full(3, fwhm / 2.3548))
    counts = float(rng.uniform(1.5, 3.0)) * float(np.prod(spacing))  # expected counts per SUV per voxel
    noisy = rng.poisson(np.maximum(activity, 0.0).astype(np.float64) * counts).astype(
        np.float32
    ) / np.float32(counts)
    image = _psf_blur(noisy, spacing, np.full(3, 1.2))
    return np.maximum(image, 0.0), {
        "pet_fwhm_mm": fwhm,
        "pet_counts_per_suv_mm3": counts / float(np.prod(spacing)),
    }


_RENDERERS = {"CT": _render_ct, "MRI": _render_mri, "PET": _render_pet}
