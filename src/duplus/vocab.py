"""The vocabulary every part of DuPLUS shares: modalities, channels, the T1 template and the grid
of voxel positions.

A leaf: it imports nothing of duplus but the error type, so data readers, models, the text side
and inference all read the same definitions without importing each other. A modality is
normalised once, where it enters (a CLI option, a dataset spec, a public function); past that
edge, code passes the canonical name (one of :data:`MODALITIES`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from duplus.errors import InputError

MODALITIES: tuple[str, ...] = ("CT", "MRI", "PET", "PETCT")
"""The modalities DuPLUS knows; the index into this tuple is the ``modality_index`` of a sample."""

PETCT_CHANNEL_ORDER: tuple[str, str] = ("PET", "CT")
"""Channel order of ``PETCT`` images everywhere in DuPLUS: channel 0 is PET (SUV), channel 1 CT (HU)."""

MODALITY_CHANNELS: dict[str, int] = {"CT": 1, "MRI": 1, "PET": 1, "PETCT": len(PETCT_CHANNEL_ORDER)}
"""Image channels of each modality."""

IN_CHANNELS: int = max(MODALITY_CHANNELS.values())
"""Channels of the network's input: single-channel modalities are zero-padded to this."""

MODALITY_WORDS: dict[str, str] = {"CT": "CT", "MRI": "MRI", "PET": "PET", "PETCT": "PET/CT"}
"""How each modality is written in the T1 prompt."""

POSITION_CHANNELS = 3
"""Channels of the voxel-position grid (one normalised coordinate per axis)."""

_MODALITY_ALIASES: dict[str, str] = {
    "ct": "CT",
    "cect": "CT",
    "ncct": "CT",
    "computedtomography": "CT",
    "mr": "MRI",
    "mri": "MRI",
    "t1": "MRI",
    "t1w": "MRI",
    "t1gd": "MRI",
    "t1ce": "MRI",
    "t1c": "MRI",
    "t2": "MRI",
    "t2w": "MRI",
    "flair": "MRI",
    "adc": "MRI",
    "dwi": "MRI",
    "pd": "MRI",
    "cine": "MRI",
    "cinemri": "MRI",
    "magneticresonance": "MRI",
    "magneticresonanceimaging": "MRI",
    "pt": "PET",
    "pet": "PET",
    "fdgpet": "PET",
    "suv": "PET",
    "petct": "PETCT",
    "ptct": "PETCT",
    "fdgpetct": "PETCT",
}


def normalise_modality(name: str, source: str | Path | None = None) -> str:
    """Map a modality name as datasets write it to one of :data:`MODALITIES`.

    ``"ct"`` -> ``"CT"``; ``"MR"``, ``"T1"``, ``"T2"``, ``"FLAIR"``, ``"ADC"`` -> ``"MRI"``;
    ``"PT"``, ``"PET"`` -> ``"PET"``; ``"PET/CT"``, ``"PETCT"`` -> ``"PETCT"``.

    Args:
        name: the modality as written in a spec, a channel name or a CLI option.
        source: the file (or option) it came from, named in the error.

    Raises:
        InputError: the name is not a known modality.
    """
    if name in MODALITIES:
        return name
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if key in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[key]
    raise InputError(source, f"unknown modality '{name}'; expected one of {', '.join(MODALITIES)}")


def modality_index(modality: str) -> int:
    """Position of a canonical modality in :data:`MODALITIES` (the stem it goes through)."""
    if modality not in MODALITIES:
        raise InputError(None, f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return MODALITIES.index(modality)


def t1_prompt(modality: str, region: str) -> str:
    """The T1 (backbone) prompt: ``"A CT scan of the abdomen"`` (``modality`` canonical)."""
    if modality not in MODALITY_WORDS:
        raise ValueError(f"modality {modality!r} is not normalised; pass it through normalise_modality first")
    return f"A {MODALITY_WORDS[modality]} scan of the {str(region).strip()}"


def axis_positions(start: int, length: int, size: int) -> np.ndarray:
    """Normalised coordinates ``(2 i + 1) / size - 1`` of voxels ``start .. start + length - 1``
    of an axis of ``size`` voxels (``-1`` and ``+1`` are the volume's edges)."""
    i = np.arange(start, start + length, dtype=np.float32)
    return (2.0 * i + 1.0) / np.float32(size) - 1.0


def position_grid(
    volume_shape: Sequence[int], start: Sequence[int] | None = None, size: Sequence[int] | None = None
) -> np.ndarray:
    """``(3, *size)`` float32 coordinates of the box at ``start`` of a volume of ``volume_shape``.

    Args:
        volume_shape: the whole preprocessed volume's spatial shape ``(D, H, W)``.
        start: the box's first voxel (may be negative or run past the volume: padding); default 0.
        size: the box's shape; default the whole volume.
    """
    shape = [int(s) for s in volume_shape]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"volume_shape must be 3 positive sizes, got {volume_shape}")
    first = [0, 0, 0] if start is None else [int(s) for s in start]
    extent = shape if size is None else [int(s) for s in size]
    axes = [axis_positions(a, n, s) for a, n, s in zip(first, extent, shape, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32, copy=False)
