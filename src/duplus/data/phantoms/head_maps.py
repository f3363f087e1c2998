"""Real head anatomy for the synthetic brain MRI: the MNI152 tissue maps plus drawn non-brain layers.

The anatomy comes from the MNI ICBM152 2009 template shipped inside nilearn (no download): its
grey- and white-matter probability maps and its skull-stripped T1. Only the *maps* are used; the
template's intensities never reach a synthetic image. How each label is derived:

* **brain outline**: the T1 template above 0.2 (nilearn's own brain mask), closed with a 6 mm ball
  and its holes filled, so sulci and ventricles lie inside it.
* **white matter / grey matter / cerebrospinal fluid** (inside the outline): the largest of
  ``P(WM)``, ``P(GM)`` and ``1 - P(WM) - P(GM)``; CSF is therefore the ventricles, sulci and
  cisterns, where neither tissue map is likely. The outline's outer
  band where the maps are empty is CSF too.
* **non-brain layers** (outside the outline; the template has none): nested shells at a distance
  from the outline, drawn per case: subarachnoid CSF (1-4 mm, labelled CSF), the skull's inner
  table (1.5-3 mm), the diploe (1.5-5 mm), the outer table (1-2.5 mm; both tables are "skull"),
  scalp muscle and galea (1.5-4 mm, "scalp"), subcutaneous fat (2-6 mm) and skin (1-2.5 mm,
  "scalp"). Each layer's thickness is multiplied by a smooth random field (about +-15 %), so
  thicknesses vary around the head. Everything beyond is background. In
  :data:`P_SKULL_STRIPPED` of the cases everything outside the outline is background (a
  skull-stripped scan, as the MNI152 T1 itself is).

The maps are padded by :data:`PAD_MM` so that the shells fit; :class:`HeadMaps` holds them on that
padded grid, cached per process by :func:`load_mni152_head_maps`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from duplus.data.phantoms.contrast import smooth_random_field
from duplus.errors import ConfigError

HEAD_LABELS: dict[int, str] = {
    1: "white matter",
    2: "grey matter",
    3: "cerebrospinal fluid",
    4: "skull",
    5: "diploe",
    6: "scalp",
    7: "subcutaneous fat",
}
"""Label values of the synthetic head (0 = background)."""
WM, GM, CSF, SKULL, DIPLOE, SCALP, FAT = range(1, 8)
SHELLS: tuple[tuple[int, tuple[float, float]], ...] = (
    (CSF, (1.0, 4.0)),  # subarachnoid space
    (SKULL, (1.5, 3.0)),  # inner table
    (DIPLOE, (1.5, 5.0)),
    (SKULL, (1.0, 2.5)),  # outer table
    (SCALP, (1.5, 4.0)),  # galea and muscle
    (FAT, (2.0, 6.0)),
    (SCALP, (1.0, 2.5)),  # skin
)
"""The non-brain layers from the brain outline outwards: (label, thickness range in mm)."""
P_SKULL_STRIPPED = 0.1
"""Share of skull-stripped cases (nothing outside the brain outline), as brain-extracted scans are."""
PAD_MM = 40.0
"""Margin added around the template grid for the shells (their thickest sum is 27 mm, +15 %)."""
CLOSING_MM = 6.0
_THICKNESS_FIELD_SD = 0.15


@dataclass(frozen=True)
class HeadMaps:
    """Brain tissue labels and the distance to the brain outline, on one (padded) grid.

    Attributes:
        tissue: int8 ``(I, J, K)``: 0 outside the brain outline, else WM / GM / CSF (:data:`HEAD_LABELS`).
        distance_mm: float32 ``(I, J, K)``: distance from the brain outline's surface in mm (0 inside;
            a voxel centre's distance to the nearest inside voxel centre less half a voxel).
        affine: ``(4, 4)`` voxel-to-world (MNI millimetres, RAS).
    """

    tissue: np.ndarray
    distance_mm: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size ``(3,)`` in mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def centre_mm(self) -> np.ndarray:
        """World centre ``(3,)`` of the brain outline's bounding box."""
        ijk = np.argwhere(self.distance_mm == 0)
        mid = (ijk.min(axis=0) + ijk.max(axis=0)) / 2.0
        return self.affine[:3, :3] @ mid + self.affine[:3, 3]


def build_head_maps(
    p_gm: np.ndarray, p_wm: np.ndarray, brain: np.ndarray, affine: np.ndarray, pad_mm: float = PAD_MM
) -> HeadMaps:
    """Brain tissue labels and outline distance from GM/WM probability maps and a brain mask.

    Args:
        p_gm, p_wm: float ``(I, J, K)`` tissue probabilities in [0, 1].
        brain: bool ``(I, J, K)`` brain mask.
        affine: ``(4, 4)`` voxel-to-world of the maps.
        pad_mm: margin added on every side for the non-brain shells.

    Returns:
        :class:`HeadMaps` on the padded grid.
    """
    if not (p_gm.shape == p_wm.shape == brain.shape) or p_gm.ndim != 3:
        raise ConfigError(f"head maps must be 3D of one shape; got {p_gm.shape}, {p_wm.shape}, {brain.shape}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    pad = np.ceil(pad_mm / spacing).astype(int)
    widths = [(int(p), int(p)) for p in pad]
    gm, wm = (np.pad(p.astype(np.float32), widths) for p in (p_gm, p_wm))
    outline = _close(np.pad(brain.astype(bool), widths), spacing, CLOSING_MM)
    probs = np.stack([wm, gm, np.clip(1.0 - wm - gm, 0.0, 1.0)])
    tissue = np.where(outline, np.argmax(probs, axis=0) + 1, 0).astype(np.int8)
    # from voxel centres to the outline's surface, half a voxel nearer: a thin shell still shows
    edt = ndimage.distance_transform_edt(~outline, sampling=tuple(spacing))
    distance = np.where(outline, 0.0, edt - 0.5 * float(spacing.min())).astype(np.float32)
    padded = affine.copy()
    padded[:3, 3] = affine[:3, 3] - affine[:3, :3] @ pad
    return HeadMaps(tissue=tissue, distance_mm=distance, affine=padded)


def _close(mask: np.ndarray, spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` (by distance transforms), holes filled."""
    dilated = ndimage.distance_transform_edt(~mask, sampling=tuple(spacing)) <= radius_mm
    closed = ndimage.distance_transform_edt(dilated, sampling=tuple(spacing)) > radius_mm
    return ndimage.binary_fill_holes(closed | mask)


def draw_head_labels(
    maps: HeadMaps, rng: np.random.Generator, p_skull_stripped: float = P_SKULL_STRIPPED
) -> tuple[np.ndarray, dict[str, Any]]:
    """One case's head label map on the maps' grid: the brain tissues and randomly thick shells.

    Args:
        maps: the brain maps.
        rng: random generator.
        p_skull_stripped: chance that the case is skull-stripped: everything outside the brain
            outline is background, in the labels and so in the image.

    Returns:
        int16 ``(I, J, K)`` in :data:`HEAD_LABELS` values, and the drawn thicknesses (mm) and
        ``skull_stripped``.
    """
    thickness = np.array([rng.uniform(*r) for _, r in SHELLS])
    scale = np.exp(smooth_random_field(rng, maps.distance_mm.shape, 4, _THICKNESS_FIELD_SD))
    stripped = bool(rng.random() < p_skull_stripped)
    # a shell's distance scaled by the field: thicker layers where the field is positive
    distance = maps.distance_mm / scale
    edges = np.cumsum(thickness)
    layer = np.searchsorted(edges, distance, side="left")  # 0 .. len(SHELLS); inside outline: 0
    values = np.array([v for v, _ in SHELLS] + [0], dtype=np.int16) * (not stripped)
    label = np.where(maps.distance_mm > 0, values[layer], maps.tissue).astype(np.int16)
    names = ["csf", "inner_table", "diploe", "outer_table", "scalp_muscle", "fat", "skin"]
    facts: dict[str, Any] = {f"{n}_mm": round(float(t), 3) for n, t in zip(names, thickness, strict=True)}
    facts["skull_stripped"] = stripped
    return label, facts


@functools.lru_cache(maxsize=2)
def load_mni152_head_maps(resolution: int = 2) -> HeadMaps:
    """The MNI152 2009 maps shipped in nilearn, block-averaged to ``resolution`` mm (cached).

    Raises:
        ConfigError: nilearn is not installed (``pip install 'duplus[synth]'``).
    """
    if int(resolution) < 1:
        raise ConfigError(f"MNI152 map resolution must be a whole number of mm >= 1; got {resolution}")
    try:
        from nilearn import datasets
    except ImportError as exc:
        raise ConfigError("the MNI152 anatomy needs nilearn: pip install 'duplus[synth]'") from exc
    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    r = int(resolution)
    arrays = [block_mean(np.asanyarray(img.dataobj, dtype=np.float32), r) for img in (t1, gm, wm)]
    affine = np.asarray(t1.affine, dtype=np.float64).copy()
    affine[:3, 3] += affine[:3, :3] @ np.full(3, (r - 1) / 2.0)
    affine[:3, :3] *= r
    return build_head_maps(arrays[1], arrays[2], arrays[0] > 0.2, affine)


def block_mean(array: np.ndarray, r: int) -> np.ndarray:
    """Mean over ``r x r x r`` blocks (the trailing partial blocks dropped)."""
    if r == 1:
        return array
    i, j, k = (s // r for s in array.shape)
    return array[: i * r, : j * r, : k * r].reshape(i, r, j, r, k, r).mean(axis=(1, 3, 5))
