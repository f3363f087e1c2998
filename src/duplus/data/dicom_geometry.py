"""The geometry of a DICOM slice stack: is it a regular 3D grid, and if not, why not.

A series of single-frame slices is a volume only when the slices share one orientation, are
stacked along their common normal (no gantry tilt), and are evenly spaced (no missing slice).
:func:`analyse_stack` sorts the slices along the normal and says which of these fails;
:func:`regrid_stack` resamples an irregular stack onto a regular, orthogonal grid (for
``allow_uneven``): linear along the normal, with each slice's in-plane offset (gantry tilt)
undone first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPACING_RTOL = 0.01
"""Slice gaps within 1 % of their median count as even (highdicom's default tolerance)."""

MISSING_RTOL = 0.05
"""A gap within 5 % of a whole multiple (2, 3, ...) of the median gap means missing slices."""


@dataclass(frozen=True)
class StackGeometry:
    """Where the slices of one series lie.

    Attributes:
        order: the slice indices sorted along the normal (ascending).
        row: unit vector along a row (increasing column index), LPS.
        col: unit vector along a column (increasing row index), LPS.
        normal: ``row x col``, the stacking direction.
        positions: ``(N, 3)`` ImagePositionPatient of the sorted slices, LPS mm.
        depths: ``(N,)`` position of each sorted slice along ``normal``, mm.
        pixel_spacing: ``(row spacing, column spacing)`` in mm, as DICOM's PixelSpacing.
        step: the regular slice spacing (mean gap of an even stack, median gap otherwise), mm.
        problem: why the stack is not a regular grid (``None`` when it is).
        resamplable: whether :func:`regrid_stack` can make it one (not for duplicate positions).
    """

    order: list[int]
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    positions: np.ndarray
    depths: np.ndarray
    pixel_spacing: tuple[float, float]
    step: float
    problem: str | None
    resamplable: bool = True

    @property
    def in_plane_offsets(self) -> np.ndarray:
        """``(N, 2)`` offset of each sorted slice's origin from the first one's, in pixels
        (column index, row index): non-zero only under gantry tilt."""
        delta = self.positions - self.positions[0]
        return np.stack(
            [delta @ self.row / self.pixel_spacing[1], delta @ self.col / self.pixel_spacing[0]], axis=1
        )


def analyse_stack(
    orientation: np.ndarray, positions: np.ndarray, pixel_spacing: tuple[float, float]
) -> StackGeometry:
    """Sort slices along their normal and check the stack is a regular, orthogonal grid.

    Args:
        orientation: ``(6,)`` ImageOrientationPatient shared by the slices (row, column cosines).
        positions: ``(N, 3)`` ImagePositionPatient of each slice, in file order.
        pixel_spacing: ``(row spacing, column spacing)`` in mm.

    Returns:
        The sorted geometry; ``problem`` names a duplicate position, a gantry tilt, missing
        slices or uneven spacing (in that order of precedence), else ``None``.
    """
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = np.asarray(positions, dtype=np.float64)
    order = [int(i) for i in np.argsort(positions @ normal, kind="stable")]
    pos = positions[order]
    depths = pos @ normal
    gaps = np.diff(depths)
    median = float(np.median(gaps))
    step = median
    problem: str | None = None
    drift = pos - pos[0] - np.outer(depths - depths[0], normal)
    drift_mm = float(np.linalg.norm(drift, axis=1).max())
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        problem = (
            f"several slices at the same position ({depths[k]:.2f} mm along the normal): duplicate slices?"
        )
    elif drift_mm > 0.5 * min(pixel_spacing):
        span = float(depths[-1] - depths[0])
        angle = float(np.degrees(np.arctan2(drift_mm, span)))
        problem = (
            f"gantry tilt: the slice origins drift {drift_mm:.1f} mm in-plane over the stack "
            f"({angle:.1f} degrees off the slice normal)"
        )
    elif np.ptp(gaps) > SPACING_RTOL * median:
        problem = _spacing_problem(gaps, depths, median)
    else:
        step = float((depths[-1] - depths[0]) / (len(depths) - 1))
    return StackGeometry(
        order=order,
        row=row,
        col=col,
        normal=normal,
        positions=pos,
        depths=depths,
        pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
        step=step,
        problem=problem,
        resamplable=not np.any(gaps < 1e-3),
    )


def _spacing_problem(gaps: np.ndarray, depths: np.ndarray, median: float) -> str:
    """Name missing slices (gaps that are whole multiples of the usual one) or uneven spacing."""
    ratio = gaps / median
    whole = np.round(ratio)
    multiples = (whole >= 2) & (np.abs(ratio - whole) <= MISSING_RTOL * whole)
    regular = np.abs(ratio - 1) <= SPACING_RTOL
    if multiples.any() and np.all(multiples | regular):
        missing = int((whole[multiples] - 1).sum())
        k = int(np.argmax(multiples))
        return (
            f"{missing} missing slice(s): a {gaps[k]:.2f} mm gap between the slices at "
            f"{depths[k]:.2f} and {depths[k + 1]:.2f} mm where the series steps {median:.2f} mm"
        )
    return f"uneven slice spacing: gaps from {gaps.min():.2f} to {gaps.max():.2f} mm (median {median:.2f})"


def regrid_stack(slices: np.ndarray, geometry: StackGeometry, fill: float) -> np.ndarray:
    """Resample a sorted, irregular stack onto a regular grid of ``geometry.step`` spacing.

    The grid has the first slice's origin and in-plane axes and steps along the normal, so it is
    orthogonal even when the slices were tilted. Each slice is first shifted by its in-plane
    offset (linear interpolation; pixel ``i`` of slice ``m`` lies at grid column ``i + offset``), then values are interpolated linearly between the two slices
    that bracket each grid depth.

    Args:
        slices: ``(I, J, N)`` sorted slices (column index, row index, slice).
        geometry: the stack's geometry from :func:`analyse_stack`.
        fill: value for grid points outside a shifted slice.

    Returns:
        ``(I, J, M)`` float32 volume, ``M = round(span / step) + 1``.
    """
    from scipy.ndimage import shift as nd_shift

    offsets = geometry.in_plane_offsets
    data = np.asarray(slices, dtype=np.float32)
    if np.abs(offsets).max() > 1e-6:
        data = np.stack(
            [
                nd_shift(data[..., m], offsets[m], order=1, mode="constant", cval=fill)
                for m in range(data.shape[-1])
            ],
            axis=-1,
        )
    depths = geometry.depths - geometry.depths[0]
    count = int(round(depths[-1] / geometry.step)) + 1
    targets = np.arange(count) * geometry.step
    upper = np.clip(np.searchsorted(depths, targets, side="right"), 1, len(depths) - 1)
    lower = upper - 1
    weight = np.clip((targets - depths[lower]) / (depths[upper] - depths[lower]), 0.0, 1.0)
    return (data[..., lower] * (1 - weight) + data[..., upper] * weight).astype(np.float32)
