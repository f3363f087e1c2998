"""One synthetic head MRI from real anatomy: deformed MNI152 labels rendered with a random appearance.

Per case, deterministically from its seed (three independent streams: anatomy, space, appearance):

1. **Labels** (:func:`.head_maps.draw_head_labels`): the MNI152 brain tissues with randomly thick
   non-brain shells (skull, diploe, scalp, fat, CSF).
2. **Space**: a random affine (rotation up to 15 degrees per axis, scale 0.85-1.15 per axis,
   shear up to 0.05) about the head's centre, plus a smooth elastic displacement (a 5x5x5 field of
   0-3 mm sd, cubic-upsampled), pulled back onto an output grid whose orientation is random too
   (axis permutation, flips, and in half the cases a 0-10 degree oblique tilt), so the written
   NIfTI affines vary like real scans. Labels are sampled nearest-neighbour.
3. **Appearance** (:func:`.contrast.render_random_appearance`): random Gaussian intensity per
   label, T1-, T2- or PD-like in half the cases (:data:`HEAD_CONTRASTS`) and arbitrary otherwise,
   then blur, a 1-6 mm slice thickness along a random axis, a bias field, Rician noise and gamma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from duplus.data.phantoms.case import PhantomCase
from duplus.data.phantoms.contrast import render_random_appearance, smooth_random_field
from duplus.data.phantoms.geometry import as_triple, euler, rotation
from duplus.data.phantoms.head_maps import HEAD_LABELS, HeadMaps, draw_head_labels, load_mni152_head_maps
from duplus.errors import ConfigError

HEAD_FOV_MM = (192.0, 224.0, 192.0)
"""Output field of view per world axis (x: left-right, y: posterior-anterior, z: inferior-superior)."""
HEAD_CONTRASTS: dict[str, tuple[float, ...]] = {
    # background, WM, GM, CSF, skull, diploe, scalp, subcutaneous fat
    "T1": (0.02, 0.75, 0.50, 0.20, 0.05, 0.60, 0.45, 0.90),
    "T2": (0.02, 0.35, 0.50, 0.95, 0.05, 0.45, 0.35, 0.60),
    "PD": (0.02, 0.60, 0.72, 0.80, 0.10, 0.60, 0.55, 0.80),
}
"""Mean intensity per label of the contrast presets (jittered per case)."""
_ROTATION_DEG = 15.0
_SCALE = (0.85, 1.15)
_SHEAR = 0.05
_ELASTIC_SD_MM = (0.0, 3.0)
_ELASTIC_COARSE = 5
_OBLIQUE_DEG = 10.0
_SHIFT_SD_MM = 5.0


def make_synth_head_case(
    seed: int,
    maps: HeadMaps | None = None,
    *,
    spacing: float = 2.0,
    fov_mm: Sequence[float] = HEAD_FOV_MM,
    resolution: int = 2,
) -> PhantomCase:
    """One synthetic head MRI case, deterministically from ``seed``.

    Args:
        seed: random seed.
        maps: the anatomy (default: the MNI152 maps at ``resolution`` mm, needs nilearn).
        spacing: isotropic output voxel size in mm.
        fov_mm: output field of view per world axis (x, y, z) in mm.
        resolution: voxel size in mm of the MNI152 maps when ``maps`` is not given.

    Returns:
        A :class:`.case.PhantomCase`: ``image`` float32 ``(I, J, K)`` in [0, 1], ``label`` int16 in
        :data:`.head_maps.HEAD_LABELS` values, ``affine`` (RAS mm), ``info`` with the drawn facts.
    """
    if spacing <= 0:
        raise ConfigError(f"synthetic head spacing must be positive; got {spacing}")
    maps = load_mni152_head_maps(resolution) if maps is None else maps
    rng_anat, rng_space, rng_look = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3)
    )
    base, thickness = draw_head_labels(maps, rng_anat)
    shape_ras = tuple(max(4, int(round(f / spacing))) for f in as_triple(tuple(fov_mm), "fov_mm"))
    centre = maps.centre_mm()
    affine, shape = draw_output_grid(rng_space, shape_ras, spacing, centre)
    label, space_facts = warp_labels(base, maps.affine, affine, shape, centre, rng_space)
    spacing3 = (float(spacing),) * 3
    image, look = render_random_appearance(
        label, spacing3, rng_look, presets=HEAD_CONTRASTS, num_labels=len(HEAD_LABELS) + 1
    )
    info: dict[str, Any] = {
        "kind": "mni152",
        "modality": "MRI",
        "shape": list(shape),
        "spacing": list(spacing3),
        "shells_mm": thickness,
        "space": space_facts,
        "appearance": look,
    }
    return PhantomCase(image=image, label=label, affine=affine, label_names=dict(HEAD_LABELS), info=info)


def draw_output_grid(
    rng: np.random.Generator, shape_ras: Sequence[int], spacing: float, centre: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A randomly oriented output grid around ``centre``: its affine ``(4, 4)`` and shape.

    ``shape_ras`` is the number of voxels along the world x, y, z axes; the array axes are a random
    permutation of them with random flips, tilted by up to :data:`_OBLIQUE_DEG` in half the cases.
    """
    perm = rng.permutation(3)
    direction = np.zeros((3, 3))
    direction[perm, np.arange(3)] = rng.choice([-1.0, 1.0], size=3)
    if rng.random() < 0.5:
        direction = rotation(rng.normal(size=3), math.radians(rng.uniform(0.0, _OBLIQUE_DEG))) @ direction
    shape = (int(shape_ras[perm[0]]), int(shape_ras[perm[1]]), int(shape_ras[perm[2]]))
    matrix = direction * float(spacing)
    affine = np.eye(4)
    affine[:3, :3] = matrix
    shift = rng.normal(0.0, _SHIFT_SD_MM, 3)
    affine[:3, 3] = centre + shift - matrix @ ((np.asarray(shape, dtype=np.float64) - 1.0) / 2.0)
    return affine, shape


def draw_spatial_transform(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """A random linear map ``(3, 3)`` (rotation @ shear @ scale) and its parameters."""
    angles = rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, 3)
    scale = rng.uniform(*_SCALE, 3)
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-_SHEAR, _SHEAR, 3)
    matrix = euler(*angles) @ shear @ np.diag(scale)
    facts = {"rotation_deg": [float(a) for a in angles], "scale": [float(s) for s in scale]}
    return matrix, facts


def warp_labels(
    base: np.ndarray,
    base_affine: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    centre: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``base`` labels pulled onto the output grid through a random affine and elastic deformation.

    An output voxel at world ``x`` shows the anatomy at ``M (x - c) + c + u(x)``, with ``M`` from
    :func:`draw_spatial_transform`, ``c`` the head's centre and ``u`` a smooth displacement (mm).

    Returns:
        int16 ``shape`` labels (nearest neighbour; outside the base grid: background) and the facts.
    """
    matrix, facts = draw_spatial_transform(rng)
    elastic_sd = float(rng.uniform(*_ELASTIC_SD_MM))
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = _transform(affine[:3, :3], affine[:3, 3], ijk)
    moved = _transform(matrix, centre - matrix @ centre, world)
    for axis in range(3):
        moved[axis] += smooth_random_field(rng, shape, _ELASTIC_COARSE, elastic_sd).ravel()
    to_base = np.linalg.inv(base_affine)
    coords = _transform(to_base[:3, :3], to_base[:3, 3], moved)
    label = ndimage.map_coordinates(base, coords, order=0, mode="constant", cval=0)
    facts["elastic_sd_mm"] = elastic_sd
    return label.reshape(shape).astype(np.int16), facts


def _transform(matrix: np.ndarray, offset: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``matrix @ points + offset`` for points ``(3, N)``, by element-wise sums.

    Not a BLAS product: its rounding may depend on the thread count, and a case's files must not
    depend on the process that renders them.
    """
    return np.stack([sum(matrix[r, c] * points[c] for c in range(3)) + offset[r] for r in range(3)])
