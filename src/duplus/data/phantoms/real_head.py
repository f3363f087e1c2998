"""The real MNI152 T1 as an evaluation image: its reference tissue labels and test renderings.

The synthetic heads (:mod:`duplus.data.phantoms.synth_head`) are drawn from the MNI152 *maps*
only; the template's T1 intensities never reach a training image, so the real T1 is a fair test
image for a model trained on them. The reference labels here use exactly the generator's rule
(:func:`duplus.data.phantoms.head_maps.build_head_maps`: inside the closed brain outline, the
largest of ``P(WM)``, ``P(GM)`` and ``1 - P(WM) - P(GM)``), cropped back from the padded grid to
the template's own grid. Two renderings test what the synthetic training claims to teach:

* :func:`invert_contrast`: ``max - T1`` inside the brain outline (a T2-like contrast: fluid bright,
  white matter dark), 0 outside;
* :func:`reoriented_grid` with :func:`resample_reference`: the image and its labels on a grid of
  another orientation and voxel size (e.g. LSA, 1 x 1 x 3 mm) covering the same field of view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from duplus.data.phantoms.head_maps import CSF, GM, PAD_MM, WM, block_mean, load_mni152_head_maps
from duplus.data.resample import resample_to_grid
from duplus.errors import ConfigError

REFERENCE_TARGETS: dict[int, str] = {WM: "white matter", GM: "grey matter", CSF: "cerebrospinal fluid"}
"""Label value -> target name of the reference."""


@dataclass(frozen=True)
class RealHead:
    """A real head image with reference labels, on one grid.

    Attributes:
        image: float32 ``(I, J, K)`` intensities.
        tissue: int16 ``(I, J, K)``: 0, or a :data:`REFERENCE_TARGETS` value.
        outline: bool ``(I, J, K)``: the brain outline (closed, holes filled); a brain-tissue mask
            outside it lies on what would be scalp, skull or air.
        affine: ``(4, 4)`` voxel-to-world (RAS+ mm).
    """

    image: np.ndarray
    tissue: np.ndarray
    outline: np.ndarray
    affine: np.ndarray

    def target_mask(self, target: str) -> np.ndarray:
        """bool ``(I, J, K)`` reference mask of a :data:`REFERENCE_TARGETS` name."""
        values = [v for v, name in REFERENCE_TARGETS.items() if name == target]
        if not values:
            raise ConfigError(f"no reference for {target!r}; known: {', '.join(REFERENCE_TARGETS.values())}")
        return self.tissue == values[0]

    def nifti(self) -> nib.Nifti1Image:
        """The image as a NIfTI image (float32)."""
        return nib.Nifti1Image(self.image.astype(np.float32), self.affine)


def load_mni152_reference(resolution: int = 2) -> RealHead:
    """The real MNI152 2009 T1 (block-averaged to ``resolution`` mm) and its reference labels.

    Raises:
        ConfigError: nilearn is not installed (``pip install 'duplus[synth]'``).
    """
    from nilearn import datasets

    maps = load_mni152_head_maps(resolution)
    t1 = np.asanyarray(datasets.load_mni152_template(resolution=1).dataobj, dtype=np.float32)
    t1 = block_mean(t1, resolution)
    spacing = np.linalg.norm(maps.affine[:3, :3], axis=0)
    pad = np.ceil(PAD_MM / spacing).astype(int)  # as build_head_maps pads
    crop = tuple(slice(int(p), int(p) + s) for p, s in zip(pad, t1.shape, strict=True))
    affine = maps.affine.copy()
    affine[:3, 3] = maps.affine[:3, 3] + maps.affine[:3, :3] @ pad
    return RealHead(
        image=t1,
        tissue=maps.tissue[crop].astype(np.int16),
        outline=maps.distance_mm[crop] == 0,
        affine=affine,
    )


def invert_contrast(head: RealHead) -> RealHead:
    """The same head with ``max - image`` inside the brain outline and 0 outside (T2-like)."""
    inside = head.outline
    top = float(head.image[inside].max())
    inverted = np.where(inside, top - head.image, 0.0).astype(np.float32)
    return RealHead(image=inverted, tissue=head.tissue, outline=head.outline, affine=head.affine)


def reoriented_grid(
    affine: np.ndarray,
    shape: Sequence[int],
    axcodes: str = "LSA",
    voxel_mm: Sequence[float] = (1.0, 1.0, 3.0),
) -> tuple[tuple[int, int, int], np.ndarray]:
    """A grid of orientation ``axcodes`` and voxel size ``voxel_mm`` covering a volume's field of view.

    Args:
        affine: ``(4, 4)`` source voxel-to-world.
        shape: ``(3,)`` source shape.
        axcodes: the direction each new voxel axis points to (nibabel's codes, e.g. ``"LSA"``).
        voxel_mm: ``(3,)`` voxel size along the new axes.

    Returns:
        ``(shape, affine)`` of the new grid; ``nib.aff2axcodes(affine) == tuple(axcodes)``.
    """
    directions = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
    if len(axcodes) != 3 or {directions[c][0] for c in axcodes if c in directions} != {0, 1, 2}:
        raise ConfigError(f"axcodes must name three different axes (e.g. LSA), got {axcodes!r}")
    rotation = np.zeros((3, 3))
    for column, code in enumerate(axcodes):
        row, sign = directions[code]
        rotation[row, column] = sign * float(voxel_mm[column])
    corners = np.array(
        [[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    new_shape = np.floor(np.abs(np.linalg.solve(rotation, hi - lo))).astype(int) + 1
    new = np.eye(4)
    new[:3, :3] = rotation
    # the voxel (0, 0, 0) at the corner each axis starts from
    new[:3, 3] = np.where(rotation.sum(axis=1) > 0, lo, hi)
    return (int(new_shape[0]), int(new_shape[1]), int(new_shape[2])), new


def resample_reference(head: RealHead, shape: Sequence[int], affine: np.ndarray) -> RealHead:
    """The head on another grid: the image trilinear, the labels and outline nearest-neighbour."""
    image = resample_to_grid(head.image[None], head.affine, shape, affine, mode="linear")[0]
    tissue = resample_to_grid(head.tissue[None], head.affine, shape, affine, mode="nearest")[0]
    outline = resample_to_grid(
        head.outline[None].astype(np.uint8), head.affine, shape, affine, mode="nearest"
    )[0]
    return RealHead(image=image, tissue=tissue.astype(np.int16), outline=outline.astype(bool), affine=affine)
