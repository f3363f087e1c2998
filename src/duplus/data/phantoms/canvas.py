"""The voxel grid a case is sampled on, and the tissue map painted on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from duplus.data.phantoms.shapes import Blob, Waves
from duplus.data.phantoms.tissues import TISSUE_ID, tissue_set


class Grid:
    """Voxel grid with patient-frame coordinates ``q`` (3 arrays ``(I, J, K)``, mm, deformed).

    ``local_affine`` maps voxel indices to the undeformed patient frame. The deformation moves
    every structure by at most ``margin`` mm, which :meth:`block` adds to bounding boxes.
    """

    def __init__(self, shape: tuple[int, int, int], local_affine: np.ndarray, deformation: Sequence[Waves]):
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

    def waves_on_grid(self, waves: Waves) -> np.ndarray:
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


class Canvas:
    """The tissue map being painted, plus per-voxel tumour radius and uptake for PET.

    Attributes:
        tissue: uint8 ``(I, J, K)`` tissue map (values of :data:`.tissues.TISSUE_ID`).
        radial: float32 ``(I, J, K)`` normalised radius inside tumours (1 elsewhere), or ``None``.
        uptake: ``{tissue value: peak SUV}`` overriding the tissue table for this case.
        necrosis: ``{tissue value: depth of the central uptake dip}``.
    """

    def __init__(self, grid: Grid):
        self.grid = grid
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)
        self.radial: np.ndarray | None = None
        self.uptake: dict[int, float] = {}
        self.necrosis: dict[int, float] = {}

    def paint(
        self,
        blob: Blob,
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
        mask &= tissue_set(over)[sub]
        sub[mask] = TISSUE_ID[tissue]
        if record_radial:
            if self.radial is None:
                self.radial = np.ones(self.grid.shape, dtype=np.float32)
            self.radial[sl][mask] = r[mask]
        return int(mask.sum())

    def fill_pattern(self, waves: Waves, threshold: float, tissue: str, over: str) -> None:
        """Turn voxels of tissue ``over`` into ``tissue`` where the random field exceeds ``threshold``."""
        idx = np.nonzero(self.tissue == TISSUE_ID[over])
        if idx[0].size == 0:
            return
        field_values = waves([q[idx] for q in self.grid.q])
        hit = field_values > threshold
        self.tissue[tuple(i[hit] for i in idx)] = TISSUE_ID[tissue]
