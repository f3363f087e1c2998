"""The one image type of DuPLUS, :class:`Volume`, and the affine check every reader applies.

A leaf of :mod:`duplus.data`: the NIfTI reader (:mod:`duplus.data.io`) and the DICOM reader
(:mod:`duplus.data.dicom`) both build volumes, and neither imports the other's module for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duplus.errors import InputError


@dataclass
class Volume:
    """A 3D image with channels.

    Attributes:
        array: ``(C, I, J, K)`` voxel data (channels first, spatial axes in file order).
        affine: ``(4, 4)`` voxel-to-world matrix (RAS+, millimetres).
        path: where it was read from, for error messages.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[1:4])  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis, ``(3,)``."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])


def check_affine(path: Path, affine: np.ndarray) -> None:
    """Refuse an affine that is not finite, has a zero voxel size or is singular (naming ``path``)."""
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(path, "affine is not a finite 4x4 matrix")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(spacing <= 1e-6):
        raise InputError(path, f"zero or negative voxel spacing {tuple(np.round(spacing, 4))}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "affine is singular (degenerate voxel axes)")
