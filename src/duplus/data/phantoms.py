"""Synthetic CT / MRI / PET phantoms: the demo's data and the tests' data.

The generator makes both DuPLUS prompts matter:

* **T1 (modality and region)**: the same anatomy is rendered with different intensity physics
  per modality. CT is in Hounsfield units (portal-venous phase: spleen brighter than liver, renal
  parenchyma ~150 HU, enhanced aorta ~200 HU, bone ~700 HU); T1-weighted MRI reverses several
  orderings (liver brighter than spleen and kidneys, fat bright, flowing blood dark, white matter
  brighter than grey matter) and carries a multiplicative bias field and Rician noise; PET is
  SUV-like (background ~1, tumours 5-20), blurred by a 6-8 mm FWHM point-spread function, with
  Poisson-like noise. Appearance varies per case (intensity gain, enhancement, noise level).
* **T2 (targets)**: :func:`make_phantoms` writes several MSD-layout datasets that each label a
  different subset of the organs, with their own label values (partial labels).

Anatomy is built in world millimetres (a patient frame centred on the field of view, RAS axes:
+x is the patient's LEFT, +y anterior, +z superior) and then sampled on the voxel grid of the
case's affine, so RAS, LPS, permuted, oblique and anisotropic grids of one seed show the same
anatomy in world space. Bodies are miniature: the field of view is :data:`FOV_MM` = 96 mm per axis,
which is 64 voxels after resampling to 1.5 mm. Each case has a random pose, size and smooth
low-frequency deformation.

Every case's label is the dataset-independent *full* label map :data:`FULL_LABELS`. Organs never
overlap; a liver tumour is labelled as tumour, and :func:`target_mask` treats "liver" as liver plus
its tumour, as organ datasets label the whole organ.

Prognosis cohort (HECKTOR 2022 layout). Recurrence-free survival follows a KNOWN Weibull
proportional-hazards model::

    log-hazard ratio  eta = 1.0 * z(log total tumour volume [ml])      (GTVp + GTVn, from the label)
                          + 0.6 * z(primary tumour peak uptake [SUV])  (before PSF blur and noise)
                          + 1.4 * [HPV negative]
                          + 0.5 * z(age [years])
                          + 0.8 * [smoker]
                          + 0.9 * [performance status > 0]
    hazard h(t | x) = (k / lam) * (t / lam) ** (k - 1) * exp(eta),   k = 1.2, lam = 3000 days
    censoring C ~ Uniform(300, 2500) days, independent; RFS = min(T, C), Relapse = [T <= C]

``z(v) = (v - mean) / sd`` with the fixed constants :data:`COHORT_STANDARDISATION` (volumes
below 0.05 ml count as 0.05 ml). About 35-45% of patients are censored. On 200-patient cohorts
(lifelines ``concordance_index``) the true linear predictor reaches a C-index of 0.80-0.82, the
image terms alone about 0.73 and the EHR terms alone 0.67-0.69. The EHR signal is mostly
categorical (HPV, smoking, performance status) plus age, since the EHR is read by a text encoder;
the CSV has empty cells for some missing values as the real file does, while the hazard uses the
complete (latent) values.
Everything (coefficients, constants, per-patient covariates and linear predictor) is written to
``cohort_truth.json``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from duplus.data.io import save_nifti
from duplus.data.label_space import canonical_target
from duplus.errors import ConfigError
from duplus.fileio import OutputFolder, write_json_atomic, write_text_atomic
from duplus.vocab import PETCT_CHANNEL_ORDER

__all__ = [
    "AFFINE_STYLES",
    "COHORT_COEFFICIENTS",
    "COHORT_STANDARDISATION",
    "FOV_MM",
    "FULL_LABELS",
    "KINDS",
    "PHANTOM_DATASETS",
    "PHANTOM_MODALITIES",
    "PHANTOM_VERSION",
    "PhantomCase",
    "PhantomDataset",
    "build_dataset_label",
    "compute_linear_predictor",
    "make_phantom_case",
    "make_phantoms",
    "target_mask",
]

logger = logging.getLogger(__name__)

PHANTOM_VERSION = "1.1"  # 1.1: renal parenchyma enhanced (150 HU) as the portal-venous phase has it
FOV_MM = 96.0
"""Field of view per axis in mm; anatomy is sized for it (64 voxels at 1.5 mm)."""
KINDS = ("abdomen", "head", "headneck")
PHANTOM_MODALITIES = ("CT", "MRI", "PET", "PETCT")
AFFINE_STYLES = ("ras", "lps", "permuted", "oblique")

FULL_LABELS: dict[int, str] = {
    1: "liver",
    2: "spleen",
    3: "left kidney",
    4: "right kidney",
    5: "aorta",
    6: "pancreas",
    7: "liver tumour",
    8: "white matter",
    9: "grey matter",
    10: "cerebrospinal fluid",
    11: "primary tumour",
    12: "lymph node",
}
"""The dataset-independent label map of every :class:`PhantomCase` (value -> canonical target)."""
_KIND_LABELS = {"abdomen": (1, 2, 3, 4, 5, 6, 7), "head": (8, 9, 10), "headneck": (11, 12)}
_INCLUDES = {
    "liver": ("liver tumour",),
    "pancreas": ("pancreas tumour",),
    "kidney": ("left kidney", "right kidney"),
}
"""Targets whose extent includes other labelled targets (organ datasets label the whole organ)."""


# ------------------------------------------------------------------------------------------ tissues
@dataclass(frozen=True)
class _Tissue:
    name: str
    label: int  # value in FULL_LABELS, 0 = not a target
    ct: float  # Hounsfield units
    mri: float  # T1-weighted, arbitrary units
    pet: float  # SUV


_TISSUES: tuple[_Tissue, ...] = (
    _Tissue("air", 0, -1000, 0, 0.0),
    _Tissue("fat", 0, -100, 900, 0.4),
    _Tissue("visceral fat", 0, -95, 880, 0.4),
    _Tissue("muscle", 0, 50, 330, 0.9),
    _Tissue("bone", 0, 700, 250, 1.3),
    _Tissue("disc", 0, 80, 300, 0.8),
    _Tissue("spinal canal", 0, 15, 160, 0.5),
    _Tissue("liver", 1, 60, 620, 2.3),
    _Tissue("spleen", 2, 85, 400, 1.9),
    _Tissue("left kidney", 3, 150, 460, 3.0),
    _Tissue("right kidney", 4, 150, 460, 3.0),
    _Tissue("aorta", 5, 200, 60, 1.7),
    _Tissue("inferior vena cava", 0, 120, 110, 1.6),
    _Tissue("pancreas", 6, 45, 720, 1.5),
    _Tissue("stomach", 0, 40, 360, 1.6),
    _Tissue("stomach content", 0, 10, 140, 0.7),
    _Tissue("gas", 0, -900, 0, 0.0),
    _Tissue("bowel", 0, 30, 380, 1.4),
    _Tissue("liver tumour", 7, 25, 300, 6.0),
    _Tissue("scalp", 0, 20, 750, 0.8),
    _Tissue("skull", 0, 1000, 120, 1.0),
    _Tissue("cerebrospinal fluid", 10, 8, 180, 0.6),
    _Tissue("grey matter", 9, 40, 560, 8.0),
    _Tissue("white matter", 8, 28, 820, 3.0),
    _Tissue("airway", 0, -950, 0, 0.0),
    _Tissue("gland", 0, 45, 480, 1.8),
    _Tissue("thyroid", 0, 110, 500, 1.5),
    _Tissue("artery", 0, 180, 70, 1.7),
    _Tissue("vein", 0, 140, 90, 1.6),
    _Tissue("primary tumour", 11, 55, 420, 10.0),
    _Tissue("lymph node", 12, 45, 450, 6.0),
)
_TID = {t.name: i for i, t in enumerate(_TISSUES)}
_LABEL_LUT = np.array([t.label for t in _TISSUES], dtype=np.int16)
_CT_LUT = np.array([t.ct for t in _TISSUES], dtype=np.float32)
_MRI_LUT = np.array([t.mri for t in _TISSUES], dtype=np.float32)
_PET_LUT = np.array([t.pet for t in _TISSUES], dtype=np.float32)
_AIRLIKE = ("air", "gas", "airway")
_VASCULAR = ("aorta", "inferior vena cava", "artery", "vein", "spleen", "left kidney", "right kidney")
_TUMOURS = ("liver tumour", "primary tumour", "lymph node")


def _ids(names: Sequence[str]) -> np.ndarray:
    return np.array([_TID[n] for n in names], dtype=np.intp)


def _allowed(names: Sequence[str]) -> np.ndarray:
    lut = np.zeros(256, dtype=bool)
    lut[_ids(names)] = True
    return lut


# ------------------------------------------------------------------------------------ geometry
def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about the unit ``axis`` by ``angle`` radians."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _euler(rz: float, ry: float = 0.0, rx: float = 0.0) -> np.ndarray:
    """Rotation about z, then y, then x (angles in degrees)."""
    rot_z = _rotation(np.array([0.0, 0, 1]), math.radians(rz))
    rot_y = _rotation(np.array([0.0, 1, 0]), math.radians(ry))
    rot_x = _rotation(np.array([1.0, 0, 0]), math.radians(rx))
    return rot_z @ rot_y @ rot_x


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
    return _rotation(rng.normal(size=3), math.radians(rng.uniform(5.0, 15.0)))


def _triple(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    items: Sequence[Any] = [value] * 3 if isinstance(value, int | float | np.number) else list(value)
    vals = [float(v) for v in items]
    if len(vals) != 3:
        raise ConfigError(f"{name} must have 3 values, got {value!r}")
    return vals[0], vals[1], vals[2]


@dataclass(frozen=True)
class _Waves:
    """A smooth random field: a sum of plane waves ``sum_n amp_n * sin(omega_n . q + phase_n)``."""

    omega: np.ndarray  # (n, 3) radians per mm
    phase: np.ndarray  # (n,)
    amp: np.ndarray  # (n,)

    @classmethod
    def draw(
        cls, rng: np.random.Generator, n: int, wavelength: tuple[float, float], amplitude: tuple[float, float]
    ) -> _Waves:
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength, size=n)
        phase = rng.uniform(0.0, 2 * math.pi, size=n)
        amp = rng.uniform(*amplitude, size=n)
        return cls(dirs * (2 * math.pi / lam)[:, None], phase, amp)

    @property
    def bound(self) -> float:
        return float(np.abs(self.amp).sum())

    def __call__(self, q: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros(np.shape(q[0]), dtype=np.float32)
        for w, ph, a in zip(self.omega, self.phase, self.amp, strict=True):
            arg = float(w[0]) * q[0] + float(w[1]) * q[1] + float(w[2]) * q[2] + float(ph)
            out += float(a) * np.sin(arg)
        return out


class _Grid:
    """Voxel grid with patient-frame coordinates ``q`` (3 arrays ``(I, J, K)``, mm, deformed).

    ``local_affine`` maps voxel indices to the undeformed patient frame. The deformation moves
    every structure by at most ``margin`` mm, which :meth:`block` adds to bounding boxes.
    """

    def __init__(self, shape: tuple[int, int, int], local_affine: np.ndarray, deformation: Sequence[_Waves]):
        self.shape = shape
        self.affine = local_affine
        self.inverse = np.linalg.inv(local_affine)
        self.margin = float(np.sqrt(sum(w.bound**2 for w in deformation))) + 1.0
        self.q = [self._affine_axis(c) + self.waves_on_grid(deformation[c]) for c in range(3)]

    def _affine_axis(self, c: int) -> np.ndarray:
        a = self.affine
        i, j, k = (np.arange(n, dtype=np.float32) for n in self.shape)
        return (
            (float(a[c, 0]) * i)[:, None, None]
            + (float(a[c, 1]) * j)[None, :, None]
            + (float(a[c, 2]) * k + float(a[c, 3]))[None, None, :]
        )

    def waves_on_grid(self, waves: _Waves) -> np.ndarray:
        """``waves`` at the undeformed voxel positions, using that the phase is affine in the index."""
        out = np.zeros(self.shape, dtype=np.float32)
        idx = [np.arange(n, dtype=np.float32) for n in self.shape]
        for w, ph, amp in zip(waves.omega, waves.phase, waves.amp, strict=True):
            c = w @ self.affine[:3, :3]
            d = float(w @ self.affine[:3, 3] + ph)
            arg = (float(c[0]) * idx[0])[:, None, None] + (float(c[1]) * idx[1])[None, :, None]
            arg = arg + (float(c[2]) * idx[2] + d)[None, None, :]
            out += float(amp) * np.sin(arg)
        return out

    def block(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices covering the patient-frame box ``[lo, hi]`` (plus the margin), or ``None``."""
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return (slice(None), slice(None), slice(None))
        lo = lo - self.margin
        hi = hi + self.margin
        corners = np.array(
            [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        ijk = (self.inverse @ corners.T)[:3]
        start = np.maximum(np.floor(ijk.min(axis=1)).astype(int), 0)
        stop = np.minimum(np.ceil(ijk.max(axis=1)).astype(int) + 1, self.shape)
        if np.any(stop <= start):
            return None
        return (slice(start[0], stop[0]), slice(start[1], stop[1]), slice(start[2], stop[2]))

    def coords(self, sl: tuple[slice, slice, slice]) -> list[np.ndarray]:
        return [q[sl] for q in self.q]


@dataclass(frozen=True)
class _Blob:
    """An ellipsoid (or an infinite tube when a semi-axis is ``inf``) with smooth shape perturbation.

    Attributes:
        center: ``(3,)`` patient-frame centre, mm.
        semi: ``(3,)`` semi-axes along the blob's own axes, mm.
        rotation: ``(3, 3)``, columns are the blob's axes in the patient frame.
        taper: thins the blob towards its +axis-0 end (the liver's left lobe).
        bumps: ``(8,)`` low-order angular perturbation of the surface (relative radius).
        waves: optional field added to the normalised radius (gyri, sulci).
    """

    center: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    taper: float = 0.0
    bumps: np.ndarray = field(default_factory=lambda: np.zeros(8))
    waves: _Waves | None = None

    def shrunk(self, mm: float) -> _Blob:
        return _Blob(self.center, self.semi - mm, self.rotation, self.taper, self.bumps, self.waves)

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        reach = float(np.max(self.semi)) * (1.0 + float(np.abs(self.bumps).sum()) + 0.1)
        if self.waves is not None:
            reach *= 1.0 + self.waves.bound
        return self.center - reach, self.center + reach

    def axis_coord(self, q: Sequence[np.ndarray], axis: int) -> np.ndarray:
        r = self.rotation[:, axis]
        c = self.center
        return (
            float(r[0]) * (q[0] - float(c[0]))
            + float(r[1]) * (q[1] - float(c[1]))
            + float(r[2]) * (q[2] - float(c[2]))
        )

    def radius(self, q: Sequence[np.ndarray]) -> np.ndarray:
        """Normalised radius at points ``q``: < 1 inside the blob."""
        u: list[np.ndarray | float] = []
        for a in range(3):
            s = float(self.semi[a])
            u.append(self.axis_coord(q, a) / s if math.isfinite(s) else 0.0)
        if self.taper:
            scale = np.clip(1.0 - self.taper * (np.asarray(u[0]) + 1.0) / 2.0, 0.2, None)
            u[1] = u[1] / scale
            u[2] = u[2] / scale
        r2 = sum(np.square(v) for v in u)
        r = np.sqrt(np.asarray(r2, dtype=np.float32)) + np.float32(1e-6)
        if np.any(self.bumps):
            n0, n1, n2 = (v / r for v in u)
            b = [float(x) for x in self.bumps]
            f = b[0] * n0 * n1 + b[1] * n1 * n2 + b[2] * n0 * n2 + b[3] * (n0 * n0 - n1 * n1)
            f = f + b[4] * (n1 * n1 - n2 * n2) + b[5] * n0 + b[6] * n1 + b[7] * n2
            r = (r / np.maximum(1.0 + f, 0.3)).astype(np.float32, copy=False)
        if self.waves is not None:
            r = r + self.waves(q)
        return np.asarray(r, dtype=np.float32)


class _Canvas:
    """The tissue map being painted, plus per-voxel tumour radius and uptake for PET."""

    def __init__(self, grid: _Grid):
        self.grid = grid
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)
        self.radial: np.ndarray | None = None
        self.uptake: dict[int, float] = {}
        self.necrosis: dict[int, float] = {}

    def paint(
        self,
        blob: _Blob,
        tissue: str,
        over: Sequence[str],
        where: Callable[[list[np.ndarray]], np.ndarray] | None = None,
        record_radial: bool = False,
    ) -> int:
        """Paint ``tissue`` inside ``blob`` over voxels currently of a tissue in ``over``."""
        sl = self.grid.block(*blob.box())
        if sl is None:
            return 0
        q = self.grid.coords(sl)
        r = blob.radius(q)
        mask = r < 1.0
        if where is not None:
            mask &= where(q)
        sub = self.tissue[sl]
        mask &= _allowed(over)[sub]
        sub[mask] = _TID[tissue]
        if record_radial:
            if self.radial is None:
                self.radial = np.ones(self.grid.shape, dtype=np.float32)
            self.radial[sl][mask] = r[mask]
        return int(mask.sum())

    def fill_pattern(self, waves: _Waves, threshold: float, tissue: str, over: str) -> None:
        """Turn voxels of tissue ``over`` into ``tissue`` where the random field exceeds ``threshold``."""
        idx = np.nonzero(self.tissue == _TID[over])
        if idx[0].size == 0:
            return
        field_values = waves([q[idx] for q in self.grid.q])
        hit = field_values > threshold
        self.tissue[tuple(i[hit] for i in idx)] = _TID[tissue]


def _organ(
    rng: np.random.Generator,
    center: Sequence[float],
    semi: Sequence[float],
    rz: float = 0.0,
    *,
    jitter: float = 1.5,
    size: float = 0.1,
    tilt: float = 6.0,
    bumps: float = 0.05,
    taper: float = 0.0,
) -> _Blob:
    """A blob at a nominal place with random position, size, orientation and shape jitter."""
    c = np.asarray(center, dtype=np.float64) + rng.normal(0.0, jitter, 3)
    s = np.asarray(semi, dtype=np.float64) * rng.uniform(1.0 - size, 1.0 + size, 3)
    rot = _euler(rz + rng.normal(0.0, tilt), rng.normal(0.0, tilt), rng.normal(0.0, tilt))
    return _Blob(c, s, rot, taper, rng.normal(0.0, bumps, 8))


def _tube(
    rng: np.random.Generator, x: float, y: float, semi: tuple[float, float], jitter: float = 1.0
) -> _Blob:
    c = np.array([x + rng.normal(0.0, jitter), y + rng.normal(0.0, jitter), 0.0])
    s = np.array([semi[0], semi[1], np.inf]) * np.array([*rng.uniform(0.9, 1.1, 2), 1.0])
    return _Blob(c, s, _euler(0.0, rng.normal(0.0, 2.0), rng.normal(0.0, 2.0)))


# ---------------------------------------------------------------------------------- anatomy
def _paint_spine(canvas: _Canvas, rng: np.random.Generator, y_body: float, over: Sequence[str]) -> None:
    body = _tube(rng, 0.0, y_body, (6.5, 6.0), jitter=0.7)
    canvas.paint(body, "bone", over)
    period, thick, z0 = rng.uniform(20.0, 25.0), rng.uniform(3.0, 4.5), rng.uniform(0.0, 25.0)
    canvas.paint(body, "disc", ("bone",), where=lambda q: np.mod(q[2] - z0, period) < thick)
    arch = _Blob(body.center + np.array([0.0, -9.0, 0.0]), np.array([5.0, 5.0, np.inf]), body.rotation)
    canvas.paint(arch, "bone", (*over, "fat", "muscle"))
    canvas.paint(arch.shrunk(2.5), "spinal canal", ("bone",))


def _build_abdomen(canvas: _Canvas, rng: np.random.Generator, with_tumour: bool | None) -> dict[str, Any]:
    s = rng.uniform(0.94, 1.04)
    torso = _Blob(
        np.array([rng.normal(0, 1.5), rng.normal(0, 1.5), 0.0]),
        np.array([42.0 * s * rng.uniform(0.97, 1.03), 34.0 * s * rng.uniform(0.97, 1.03), np.inf]),
        bumps=rng.normal(0.0, 0.02, 8),
    )
    t_fat, t_muscle = rng.uniform(2.5, 5.0), rng.uniform(2.5, 4.0)
    canvas.paint(torso, "fat", ("air",))
    canvas.paint(torso.shrunk(t_fat), "muscle", ("fat",))
    canvas.paint(torso.shrunk(t_fat + t_muscle), "visceral fat", ("muscle",))
    cavity = ("visceral fat",)
    _paint_spine(canvas, rng, -17.0, (*cavity, "muscle", "fat"))
    for side in (-1.0, 1.0):
        canvas.paint(
            _organ(rng, (10.0 * side, -27.0, 0.0), (6.0, 5.0, np.inf), tilt=0), "muscle", ("fat", *cavity)
        )
    canvas.paint(_tube(rng, 3.0, -5.0, (4.5, 4.5)), "aorta", cavity)
    canvas.paint(_tube(rng, -7.0, -4.0, (3.8, 3.2)), "inferior vena cava", cavity)
    canvas.paint(_organ(rng, (-17.0, -15.0, -6.0), (6.0, 8.0, 11.5), -20.0), "right kidney", cavity)
    canvas.paint(_organ(rng, (17.0, -15.0, -2.0), (6.0, 8.0, 11.5), 20.0), "left kidney", cavity)
    canvas.paint(_organ(rng, (24.0, -7.0, 10.0), (7.0, 12.0, 12.5), 35.0), "spleen", cavity)
    canvas.paint(_organ(rng, (7.0, 1.0, -2.0), (14.0, 4.0, 4.5), -15.0, bumps=0.08), "pancreas", cavity)
    stomach = _organ(rng, (13.0, 13.0, 13.0), (10.0, 7.0, 9.0), 20.0)
    canvas.paint(stomach, "stomach", cavity)
    gas_level = float(stomach.center[1] + rng.uniform(0.2, 0.5) * stomach.semi[1])
    canvas.paint(stomach.shrunk(2.5), "stomach content", ("stomach",))
    canvas.paint(stomach.shrunk(2.5), "gas", ("stomach content",), where=lambda q: q[1] > gas_level)
    liver = _organ(rng, (-14.0, 5.0, 8.0), (20.0, 18.0, 20.0), 10.0, taper=0.45)
    canvas.paint(liver, "liver", cavity)
    # tumour: always drawn (so the random stream does not depend on with_tumour), painted if wanted
    u = np.array([rng.uniform(-0.6, 0.05), rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4)])
    radius = rng.uniform(3.0, 8.0)
    tumour = _organ(
        rng, liver.center + liver.rotation @ (u * liver.semi), (radius,) * 3, jitter=0.0, size=0.15
    )
    has_tumour = bool(rng.random() < 0.4) if with_tumour is None else bool(with_tumour)
    canvas.uptake[_TID["liver tumour"]] = float(rng.uniform(4.0, 10.0))
    if has_tumour:
        canvas.paint(tumour, "liver tumour", ("liver",), record_radial=True)
    canvas.fill_pattern(_Waves.draw(rng, 6, (14.0, 30.0), (0.3, 0.6)), 0.35, "bowel", "visceral fat")
    canvas.fill_pattern(_Waves.draw(rng, 6, (6.0, 12.0), (0.3, 0.6)), 1.2, "gas", "bowel")
    return {"has_tumour": has_tumour}


def _build_head(canvas: _Canvas, rng: np.random.Generator, with_tumour: bool | None) -> dict[str, Any]:
    s = rng.uniform(0.93, 1.04)
    head = _Blob(
        np.array([rng.normal(0, 1.0), rng.normal(0, 1.5), -4.0 + rng.normal(0, 1.0)]),
        np.array([35.0, 42.0, 40.0]) * s * rng.uniform(0.97, 1.03, 3),
        bumps=rng.normal(0.0, 0.02, 8),
    )
    t_scalp, t_skull, t_csf, t_gm = (
        rng.uniform(2.0, 3.5),
        rng.uniform(3.0, 5.0),
        rng.uniform(1.5, 3.0),
        rng.uniform(4.5, 6.5),
    )
    canvas.paint(head, "scalp", ("air",))
    canvas.paint(head.shrunk(t_scalp), "skull", ("scalp",))
    canvas.paint(head.shrunk(t_scalp + t_skull), "cerebrospinal fluid", ("skull",))
    inner = head.shrunk(t_scalp + t_skull + t_csf)
    sulci = _Waves.draw(rng, 6, (8.0, 16.0), (0.008, 0.016))
    brain = _Blob(inner.center, inner.semi, inner.rotation, 0.0, inner.bumps, sulci)
    canvas.paint(brain, "grey matter", ("cerebrospinal fluid",))
    gyri = _Waves.draw(rng, 8, (10.0, 20.0), (0.02, 0.035))
    wm = _Blob(inner.center, inner.semi - t_gm, inner.rotation, 0.0, inner.bumps, gyri)
    canvas.paint(wm, "white matter", ("grey matter",))
    c = inner.center
    for side in (-1.0, 1.0):
        thalamus = _organ(rng, c + np.array([7.0 * side, -3.0, 0.0]), (5.0, 7.0, 5.0), jitter=0.7)
        canvas.paint(thalamus, "grey matter", ("white matter",))
    for side in (-1.0, 1.0):
        ventricle = _organ(
            rng, c + np.array([5.0 * side, 4.0, 7.0]), (3.0, 14.0, 5.0), 8.0 * side, jitter=0.7
        )
        canvas.paint(ventricle, "cerebrospinal fluid", ("white matter", "grey matter"))
    half_width = rng.uniform(0.6, 1.0)
    fissure_x, fissure_z = float(c[0]), float(c[2] + 4.0)
    canvas.paint(
        brain,
        "cerebrospinal fluid",
        ("grey matter",),
        where=lambda q: (np.abs(q[0] - fissure_x) < half_width) & (q[2] > fissure_z),
    )
    return {"has_tumour": False}


def _build_neck(canvas: _Canvas, rng: np.random.Generator) -> None:
    s = rng.uniform(0.94, 1.05)
    neck = _Blob(
        np.array([rng.normal(0, 1.0), -2.0 + rng.normal(0, 1.0), 0.0]),
        np.array([30.0 * s * rng.uniform(0.97, 1.03), 26.0 * s * rng.uniform(0.97, 1.03), np.inf]),
        bumps=rng.normal(0.0, 0.02, 8),
    )
    soft = ("muscle", "fat")
    canvas.paint(neck, "fat", ("air",))
    canvas.paint(neck.shrunk(rng.uniform(2.5, 4.5)), "muscle", ("fat",))
    canvas.fill_pattern(_Waves.draw(rng, 6, (12.0, 25.0), (0.3, 0.6)), 0.6, "fat", "muscle")
    _paint_spine(canvas, rng, -11.0, soft)
    canvas.paint(_tube(rng, 0.0, 9.0, (5.5, 4.0), jitter=0.7), "airway", soft)
    for side in (-1.0, 1.0):
        canvas.paint(_tube(rng, 12.0 * side, 3.0, (2.5, 2.5)), "artery", soft)
        canvas.paint(_tube(rng, 16.5 * side, 1.0, (3.5, 2.8)), "vein", soft)
        canvas.paint(_organ(rng, (7.0 * side, 11.0, -28.0), (4.0, 3.5, 9.0)), "thyroid", soft)
        canvas.paint(_organ(rng, (15.0 * side, 10.0, 18.0), (5.0, 4.0, 4.0)), "gland", soft)
    jaw = _tube(rng, 0.0, 2.0, (25.0, 22.0))
    z_jaw, y_jaw = rng.uniform(22.0, 28.0), float(jaw.center[1])
    canvas.paint(
        jaw,
        "bone",
        soft,
        where=lambda q: (q[2] > z_jaw) & (q[1] > y_jaw) & (jaw.shrunk(3.0).radius(q) >= 1.0),
    )


def _build_headneck(canvas: _Canvas, rng: np.random.Generator, with_tumour: bool | None) -> dict[str, Any]:
    _build_neck(canvas, rng)
    side = rng.choice([-1.0, 1.0])
    center = (side * rng.uniform(2.0, 6.0), rng.uniform(6.0, 12.0), rng.uniform(-8.0, 14.0))
    radius = math.exp(rng.uniform(math.log(4.0), math.log(12.0)))
    primary = _organ(rng, center, (radius,) * 3, jitter=0.0, size=0.2, tilt=30.0, bumps=0.1)
    uptake_p, uptake_n = float(rng.uniform(5.0, 20.0)), float(rng.uniform(3.0, 12.0))
    n_nodes = int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))
    nodes = []
    for _ in range(3):
        node_side = side if rng.random() < 0.7 else -side
        c = (node_side * rng.uniform(11.0, 19.0), rng.uniform(-3.0, 8.0), rng.uniform(-18.0, 16.0))
        nodes.append(_organ(rng, c, (rng.uniform(2.5, 7.0),) * 3, jitter=0.0, size=0.15, bumps=0.06))
    canvas.uptake[_TID["primary tumour"]] = uptake_p
    canvas.uptake[_TID["lymph node"]] = uptake_n
    canvas.necrosis[_TID["primary tumour"]] = float(np.clip((radius - 7.0) / 6.0, 0.0, 0.6))
    has_tumour = with_tumour is not False
    if has_tumour:
        canvas.paint(primary, "primary tumour", ("muscle", "fat", "airway", "gland"), record_radial=True)
        for node in nodes[:n_nodes]:
            canvas.paint(node, "lymph node", ("muscle", "fat", "gland"), record_radial=True)
    return {
        "has_tumour": has_tumour,
        "primary_radius_mm": radius,
        "primary_uptake": uptake_p,
        "node_uptake": uptake_n,
        "num_nodes": n_nodes if has_tumour else 0,
    }


_BUILDERS: dict[str, Callable[[_Canvas, np.random.Generator, bool | None], dict[str, Any]]] = {
    "abdomen": _build_abdomen,
    "head": _build_head,
    "headneck": _build_headneck,
}


# ---------------------------------------------------------------------------------- rendering
def _psf_blur(image: np.ndarray, spacing: np.ndarray, sigma_mm: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma=tuple(sigma_mm / spacing), mode="nearest", truncate=3.0)


def _render_ct(canvas: _Canvas, rng: np.random.Generator, spacing: np.ndarray) -> tuple[np.ndarray, dict]:
    lut = _CT_LUT + rng.normal(0.0, 3.0, _CT_LUT.shape).astype(np.float32)
    lut[_ids(_AIRLIKE)] = _CT_LUT[_ids(_AIRLIKE)]
    enhancement = float(rng.uniform(0.75, 1.25))
    vascular = _ids(_VASCULAR)
    lut[vascular] = 40.0 + (lut[vascular] - 40.0) * enhancement
    image = _psf_blur(lut[canvas.tissue], spacing, np.maximum(0.5, 0.4 * spacing))
    sigma = float(rng.uniform(10.0, 20.0))
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    np.clip(image, -1024.0, 3071.0, out=image)
    return image, {"ct_noise_hu": sigma, "ct_enhancement": enhancement}


def _render_mri(canvas: _Canvas, rng: np.random.Generator, spacing: np.ndarray) -> tuple[np.ndarray, dict]:
    gain = float(math.exp(rng.uniform(math.log(0.6), math.log(1.6))))
    lut = _MRI_LUT * np.exp(rng.normal(0.0, 0.06, _MRI_LUT.shape)).astype(np.float32) * gain
    image = _psf_blur(lut[canvas.tissue], spacing, np.maximum(0.5, 0.4 * spacing))
    bias = _Waves.draw(rng, 3, (150.0, 300.0), (0.05, 0.12))
    image *= np.exp(canvas.grid.waves_on_grid(bias))
    sigma = float(rng.uniform(0.02, 0.045)) * 600.0 * gain
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag), {"mri_gain": gain, "mri_noise": sigma}


def _render_pet(canvas: _Canvas, rng: np.random.Generator, spacing: np.ndarray) -> tuple[np.ndarray, dict]:
    lut = _PET_LUT * np.float32(rng.uniform(0.85, 1.15))
    for tid, suv in canvas.uptake.items():
        lut[tid] = suv
    activity = lut[canvas.tissue]
    if canvas.radial is not None:
        for tid in _ids(_TUMOURS):
            inside = canvas.tissue == tid
            if not inside.any():
                continue
            r = canvas.radial[inside]
            profile = 1.0 - 0.3 * r * r
            profile *= 1.0 - canvas.necrosis.get(int(tid), 0.0) * np.exp(-np.square(r / 0.45))
            activity[inside] *= profile
    fwhm = float(rng.uniform(6.0, 8.0))
    activity = _psf_blur(activity, spacing, np.full(3, fwhm / 2.3548))
    counts = float(rng.uniform(1.5, 3.0)) * float(np.prod(spacing))  # expected counts per SUV per voxel
    noisy = rng.poisson(np.maximum(activity, 0.0).astype(np.float64) * counts).astype(
        np.float32
    ) / np.float32(counts)
    image = _psf_blur(noisy, spacing, np.full(3, 1.2))
    return np.maximum(image, 0.0), {
        "pet_fwhm_mm": fwhm,
        "pet_counts_per_suv_mm3": counts / float(np.prod(spacing)),
    }


_RENDERERS = {"CT": _render_ct, "MRI": _render_mri, "PET": _render_pet}


# ------------------------------------------------------------------------------------ cases
@dataclass
class PhantomCase:
    """One synthetic case.

    Attributes:
        image: float32 ``(I, J, K)``, or ``(2, I, J, K)`` for ``PETCT`` (channel 0 PET, 1 CT, as
            :data:`duplus.data.specs.PETCT_CHANNEL_ORDER`). CT in HU, MRI arbitrary units, PET SUV.
        label: int16 ``(I, J, K)`` in the full label map (values of :data:`FULL_LABELS`).
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


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ConfigError(f"unknown phantom {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def _build_affines(
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    style: str,
    rng_geom: np.random.Generator,
    rng_anat: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """World affine of the case and the voxel -> patient-frame affine (pose removed)."""
    origin = rng_anat.uniform(-40.0, 40.0, 3)  # table position: the FOV is centred on the patient
    pose = _euler(rng_anat.normal(0.0, 4.0), rng_anat.normal(0.0, 2.0), rng_anat.normal(0.0, 2.0))
    matrix = _direction(style, rng_geom) @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin - matrix @ ((np.asarray(shape, dtype=np.float64) - 1.0) / 2.0)
    to_local = np.eye(4)
    to_local[:3, :3] = pose.T
    to_local[:3, 3] = -pose.T @ origin
    return affine, to_local @ affine


def make_phantom_case(
    seed: int,
    kind: str = "abdomen",
    modality: str = "CT",
    *,
    shape: int | Sequence[int] = (96, 96, 96),
    spacing: float | Sequence[float] | None = None,
    affine_style: str = "ras",
    with_tumour: bool | None = None,
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
        spacing: voxel size in mm per array axis; ``None`` fits :data:`FOV_MM` (96 mm) per axis.
        affine_style: ``"ras"``, ``"lps"`` (x and y flipped), ``"permuted"`` (random axis
            permutation and flips) or ``"oblique"`` (5-15 degree rotation).
        with_tumour: abdomen: liver tumour yes/no, ``None`` = 40% chance. Head-and-neck: ``False``
            gives a tumour-free neck, otherwise a primary tumour is always present. Head: ignored.

    Returns:
        A :class:`PhantomCase`.
    """
    _check_choice(kind, KINDS, "kind")
    _check_choice(modality, PHANTOM_MODALITIES, "modality")
    _check_choice(affine_style, AFFINE_STYLES, "affine style")
    shape3 = tuple(int(v) for v in _triple(shape, "shape"))
    if min(shape3) < 4:
        raise ConfigError(f"phantom shape must be at least 4 voxels per axis, got {shape3}")
    spacing3 = np.array(
        FOV_MM / np.asarray(shape3) if spacing is None else _triple(spacing, "spacing"), dtype=np.float64
    )
    if np.any(spacing3 <= 0):
        raise ConfigError(f"phantom spacing must be positive, got {tuple(spacing3)}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)]
    rng_anat, rng_geom = streams[0], streams[1]
    affine, local = _build_affines(shape3, spacing3, affine_style, rng_geom, rng_anat)  # type: ignore[arg-type]
    amp = {"abdomen": (0.8, 2.0), "head": (0.4, 1.2), "headneck": (0.6, 1.6)}[kind]
    deformation = [_Waves.draw(rng_anat, 3, (50.0, 130.0), amp) for _ in range(3)]
    canvas = _Canvas(_Grid(shape3, local, deformation))  # type: ignore[arg-type]
    info: dict[str, Any] = _BUILDERS[kind](canvas, rng_anat, with_tumour)
    label = _LABEL_LUT[canvas.tissue]
    names = {v: FULL_LABELS[v] for v in _KIND_LABELS[kind]}
    channels = ["PET", "CT"] if modality == "PETCT" else [modality]
    assert tuple(channels) == PETCT_CHANNEL_ORDER or len(channels) == 1
    images, appearance = [], {}
    for ch in channels:
        rng = streams[{"CT": 2, "MRI": 3, "PET": 4}[ch]]
        img, facts = _RENDERERS[ch](canvas, rng, spacing3)
        images.append(img.astype(np.float32, copy=False))
        appearance.update(facts)
    image = images[0] if len(images) == 1 else np.stack(images)
    info.update(_case_facts(label, names, spacing3, images[0] if "PET" in channels else None, kind))
    info.update(
        kind=kind,
        modality=modality,
        affine_style=affine_style,
        shape=list(shape3),
        spacing=[float(v) for v in spacing3],
        appearance=appearance,
    )
    return PhantomCase(image=image, label=label, affine=affine, label_names=names, info=info)


def _case_facts(
    label: np.ndarray, names: dict[int, str], spacing: np.ndarray, pet: np.ndarray | None, kind: str
) -> dict[str, Any]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(label.ravel(), minlength=len(FULL_LABELS) + 1)
    volumes = {n: float(counts[v]) * voxel_ml for v, n in names.items()}
    if "liver" in volumes:  # the liver includes its tumour, as target_mask does
        volumes["liver"] += volumes.get("liver tumour", 0.0)
    tumour_values = {"abdomen": (7,), "head": (), "headneck": (11, 12)}[kind]
    tumour = np.isin(label, tumour_values) if tumour_values else np.zeros(label.shape, dtype=bool)
    facts: dict[str, Any] = {"volumes_ml": volumes, "tumour_volume_ml": float(tumour.sum()) * voxel_ml}
    if kind == "headneck":
        facts["gtvp_volume_ml"] = volumes["primary tumour"]
        facts["gtvn_volume_ml"] = volumes["lymph node"]
    facts["suvmax"] = float(pet[tumour].max()) if pet is not None and tumour.any() else None
    return facts


def target_mask(label: np.ndarray, label_names: dict[int, str], target: str) -> np.ndarray:
    """Boolean mask of ``target`` in a label map, organs including their tumours.

    ``"liver"`` is liver plus liver tumour (organ datasets label the whole organ); every other
    target is the voxels of its own value(s).

    Args:
        label: ``(I, J, K)`` integer label map.
        label_names: ``{value: name}`` of ``label``; names are canonicalised.
        target: the target name (any synonym).

    Raises:
        ConfigError: neither the target nor a part it includes is named in ``label_names``.
    """
    wanted = canonical_target(target)
    parts = {wanted, *_INCLUDES.get(wanted, ())}
    values = [int(v) for v, n in label_names.items() if canonical_target(n) in parts]
    if not values:
        known = ", ".join(sorted({canonical_target(n) for n in label_names.values()}))
        raise ConfigError(f"target {target!r} is not in this label map ({known})")
    return np.isin(label, values)


def build_dataset_label(
    label: np.ndarray, label_names: dict[int, str], dataset_labels: dict[int, str]
) -> np.ndarray:
    """Re-express a full label map in a dataset's own label values (a partial label map).

    Targets are painted in increasing value order, each with :func:`target_mask`, so a dataset
    ``{1: "liver", 2: "liver tumour"}`` gets the tumour as 2 inside the liver's 1 (the LiTS
    convention), and ``{1: "liver"}`` alone labels the whole liver including its tumour.

    Returns:
        int16 ``(I, J, K)`` map; targets the dataset does not name are background.
    """
    out = np.zeros(label.shape, dtype=np.int16)
    for value in sorted(dataset_labels):
        out[target_mask(label, label_names, dataset_labels[value])] = value
    return out


# ------------------------------------------------------------------------------- collection
@dataclass(frozen=True)
class PhantomDataset:
    """One MSD-layout dataset of the phantom collection (a different label subset each)."""

    task: str
    prefix: str
    kind: str
    modality: str
    region: str
    labels: dict[int, str]
    description: str
    with_tumour: bool | None = None


PHANTOM_DATASETS: tuple[PhantomDataset, ...] = (
    PhantomDataset(
        "Task01_PhantomAbdomenCT", "abdomenct", "abdomen", "CT", "abdomen",
        {1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney"},
        "Synthetic abdominal CT: liver (including any tumour), spleen and kidneys.",
    ),
    PhantomDataset(
        "Task02_PhantomPancreasCT", "pancreasct", "abdomen", "CT", "abdomen",
        {1: "pancreas", 2: "aorta"},
        "Synthetic abdominal CT: pancreas and aorta (the only dataset labelling the pancreas).",
    ),
    PhantomDataset(
        "Task03_PhantomAbdomenMRI", "abdomenmri", "abdomen", "MRI", "abdomen",
        {1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney"},
        "Synthetic T1-weighted abdominal MRI: liver, spleen and kidneys.",
    ),
    PhantomDataset(
        "Task04_PhantomBrainMRI", "brainmri", "head", "MRI", "head",
        {1: "white matter", 2: "grey matter", 3: "cerebrospinal fluid"},
        "Synthetic T1-weighted brain MRI: white matter, grey matter and CSF.",
    ),
    PhantomDataset(
        "Task05_PhantomLiverTumourCT", "livertumourct", "abdomen", "CT", "abdomen",
        {1: "liver", 2: "liver tumour"},
        "Synthetic abdominal CT with a liver tumour in every case (LiTS convention).",
        with_tumour=True,
    ),
    PhantomDataset(
        "Task06_PhantomHeadNeckPET", "headneckpet", "headneck", "PET", "head and neck",
        {1: "primary tumour", 2: "lymph node"},
        "Synthetic FDG-PET of the neck: primary tumour (GTVp) and lymph nodes (GTVn).",
    ),
)  # fmt: skip

# (affine style, anisotropic): a third anisotropic, a third non-RAS, one in six oblique
_GEOMETRY_CYCLE = (
    ("ras", False),
    ("ras", True),
    ("lps", False),
    ("oblique", False),
    ("permuted", True),
    ("ras", False),
)
_ANISOTROPY = np.array([0.9, 0.9, 2.0])


def _case_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint32)[0])


def _case_geometry(
    index: int, offset: int, base_shape: tuple[int, int, int]
) -> tuple[str, tuple[int, ...], np.ndarray]:
    style, anisotropic = _GEOMETRY_CYCLE[(index + offset) % len(_GEOMETRY_CYCLE)]
    spacing = FOV_MM / np.asarray(base_shape, dtype=np.float64)
    if anisotropic:
        spacing = spacing * _ANISOTROPY
    shape = tuple(max(4, int(round(FOV_MM / s))) for s in spacing)
    return style, shape, spacing


def _save_case(
    case: PhantomCase, modality: str, image_path: Path, label_path: Path, labels: dict[int, str]
) -> None:
    dtype = np.int16 if modality == "CT" else np.float32
    image = np.rint(case.image) if dtype is np.int16 else case.image
    save_nifti(image, case.affine, image_path, dtype=dtype)
    save_nifti(
        build_dataset_label(case.label, case.label_names, labels), case.affine, label_path, dtype=np.int16
    )


def _run_jobs(fn: Callable[..., Any], jobs: list[tuple], workers: int, bar: Any) -> list[Any]:
    """``[fn(*job) for job in jobs]``, over ``workers`` spawned processes when ``workers > 1``.

    Every case draws from its own seed, so the files do not depend on ``workers``. Spawned (not
    forked) workers: the parent may hold OpenMP threads (torch), which a fork would copy stuck.
    """
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for job in jobs:
            out.append(fn(*job))
            bar.update(1)
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        for f in futures:
            f.add_done_callback(lambda _: bar.update(1))
        return [f.result() for f in futures]


def _case_file(spec: PhantomDataset, i: int) -> str:
    """File name of case ``i`` of a phantom dataset (images and labels alike)."""
    return f"{spec.prefix}_{i + 1:03d}.nii.gz"


def _write_dataset_case(
    root: Path, spec: PhantomDataset, task_index: int, seed: int, i: int, cases: int,
    shape: tuple[int, int, int],
) -> None:  # fmt: skip
    style, grid, spacing = _case_geometry(i, task_index, shape)
    case = make_phantom_case(
        _case_seed(seed, task_index, i), spec.kind, spec.modality,
        shape=grid, spacing=tuple(spacing), affine_style=style, with_tumour=spec.with_tumour,
    )  # fmt: skip
    name = _case_file(spec, i)
    split = ("imagesTr", "labelsTr") if i < cases else ("imagesTs", "labelsTs")
    _save_case(case, spec.modality, root / split[0] / name, root / split[1] / name, spec.labels)


def _dataset_meta(spec: PhantomDataset, seed: int, cases: int, test_cases: int) -> dict[str, Any]:
    names = [_case_file(spec, i) for i in range(cases + test_cases)]
    training = [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names[:cases]]
    test = [f"./imagesTs/{n}" for n in names[cases:]]
    return {
        "name": spec.task.split("_", 1)[1],
        "description": spec.description,
        "reference": f"Synthetic phantom made by duplus.data.phantoms {PHANTOM_VERSION} (seed {seed})",
        "licence": "CC0-1.0 (synthetic data)",
        "release": PHANTOM_VERSION,
        "tensorImageSize": "3D",
        "region": spec.region,
        "modality": {"0": spec.modality},
        "labels": {"0": "background", **{str(v): n for v, n in spec.labels.items()}},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }


def _dataset_sizes(
    cases: int, test_cases: int, dataset_cases: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """``{dataset folder name: (training cases, held-out cases)}``, checked."""
    known = [spec.task for spec in PHANTOM_DATASETS]
    unknown = sorted(set(dataset_cases) - set(known))
    if unknown:
        raise ConfigError(f"dataset_cases: unknown phantom dataset(s) {unknown}; known: {known}")
    sizes = {task: (cases, test_cases) for task in known}
    sizes.update({task: (int(n), int(m)) for task, (n, m) in dataset_cases.items()})
    for task, (n, m) in sizes.items():
        if n < 1 or m < 0:
            raise ConfigError(f"{task}: need >= 1 training and >= 0 held-out cases; got {n} and {m}")
    return sizes


def make_phantoms(
    out: str | Path,
    cases: int = 8,
    seed: int = 0,
    *,
    shape: int | Sequence[int] = (96, 96, 96),
    test_cases: int = 2,
    dataset_cases: Mapping[str, tuple[int, int]] | None = None,
    cohort_cases: int = 0,
    cohort_shape: int | Sequence[int] = (64, 64, 64),
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the phantom collection: six MSD-layout datasets and, optionally, a HECKTOR cohort.

    Each dataset (:data:`PHANTOM_DATASETS`) is ``out/TaskNN_Name/`` with ``dataset.json``,
    ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and ``labelsTs/`` (held-out ground truth); files are
    ``<prefix>_<NNN>.nii.gz``. Geometry varies per case (RAS, LPS, permuted, oblique; a third with
    0.9 x 0.9 x 2.0 anisotropy) over a 96 mm field of view. ``out/phantoms.json`` indexes it all.
    Files are written atomically and are bit-identical for the same arguments.

    Args:
        out: output folder (created).
        cases: training cases per dataset.
        seed: collection seed.
        shape: grid of the isotropic cases (96 -> 1 mm voxels; 48 -> 2 mm, for quick tests).
        test_cases: held-out cases per dataset.
        dataset_cases: ``{dataset folder name: (training cases, held-out cases)}`` for the datasets
            that differ from ``cases`` / ``test_cases`` (the demo gives its adaptation set more).
        cohort_cases: patients of the HECKTOR-layout prognosis cohort (``out/HECKTOR_Phantom``); 0 = none.
        cohort_shape: grid of the cohort's PET/CT (64 -> 1.5 mm voxels).
        progress: show a tqdm progress bar.
        workers: cases rendered in parallel processes (the files are the same for any number).
        overwrite: replace the dataset folders an earlier ``make_phantoms`` wrote in ``out``
            (without it, an existing one is an error; folders duplus did not write never are).

    Returns:
        ``{dataset folder name: path}``, including ``"HECKTOR_Phantom"`` when a cohort is written.
    """

    out = Path(out)
    if cases < 1 or test_cases < 0 or cohort_cases < 0:
        raise ConfigError(
            f"need cases >= 1, test_cases >= 0, cohort_cases >= 0; got {cases}, {test_cases}, {cohort_cases}"
        )
    if workers < 1:
        raise ConfigError(f"need workers >= 1; got {workers}")
    sizes = _dataset_sizes(cases, test_cases, dataset_cases or {})
    shape3 = tuple(int(v) for v in _triple(shape, "shape"))
    total = sum(n + m for n, m in sizes.values()) + cohort_cases
    paths: dict[str, Path] = {}
    index: dict[str, Any] = {"name": "duplus phantom collection", "version": PHANTOM_VERSION, "seed": seed}
    index.update(shape=list(shape3), fov_mm=FOV_MM, datasets=[], cohort=None)
    jobs = [
        (out / spec.task, spec, t + 1, seed, i, sizes[spec.task][0], shape3)
        for t, spec in enumerate(PHANTOM_DATASETS)
        for i in range(sum(sizes[spec.task]))
    ]
    c_shape = tuple(int(v) for v in _triple(cohort_shape, "cohort_shape"))
    with OutputFolder(out, replace_owned=overwrite) as folder:
        roots = [out / spec.task for spec in PHANTOM_DATASETS] + (
            [out / "HECKTOR_Phantom"] if cohort_cases else []
        )
        for root in roots:
            folder.check_new_folder(root)
        folder.check_write(out / "phantoms.json")
        for root in roots:
            if root.exists():
                folder.remove(root)
        _write_collection(
            out, jobs, sizes, seed, cohort_cases, c_shape, index, paths, total, progress, workers
        )
        folder.record(*roots)  # workers write in their own processes; the folders are ours
        write_json_atomic(out / "phantoms.json", index)
    logger.info("phantom collection written to %s", out)
    return paths


def _write_collection(
    out: Path,
    jobs: list[tuple],
    sizes: dict[str, tuple[int, int]],
    seed: int,
    cohort_cases: int,
    c_shape: tuple[int, ...],
    index: dict[str, Any],
    paths: dict[str, Path],
    total: int,
    progress: bool,
    workers: int,
) -> None:
    """The cases, ``dataset.json`` files and the cohort of :func:`make_phantoms`."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="phantoms", unit="case", disable=not progress) as bar:
        _run_jobs(_write_dataset_case, jobs, workers, bar)
        for spec in PHANTOM_DATASETS:
            root = out / spec.task
            n_train, n_test = sizes[spec.task]
            meta = _dataset_meta(spec, seed, n_train, n_test)
            write_json_atomic(root / "dataset.json", meta)
            paths[spec.task] = root
            index["datasets"].append(
                {"name": spec.task, "path": spec.task, "modality": spec.modality, "region": spec.region}
                | {"kind": spec.kind, "labels": meta["labels"], "numTraining": n_train, "numTest": n_test}
            )
        if cohort_cases:
            root = out / "HECKTOR_Phantom"
            truth = _write_cohort(root, seed, cohort_cases, c_shape, bar, workers)  # type: ignore[arg-type]
            paths["HECKTOR_Phantom"] = root
            index["cohort"] = {"name": "HECKTOR_Phantom", "path": "HECKTOR_Phantom", "patients": cohort_cases}
            index["cohort"]["censored_fraction"] = truth["censored_fraction"]
            index["cohort"]["c_index_true_linear_predictor"] = truth["c_index_true_linear_predictor"]


# ------------------------------------------------------------------------------ survival cohort
COHORT_COEFFICIENTS: dict[str, float] = {
    "log_tumour_volume": 1.0,
    "uptake": 0.6,
    "hpv_negative": 1.4,
    "age": 0.5,
    "smoker": 0.8,
    "performance_status_positive": 0.9,
}
"""Log-hazard coefficients of the cohort's known proportional-hazards model."""
COHORT_STANDARDISATION: dict[str, tuple[float, float]] = {
    "log_tumour_volume": (0.75, 0.85),
    "uptake": (12.5, 4.33),
    "age": (62.0, 9.0),
}
"""``(mean, sd)`` used by ``z()`` in the model (fixed constants, not sample statistics)."""
_WEIBULL_SHAPE, _WEIBULL_SCALE_DAYS = 1.2, 3000.0
_CENSOR_DAYS = (300.0, 2500.0)
_MIN_VOLUME_ML = 0.05  # floor before the log, for a tumour smaller than a voxel of a coarse grid
_IMAGE_TERMS = ("log_tumour_volume", "uptake")
_EHR_TERMS = ("hpv_negative", "age", "smoker", "performance_status_positive")


def compute_linear_predictor(covariates: dict[str, Any], terms: Sequence[str] | None = None) -> np.ndarray:
    """The known log-hazard ratio from raw covariates (arrays or scalars).

    Args:
        covariates: ``log_tumour_volume`` (natural log of ml), ``uptake`` (SUV), ``age`` (years),
            and the 0/1 indicators ``hpv_negative``, ``smoker``, ``performance_status_positive``.
        terms: restrict to these terms (e.g. the image terms only); ``None`` = all.
    """
    eta = np.zeros(np.shape(np.asarray(covariates["age"], dtype=np.float64)))
    for term in terms or COHORT_COEFFICIENTS:
        x = np.asarray(covariates[term], dtype=np.float64)
        if term in COHORT_STANDARDISATION:
            mean, sd = COHORT_STANDARDISATION[term]
            x = (x - mean) / sd
        eta = eta + COHORT_COEFFICIENTS[term] * x
    return eta


def _harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (risk anti-concordant with time), ties in risk counted as 1/2."""
    t, e, r = (np.asarray(v, dtype=np.float64) for v in (time, event, risk))
    comparable = (t[:, None] < t[None, :]) & (e[:, None] > 0)
    concordant = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    n = comparable.sum()
    return float((comparable * concordant).sum() / n) if n else float("nan")


def _draw_ehr(rng: np.random.Generator) -> dict[str, Any]:
    """Latent (complete) clinical values of one patient."""
    male = rng.random() < 0.8
    smoker = int(rng.random() < 0.5)
    return {
        "male": bool(male),
        "age": int(np.clip(round(rng.normal(62.0, 9.0)), 35, 90)),
        "weight": round(float(rng.normal(80.0 if male else 66.0, 13.0)), 1),
        "smoker": smoker,
        "alcohol": int(rng.random() < (0.6 if smoker else 0.3)),
        "performance_status": int(rng.choice(3, p=[0.55, 0.35, 0.10])),
        "hpv_positive": int(rng.random() < (0.5 if smoker else 0.7)),
        "surgery": int(rng.random() < 0.25),
        "chemotherapy": int(rng.random() < 0.8),
        "center": int(rng.integers(3)),
    }


def _clinical_row(pid: str, ehr: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    def maybe(value: Any, p_missing: float) -> Any:
        return "" if rng.random() < p_missing else value

    return {
        "PatientID": pid,
        "Task 1": 1,
        "Task 2": 1,
        "CenterID": ehr["center"],
        "Gender": "M" if ehr["male"] else "F",
        "Age": ehr["age"],
        "Weight": maybe(ehr["weight"], 0.1),
        "Tobacco": maybe(ehr["smoker"], 0.15),
        "Alcohol": maybe(ehr["alcohol"], 0.3),
        "Performance status": maybe(ehr["performance_status"], 0.1),
        "HPV status (0=-, 1=+)": maybe(ehr["hpv_positive"], 0.1),
        "Surgery": maybe(ehr["surgery"], 0.2),
        "Chemotherapy": ehr["chemotherapy"],
    }


def _patient(
    seed: int, i: int, shape: tuple[int, int, int]
) -> tuple[PhantomCase, dict[str, Any], dict[str, Any]]:
    """Image, CSV rows and truth of one cohort patient (independent of the cohort size)."""
    pid = f"PHA-{i + 1:03d}"
    case = make_phantom_case(
        _case_seed(seed, 100, i), "headneck", "PETCT", shape=shape, affine_style=("ras", "lps")[i % 2]
    )
    rng = np.random.default_rng(_case_seed(seed, 101, i))
    ehr = _draw_ehr(rng)
    row = _clinical_row(pid, ehr, rng)
    cov = {
        "log_tumour_volume": math.log(max(case.info["tumour_volume_ml"], _MIN_VOLUME_ML)),
        "uptake": case.info["primary_uptake"],
        "hpv_negative": 1 - ehr["hpv_positive"],
        "age": ehr["age"],
        "smoker": ehr["smoker"],
        "performance_status_positive": int(ehr["performance_status"] > 0),
    }
    eta = float(compute_linear_predictor(cov))
    event_time = _WEIBULL_SCALE_DAYS * (rng.exponential() * math.exp(-eta)) ** (1.0 / _WEIBULL_SHAPE)
    censor_time = rng.uniform(*_CENSOR_DAYS)
    relapse = int(event_time <= censor_time)
    rfs = max(1, int(round(min(event_time, censor_time))))
    truth = {
        "PatientID": pid,
        **cov,
        "tumour_volume_ml": case.info["tumour_volume_ml"],
        "linear_predictor": eta,
    }
    truth |= {
        "suvmax_measured": case.info["suvmax"],
        "event_time_days": event_time,
        "censor_time_days": censor_time,
    }
    truth |= {"Relapse": relapse, "RFS": rfs}
    return case, row, truth


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _write_patient(
    root: Path, seed: int, i: int, shape: tuple[int, int, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write patient ``i``'s PET/CT and label; return its clinical row and its true covariates."""
    case, row, truth = _patient(seed, i, shape)
    pid = row["PatientID"]
    save_nifti(np.rint(case.image[1]), case.affine, root / "imagesTr" / f"{pid}__CT.nii.gz", dtype=np.int16)
    save_nifti(case.image[0], case.affine, root / "imagesTr" / f"{pid}__PT.nii.gz", dtype=np.float32)
    label = build_dataset_label(case.label, case.label_names, {1: "primary tumour", 2: "lymph node"})
    save_nifti(label, case.affine, root / "labelsTr" / f"{pid}.nii.gz", dtype=np.int16)
    return row, truth


def _write_cohort(
    root: Path, seed: int, n: int, shape: tuple[int, int, int], bar: Any, workers: int = 1
) -> dict[str, Any]:
    written = _run_jobs(_write_patient, [(root, seed, i, shape) for i in range(n)], workers, bar)
    clinical = [row for row, _ in written]
    patients = [truth for _, truth in written]
    endpoints = [
        {"PatientID": row["PatientID"], "Relapse": t["Relapse"], "RFS": t["RFS"]} for row, t in written
    ]
    write_text_atomic(root / "hecktor2022_clinical_info_training.csv", _csv_text(clinical))
    write_text_atomic(root / "hecktor2022_endpoint_training.csv", _csv_text(endpoints))
    time = np.array([p["RFS"] for p in patients], dtype=float)
    event = np.array([p["Relapse"] for p in patients])
    cov = {k: np.array([p[k] for p in patients], dtype=float) for k in COHORT_COEFFICIENTS}
    truth_doc = {
        "model": "Weibull proportional hazards: h(t|x) = (k/lam) (t/lam)^(k-1) exp(eta)",
        "coefficients": COHORT_COEFFICIENTS,
        "standardisation": {k: {"mean": m, "sd": s} for k, (m, s) in COHORT_STANDARDISATION.items()},
        "weibull_shape": _WEIBULL_SHAPE,
        "weibull_scale_days": _WEIBULL_SCALE_DAYS,
        "censoring": {"distribution": "uniform", "low_days": _CENSOR_DAYS[0], "high_days": _CENSOR_DAYS[1]},
        "covariates": {
            "log_tumour_volume": "natural log of GTVp + GTVn volume in ml (from the label)",
            "uptake": "peak SUV of the primary tumour before PSF blur and noise",
            "hpv_negative": "1 if HPV negative",
            "age": "years",
            "smoker": "1 if smoker (Tobacco)",
            "performance_status_positive": "1 if performance status > 0",
        },  # fmt: skip
        "censored_fraction": float(1.0 - event.mean()),
        "c_index_true_linear_predictor": _harrell_c(time, event, compute_linear_predictor(cov)),
        "c_index_image_terms": _harrell_c(time, event, compute_linear_predictor(cov, _IMAGE_TERMS)),
        "c_index_ehr_terms": _harrell_c(time, event, compute_linear_predictor(cov, _EHR_TERMS)),
        "patients": patients,
    }
    write_json_atomic(root / "cohort_truth.json", truth_doc)
    return truth_doc
