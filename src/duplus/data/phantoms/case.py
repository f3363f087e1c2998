"""One synthetic case: anatomy painted on the case's grid, rendered in one modality, with its facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from duplus.data.phantoms.anatomy import KINDS, build_anatomy
from duplus.data.phantoms.appearance import MRI_APPEARANCES, PHANTOM_MODALITIES, render_image
from duplus.data.phantoms.geometry import AFFINE_STYLES, FOV_MM, as_triple, build_affines
from duplus.data.phantoms.labels import FULL_LABELS, KIND_LABELS, TUMOUR_LABELS
from duplus.data.phantoms.tissues import LABEL_LUT
from duplus.errors import ConfigError


@dataclass
class PhantomCase:
    """One synthetic case.

    Attributes:
        image: float32 ``(I, J, K)``, or ``(2, I, J, K)`` for ``PETCT`` (channel 0 PET, 1 CT, as
            :data:`duplus.vocab.PETCT_CHANNEL_ORDER`). CT in HU, MRI arbitrary units, PET SUV.
        label: int16 ``(I, J, K)`` in the full label map (values of :data:`.labels.FULL_LABELS`).
        affine: ``(4, 4)`` voxel-to-world (RAS+, mm).
        label_names: ``{value: canonical target}`` of the targets this kind of phantom can contain.
        info: JSON-serialisable case facts: ``kind``, ``modality``, ``affine_style``, ``shape``,
            ``spacing``, ``volumes_ml`` per target (the liver including its tumour),
            ``has_tumour``, ``tumour_volume_ml``, ``suvmax`` (measured in the tumour when PET is
            rendered, else ``None``), ``appearance`` (intensity parameters); head-and-neck adds
            ``gtvp_volume_ml``, ``gtvn_volume_ml``, ``num_nodes``, ``primary_radius_mm``,
            ``primary_uptake`` and ``node_uptake`` (peak SUV before blur and noise).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    label_names: dict[int, str]
    info: dict[str, Any]


def make_phantom_case(
    seed: int,
    kind: str = "abdomen",
    modality: str = "CT",
    *,
    shape: int | Sequence[int] = (96, 96, 96),
    spacing: float | Sequence[float] | None = None,
    affine_style: str = "ras",
    with_tumour: bool | None = None,
    mri_appearance: str = "fixed",
) -> PhantomCase:
    """Make one synthetic case, deterministically from ``seed``.

    The anatomy (pose, organ shapes, deformation, tumours) depends only on ``seed`` and ``kind``,
    never on the grid or the modality, so one seed rendered on different grids or modalities shows
    the same patient. Each modality has its own random stream: the CT of a ``"CT"`` case and of a
    ``"PETCT"`` case of the same seed and grid are identical.

    Args:
        seed: random seed.
        kind: ``"abdomen"`` (liver, spleen, kidneys, aorta, pancreas, optional liver tumour),
            ``"head"`` (brain: white matter, grey matter, CSF) or ``"headneck"`` (neck with a
            primary tumour and 0-3 lymph nodes).
        modality: ``"CT"``, ``"MRI"``, ``"PET"`` or ``"PETCT"`` (two channels: PET, CT).
        shape: grid size ``(I, J, K)`` (an int for a cube).
        spacing: voxel size in mm per array axis; ``None`` fits :data:`.geometry.FOV_MM` (96 mm) per axis.
        affine_style: ``"ras"``, ``"lps"`` (x and y flipped), ``"permuted"`` (random axis
            permutation and flips) or ``"oblique"`` (5-15 degree rotation).
        with_tumour: abdomen: liver tumour yes/no, ``None`` = 40% chance. Head-and-neck: ``False``
            gives a tumour-free neck, otherwise a primary tumour is always present. Head: ignored.
        mri_appearance: ``"fixed"`` (T1-weighted tissue table) or ``"random"`` (a random contrast
            per case, :mod:`.contrast`); other modalities ignore it.

    Returns:
        A :class:`PhantomCase`.
    """
    _check_choice(kind, KINDS, "kind")
    _check_choice(modality, PHANTOM_MODALITIES, "modality")
    _check_choice(affine_style, AFFINE_STYLES, "affine style")
    _check_choice(mri_appearance, MRI_APPEARANCES, "MRI appearance")
    shape3, spacing3 = _case_grid(shape, spacing)
    # one stream per job: anatomy, grid direction, then one per rendered channel
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)]
    rng_anat, rng_geom = streams[0], streams[1]
    affine, local = build_affines(shape3, spacing3, affine_style, rng_geom, rng_anat)
    canvas, info = build_anatomy(kind, shape3, local, rng_anat, with_tumour)
    label = LABEL_LUT[canvas.tissue]
    names = {v: FULL_LABELS[v] for v in KIND_LABELS[kind]}
    rngs = {"CT": streams[2], "MRI": streams[3], "PET": streams[4]}
    images, appearance = render_image(canvas, modality, rngs, spacing3, mri_appearance)
    image = images[0] if len(images) == 1 else np.stack(images)
    pet = images[0] if modality in ("PET", "PETCT") else None
    info.update(_case_facts(label, names, spacing3, pet, kind))
    info.update(
        kind=kind,
        modality=modality,
        affine_style=affine_style,
        shape=list(shape3),
        spacing=[float(v) for v in spacing3],
        appearance=appearance,
    )
    return PhantomCase(image=image, label=label, affine=affine, label_names=names, info=info)


TEST_STREAM = 7_357
"""Tag of the held-out stream: ``case_seed(test_seed, TEST_STREAM, ...)`` has one more part than any
training case's ``case_seed(seed, task, i)``, so no held-out case shares a training case's seed."""


def case_seed(*parts: int) -> int:
    """A case's seed from the collection seed and the case's place in it."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint32)[0])


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ConfigError(f"unknown phantom {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def _case_grid(
    shape: int | Sequence[int], spacing: float | Sequence[float] | None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The checked grid shape and spacing ``(3,)`` of a case (spacing ``None``: fill the FOV)."""
    s = as_triple(shape, "shape")
    shape3 = (int(s[0]), int(s[1]), int(s[2]))
    if min(shape3) < 4:
        raise ConfigError(f"phantom shape must be at least 4 voxels per axis, got {shape3}")
    spacing3 = np.array(
        FOV_MM / np.asarray(shape3) if spacing is None else as_triple(spacing, "spacing"), dtype=np.float64
    )
    if np.any(spacing3 <= 0):
        raise ConfigError(f"phantom spacing must be positive, got {tuple(spacing3)}")
    return shape3, spacing3


def _case_facts(
    label: np.ndarray, names: dict[int, str], spacing: np.ndarray, pet: np.ndarray | None, kind: str
) -> dict[str, Any]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=len(FULL_LABELS) + 1)
    volumes = {n: float(counts[v]) * voxel_ml for v, n in names.items()}
    if "liver" in volumes:  # the liver includes its tumour, as target_mask does
        volumes["liver"] += volumes.get("liver tumour", 0.0)
    tumour_values = TUMOUR_LABELS[kind]
    tumour = np.isin(label, tumour_values) if tumour_values else np.zeros(label.shape, dtype=bool)
    facts: dict[str, Any] = {"volumes_ml": volumes, "tumour_volume_ml": float(tumour.sum()) * voxel_ml}
    if kind == "headneck":
        facts["gtvp_volume_ml"] = volumes["primary tumour"]
        facts["gtvn_volume_ml"] = volumes["lymph node"]
    facts["suvmax"] = float(pet[tumour].max()) if pet is not None and tumour.any() else None
    return facts
