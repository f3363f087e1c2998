"""Per-case preprocessing: orient, resample, normalise, crop (the cache behind ``duplus prepare``
is :mod:`duplus.data.prepared`).

Each case is brought onto an axis-aligned RAS+ grid of ``cfg.spacing`` mm (image trilinear, label
nearest), its intensities are normalised per modality, and it is cropped to the body. The result
is cached as ``<case>_img.npy`` ``(C, D, H, W)`` float32 and ``<case>_seg.npy`` ``(D, H, W)`` int16
next to a ``manifest.json`` that records the dataset identity, the preprocessing config and, per
case, the grid (affine), the crop box and fingerprints of the source files, so a second run only
redoes what changed.

Intensity conventions (:func:`normalise_intensity`):

* CT: clip to ``cfg.ct_window`` ``[lo, hi]`` HU, then ``(x - lo) / (hi - lo) * 2 - 1`` -> ``[-1, 1]``.
* MRI: per channel, clip to the ``cfg.mri_percentiles`` of the foreground, then z-score over the
  foreground (foreground: voxels above 5 % of the range between the minimum and the 99th percentile).
* PET: SUV clipped to ``[0, cfg.pet_suv_max]`` and divided by ``pet_suv_max`` -> ``[0, 1]``
  (0 = no uptake). Input PET must be in SUV units.
* PETCT: channel order :data:`PETCT_CHANNEL_ORDER` (channel 0 PET, channel 1 CT); each channel is
  normalised as its own modality.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from duplus.config import PreprocessConfig
from duplus.data.io import Volume, check_same_grid
from duplus.data.resample import ras_grid_for, resample_to_grid
from duplus.errors import InputError
from duplus.vocab import PETCT_CHANNEL_ORDER, normalise_modality

logger = logging.getLogger(__name__)

__all__ = [
    "PreprocessedCase",
    "channel_modalities",
    "check_label_values",
    "compute_body_mask",
    "normalise_intensity",
    "preprocess_case",
]

RESAMPLE_PADDING: dict[str, float] = {"CT": -1024.0, "MRI": 0.0, "PET": 0.0}
"""Raw value of voxels outside the source field of view (air for CT, no signal otherwise)."""

CT_BODY_HU = -500.0
"""CT voxels above this HU belong to the body (for cropping)."""


# ----------------------------------------------------------------------------------------------
# intensities


def channel_modalities(modality: str, num_channels: int, source: str | Path | None = None) -> list[str]:
    """The modality of each image channel: ``PETCT`` -> ``["PET", "CT"]``, else ``[modality] * C``.

    Raises:
        InputError: a ``PETCT`` image that does not have exactly 2 channels.
    """
    mod = normalise_modality(modality, source)
    if mod == "PETCT":
        if num_channels != 2:
            raise InputError(
                source, f"PET/CT needs 2 channels ({' then '.join(PETCT_CHANNEL_ORDER)}), got {num_channels}"
            )
        return list(PETCT_CHANNEL_ORDER)
    return [mod] * num_channels


def _relative_foreground(x: np.ndarray) -> np.ndarray:
    lo = float(x.min())
    hi = float(np.percentile(x, 99.0))
    fg = x > lo + 0.05 * (hi - lo)
    if fg.sum() < max(1, 0.01 * x.size):
        fg = np.ones_like(x, dtype=bool)
    return fg


def _normalise_channel(x: np.ndarray, modality: str, cfg: PreprocessConfig) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    if modality == "CT":
        lo, hi = (float(v) for v in cfg.ct_window)
        if hi <= lo:
            raise ValueError(f"ct_window must be [low, high] with low < high, got {cfg.ct_window}")
        return ((np.clip(x, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)
    if modality == "PET":
        top = float(cfg.pet_suv_max)
        if top <= 0:
            raise ValueError(f"pet_suv_max must be positive, got {top}")
        if float(x.max()) > 200.0:
            logger.warning("PET maximum %.0f looks like Bq/mL, not SUV; convert PET to SUV first", x.max())
        return (np.clip(x, 0.0, top) / top).astype(np.float32)
    # MRI
    fg = _relative_foreground(x)
    plo, phi = np.percentile(x[fg], [float(cfg.mri_percentiles[0]), float(cfg.mri_percentiles[1])])
    x = np.clip(x, plo, phi)
    vals = x[fg]
    mean, std = float(vals.mean()), float(vals.std())
    return ((x - mean) / max(std, 1e-6)).astype(np.float32)


def normalise_intensity(image: np.ndarray, modality: str, cfg: PreprocessConfig) -> np.ndarray:
    """Normalise intensities per modality (see the module docstring for each rule).

    Args:
        image: ``(C, I, J, K)`` raw intensities (HU for CT, SUV for PET).
        modality: one of :data:`MODALITIES`; ``PETCT`` images have channels (PET, CT).
        cfg: preprocessing config (``ct_window``, ``mri_percentiles``, ``pet_suv_max``).

    Returns:
        ``(C, I, J, K)`` float32.
    """
    mods = channel_modalities(modality, image.shape[0])
    return np.stack([_normalise_channel(image[c], m, cfg) for c, m in enumerate(mods)]).astype(np.float32)


def compute_body_mask(image: np.ndarray, modality: str) -> np.ndarray:
    """Body voxels of a raw ``(C, I, J, K)`` image, ``(I, J, K)`` bool.

    CT (and the CT channel of PET/CT): HU > :data:`CT_BODY_HU`; MRI/PET: the relative foreground
    of the first channel. Small specks (components under 10 % of the largest) are dropped.
    """
    mods = channel_modalities(modality, image.shape[0])
    if "CT" in mods:
        mask = image[mods.index("CT")] > CT_BODY_HU
    else:
        mask = _relative_foreground(image[0])
        if mask.all():
            return mask
    labelled, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labelled.ravel())[1:]
        keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
        mask = np.isin(labelled, keep)
    return mask


def check_label_values(
    label_array: np.ndarray, allowed_values: Iterable[int], path: str | Path | None
) -> None:
    """Raise :class:`InputError` naming ``path`` if the label holds values outside the label map.

    Args:
        label_array: integer label map of any shape.
        allowed_values: the dataset's foreground label values (0 is always allowed).
        path: the label file, named in the error.
    """
    allowed = {0, *(int(v) for v in allowed_values)}
    present = np.unique(np.asarray(label_array))
    bad = [int(v) for v in present if int(v) not in allowed]
    if bad:
        raise InputError(
            path,
            f"label values {bad[:10]} are not in the dataset's label map (allowed: {sorted(allowed)})",
        )


# ----------------------------------------------------------------------------------------------
# one case


@dataclass
class PreprocessedCase:
    """A case on the preprocessed grid.

    Attributes:
        image: ``(C, D, H, W)`` float32, normalised.
        label: ``(D, H, W)`` int16 label values, or ``None``.
        affine: ``(4, 4)`` voxel -> world of the preprocessed grid (RAS+, ``cfg.spacing``, after crop).
        meta: ``original_shape``, ``original_affine``, ``resampled_shape``, ``resampled_affine``,
            ``crop_start``, ``crop_stop`` (in the resampled grid), ``spacing``, ``channels``.
        body: ``(D, H, W)`` bool body mask on the same grid (the one the crop was made from), or
            ``None`` without a foreground crop.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    meta: dict = field(default_factory=dict)
    body: np.ndarray | None = None


def _crop_box(mask: np.ndarray, margin: np.ndarray) -> tuple[list[int], list[int]]:
    shape = np.array(mask.shape)
    if not mask.any():
        return [0, 0, 0], [int(s) for s in shape]
    start, stop = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        start.append(int(max(0, idx[0] - margin[ax])))
        stop.append(int(min(shape[ax], idx[-1] + 1 + margin[ax])))
    return start, stop


def preprocess_case(
    image: Volume, label: Volume | None, modality: str, cfg: PreprocessConfig
) -> PreprocessedCase:
    """Resample to the RAS+ ``cfg.spacing`` grid, normalise and crop one case.

    Args:
        image: ``(C, I, J, K)`` raw image (PET/CT: channels PET, CT).
        label: ``(1, I, J, K)`` integer label map on the image's grid, or ``None``.
        modality: one of :data:`MODALITIES`.
        cfg: preprocessing config.

    Raises:
        InputError: the label's grid (shape or affine) differs from the image's (names the label
            file); a PET/CT image without 2 channels.
    """
    mod = normalise_modality(modality)
    mods = channel_modalities(mod, image.num_channels, image.path)
    if label is not None:
        check_same_grid(image, label)
    dst_shape, dst_affine = ras_grid_for(image.spatial_shape, image.affine, cfg.spacing, source=image.path)
    resampled = np.stack(
        [
            resample_to_grid(
                image.array[c : c + 1], image.affine, dst_shape, dst_affine, "linear", RESAMPLE_PADDING[m]
            )[0]
            for c, m in enumerate(mods)
        ]
    )
    seg = None
    if label is not None:
        seg = resample_to_grid(label.array[:1], label.affine, dst_shape, dst_affine, "nearest", 0)[0].astype(
            np.int16
        )
    spacing = np.asarray(cfg.spacing, dtype=np.float64)
    mask = None
    if cfg.crop_foreground:
        mask = compute_body_mask(resampled, mod)
        if seg is not None:
            mask |= seg > 0
        margin = np.ceil(float(cfg.crop_margin_mm) / spacing).astype(int)
        start, stop = _crop_box(mask, margin)
    else:
        start, stop = [0, 0, 0], list(dst_shape)
    norm = normalise_intensity(resampled, mod, cfg)
    box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    norm = np.ascontiguousarray(norm[(slice(None), *box)])
    if seg is not None:
        seg = np.ascontiguousarray(seg[box])
    affine = dst_affine.copy()
    affine[:3, 3] = dst_affine[:3, :3] @ np.asarray(start, dtype=np.float64) + dst_affine[:3, 3]
    meta = {
        "original_shape": list(image.spatial_shape),
        "original_affine": np.asarray(image.affine).tolist(),
        "resampled_shape": list(dst_shape),
        "resampled_affine": dst_affine.tolist(),
        "crop_start": start,
        "crop_stop": stop,
        "spacing": spacing.tolist(),
        "channels": mods,
    }
    body = np.ascontiguousarray(mask[box]) if mask is not None else None
    return PreprocessedCase(image=norm, label=seg, affine=affine, meta=meta, body=body)
