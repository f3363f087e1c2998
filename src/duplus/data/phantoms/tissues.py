"""The phantom's tissue table: one row per tissue, with its label value and base intensity per modality.

Tissues are painted into a ``uint8`` map of row indices; the label map and each modality's image
are look-ups of that map (:data:`LABEL_LUT` here, the intensity tables in :mod:`.appearance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tissue:
    """One tissue: its label value in :data:`.labels.FULL_LABELS` (0 = not a target) and base intensities."""

    name: str
    label: int
    ct: float  # Hounsfield units
    mri: float  # T1-weighted, arbitrary units
    pet: float  # SUV


TISSUES: tuple[Tissue, ...] = (
    Tissue("air", 0, -1000, 0, 0.0),
    Tissue("fat", 0, -100, 900, 0.4),
    Tissue("visceral fat", 0, -95, 880, 0.4),
    Tissue("muscle", 0, 50, 330, 0.9),
    Tissue("bone", 0, 700, 250, 1.3),
    Tissue("disc", 0, 80, 300, 0.8),
    Tissue("spinal canal", 0, 15, 160, 0.5),
    Tissue("liver", 1, 60, 620, 2.3),
    Tissue("spleen", 2, 85, 400, 1.9),
    Tissue("left kidney", 3, 150, 460, 3.0),
    Tissue("right kidney", 4, 150, 460, 3.0),
    Tissue("aorta", 5, 200, 60, 1.7),
    Tissue("inferior vena cava", 0, 120, 110, 1.6),
    Tissue("pancreas", 6, 45, 720, 1.5),
    Tissue("stomach", 0, 40, 360, 1.6),
    Tissue("stomach content", 0, 10, 140, 0.7),
    Tissue("gas", 0, -900, 0, 0.0),
    Tissue("bowel", 0, 30, 380, 1.4),
    Tissue("liver tumour", 7, 25, 300, 6.0),
    Tissue("scalp", 0, 20, 750, 0.8),
    Tissue("skull", 0, 1000, 120, 1.0),
    Tissue("cerebrospinal fluid", 10, 8, 180, 0.6),
    Tissue("grey matter", 9, 40, 560, 8.0),
    Tissue("white matter", 8, 28, 820, 3.0),
    Tissue("airway", 0, -950, 0, 0.0),
    Tissue("gland", 0, 45, 480, 1.8),
    Tissue("thyroid", 0, 110, 500, 1.5),
    Tissue("artery", 0, 180, 70, 1.7),
    Tissue("vein", 0, 140, 90, 1.6),
    Tissue("primary tumour", 11, 55, 420, 10.0),
    Tissue("lymph node", 12, 45, 450, 6.0),
)
TISSUE_ID = {t.name: i for i, t in enumerate(TISSUES)}
"""``{tissue name: value in the tissue map}``."""
LABEL_LUT = np.array([t.label for t in TISSUES], dtype=np.int16)
"""Tissue map value -> full label value."""
AIRLIKE = ("air", "gas", "airway")
VASCULAR = ("aorta", "inferior vena cava", "artery", "vein", "spleen", "left kidney", "right kidney")
TUMOURS = ("liver tumour", "primary tumour", "lymph node")


def tissue_ids(names: Sequence[str]) -> np.ndarray:
    """Tissue map values of ``names``."""
    return np.array([TISSUE_ID[n] for n in names], dtype=np.intp)


def tissue_set(names: Sequence[str]) -> np.ndarray:
    """A boolean look-up table over tissue map values, true for ``names``."""
    lut = np.zeros(256, dtype=bool)
    lut[tissue_ids(names)] = True
    return lut
