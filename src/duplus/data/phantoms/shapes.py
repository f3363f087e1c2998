"""Shape primitives in the patient frame (mm): smooth random fields and perturbed ellipsoids/tubes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from duplus.data.phantoms.geometry import euler


@dataclass(frozen=True)
class Waves:
    """A smooth random field: a sum of plane waves ``sum_n amp_n * sin(omega_n . q + phase_n)``."""

    omega: np.ndarray  # (n, 3) radians per mm
    phase: np.ndarray  # (n,)
    amp: np.ndarray  # (n,)

    @classmethod
    def draw(
        cls, rng: np.random.Generator, n: int, wavelength: tuple[float, float], amplitude: tuple[float, float]
    ) -> Waves:
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


@dataclass(frozen=True)
class Blob:
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
    waves: Waves | None = None

    def shrunk(self, mm: float) -> Blob:
        return Blob(self.center, self.semi - mm, self.rotation, self.taper, self.bumps, self.waves)

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


def organ(
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
) -> Blob:
    """A blob at a nominal place with random position, size, orientation and shape jitter."""
    c = np.asarray(center, dtype=np.float64) + rng.normal(0.0, jitter, 3)
    s = np.asarray(semi, dtype=np.float64) * rng.uniform(1.0 - size, 1.0 + size, 3)
    rot = euler(rz + rng.normal(0.0, tilt), rng.normal(0.0, tilt), rng.normal(0.0, tilt))
    return Blob(c, s, rot, taper, rng.normal(0.0, bumps, 8))


def tube(
    rng: np.random.Generator, x: float, y: float, semi: tuple[float, float], jitter: float = 1.0
) -> Blob:
    """A tube along the patient's z axis at a jittered ``(x, y)``, slightly tilted."""
    c = np.array([x + rng.normal(0.0, jitter), y + rng.normal(0.0, jitter), 0.0])
    s = np.array([semi[0], semi[1], np.inf]) * np.array([*rng.uniform(0.9, 1.1, 2), 1.0])
    return Blob(c, s, euler(0.0, rng.normal(0.0, 2.0), rng.normal(0.0, 2.0)))
