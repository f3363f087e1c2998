"""World geometry of a phantom case: rotations, the case's affine, and the collection's grid cycle.

Anatomy lives in a patient frame (RAS axes, centred on the field of view); each case's affine puts
a voxel grid (RAS, LPS, permuted, oblique; isotropic or anisotropic) into world space around it, so
every grid of one seed shows the same anatomy in world millimetres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import permutations
from typing import Any

import numpy as np

from duplus.errors import ConfigError

FOV_MM = 96.0
"""Field of view per axis in mm; anatomy is sized for it (64 voxels at 1.5 mm)."""
AFFINE_STYLES = ("ras", "lps", "permuted", "oblique")

GEOMETRY_CYCLE = (
    ("ras", False),
    ("ras", True),
    ("lps", False),
    ("oblique", False),
    ("permuted", True),
    ("ras", False),
)
"""(affine style, anisotropic) of successive collection cases: a third anisotropic, a third non-RAS,
one in six oblique."""
_ANISOTROPY = np.array([0.9, 0.9, 2.0])


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about the unit ``axis`` by ``angle`` radians."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def euler(rz: float, ry: float = 0.0, rx: float = 0.0) -> np.ndarray:
    """Rotation about z, then y, then x (angles in degrees)."""
    rot_z = rotation(np.array([0.0, 0, 1]), math.radians(rz))
    rot_y = rotation(np.array([0.0, 1, 0]), math.radians(ry))
    rot_x = rotation(np.array([1.0, 0, 0]), math.radians(rx))
    return rot_z @ rot_y @ rot_x


def as_triple(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    """``value`` as three floats (a scalar is repeated); ``name`` is used in the error."""
    items: Sequence[Any] = [value] * 3 if isinstance(value, int | float | np.number) else list(value)
    vals = [float(v) for v in items]
    if len(vals) != 3:
        raise ConfigError(f"{name} must have 3 values, got {value!r}")
    return vals[0], vals[1], vals[2]


def _direction(style: str, rng: np.random.Generator) -> np.ndarray:
    """Direction cosines (columns: world direction of each array axis) for an affine style."""
    if style == "ras":
        return np.eye(3)
    if style == "lps":
        return np.diag([-1.0, -1.0, 1.0])
    if style == "permuted":
        perms = [p for p in permutations(range(3)) if p != (0, 1, 2)]
        perm = perms[int(rng.integers(len(perms)))]
        signs = rng.choice([-1.0, 1.0], size=3)
        direction = np.zeros((3, 3))
        for axis, world in enumerate(perm):
            direction[world, axis] = signs[axis]
        return direction
    return rotation(rng.normal(size=3), math.radians(rng.uniform(5.0, 15.0)))


def build_affines(
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    style: str,
    rng_geom: np.random.Generator,
    rng_anat: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """World affine of the case and the voxel -> patient-frame affine (pose removed).

    The patient's position and pose come from the anatomy stream ``rng_anat`` (they are part of the
    patient); the grid's direction comes from ``rng_geom``.
    """
    origin = rng_anat.uniform(-40.0, 40.0, 3)  # table position: the FOV is centred on the patient
    pose = euler(rng_anat.normal(0.0, 4.0), rng_anat.normal(0.0, 2.0), rng_anat.normal(0.0, 2.0))
    matrix = _direction(style, rng_geom) @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin - matrix @ ((np.asarray(shape, dtype=np.float64) - 1.0) / 2.0)
    to_local = np.eye(4)
    to_local[:3, :3] = pose.T
    to_local[:3, 3] = -pose.T @ origin
    return affine, to_local @ affine


def case_geometry(
    index: int, offset: int, base_shape: tuple[int, int, int]
) -> tuple[str, tuple[int, ...], np.ndarray]:
    """Affine style, grid shape and spacing of collection case ``index`` (cycle shifted by ``offset``)."""
    style, anisotropic = GEOMETRY_CYCLE[(index + offset) % len(GEOMETRY_CYCLE)]
    spacing = FOV_MM / np.asarray(base_shape, dtype=np.float64)
    if anisotropic:
        spacing = spacing * _ANISOTROPY
    shape = tuple(max(4, int(round(FOV_MM / s))) for s in spacing)
    return style, shape, spacing
