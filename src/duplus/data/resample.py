"""Resampling between voxel grids given by their affines.

For every destination voxel ``ijk`` the world point is ``dst_affine @ ijk`` and the source voxel
is ``inv(src_affine) @ world``; values are read there with torch ``grid_sample`` (trilinear or
nearest). Any affine works: flips, axis permutations, oblique grids, different spacings. When the
two grids differ only by a signed axis permutation and an integer shift (LPS -> RAS at unchanged
spacing, or the identity) the result is copied by array indexing and is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from duplus.limits import check_voxels

_EXACT_TOL = 1e-5
_CHUNK_VOXELS = 4_000_000  # destination voxels per grid_sample call (bounds the float32 grid memory)


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _dst_to_src(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """The 4x4 map from destination voxel indices to source voxel indices."""
    return np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)


def _signed_permutation(m: np.ndarray) -> tuple[list[int], list[int], list[int]] | None:
    """If ``m`` (4x4) maps integer indices to integer indices by a signed permutation, return
    ``(axis, sign, offset)`` with ``src[axis[d]] = sign[d] * dst[d] + offset[d]``; else ``None``."""
    rot = m[:3, :3]
    rounded = np.round(rot)
    if not np.allclose(rot, rounded, atol=_EXACT_TOL):
        return None
    if not np.allclose(np.abs(rounded).sum(axis=0), 1) or not np.allclose(np.abs(rounded).sum(axis=1), 1):
        return None
    t = m[:3, 3]
    if not np.allclose(t, np.round(t), atol=_EXACT_TOL):
        return None
    axis, sign, offset = [], [], []
    for d in range(3):
        s = int(np.argmax(np.abs(rounded[:, d])))
        axis.append(s)
        sign.append(int(rounded[s, d]))
        offset.append(int(round(t[s])))
    return axis, sign, offset


def _resample_exact(
    data: np.ndarray,
    dst_shape: tuple[int, int, int],
    perm: tuple[list[int], list[int], list[int]],
    pad: float,
) -> np.ndarray:
    axis, sign, offset = perm
    out = np.full((data.shape[0], *dst_shape), pad, dtype=data.dtype)
    src_shape = data.shape[1:]
    dst_slices: list[slice] = []
    src_index: list[np.ndarray] = []
    for d in range(3):
        idx = sign[d] * np.arange(dst_shape[d]) + offset[d]
        valid = (idx >= 0) & (idx < src_shape[axis[d]])
        if not valid.any():
            return out
        lo, hi = int(np.argmax(valid)), int(len(valid) - np.argmax(valid[::-1]))
        dst_slices.append(slice(lo, hi))
        src_index.append(idx[lo:hi])
    # reorder source axes into destination order, then gather
    moved = np.transpose(data, (0, 1 + axis[0], 1 + axis[1], 1 + axis[2]))
    block = moved[np.ix_(np.arange(data.shape[0]), src_index[0], src_index[1], src_index[2])]
    out[:, dst_slices[0], dst_slices[1], dst_slices[2]] = block
    return out


def resample_to_grid(
    array: np.ndarray | torch.Tensor,
    src_affine: np.ndarray,
    dst_shape: Sequence[int] | np.ndarray,
    dst_affine: np.ndarray,
    mode: str = "linear",
    padding_value: float = 0.0,
) -> np.ndarray:
    """Resample a channel-first volume onto another voxel grid.

    Args:
        array: ``(C, I, J, K)`` source voxels.
        src_affine: ``(4, 4)`` source voxel -> world (mm) matrix.
        dst_shape: ``(3,)`` destination grid shape.
        dst_affine: ``(4, 4)`` destination voxel -> world matrix.
        mode: ``"linear"`` (trilinear; images) or ``"nearest"`` (labels).
        padding_value: value of destination voxels outside the source volume (e.g. -1024 for CT).

    Returns:
        ``(C, *dst_shape)`` array: float32 for ``"linear"``; for ``"nearest"`` the input dtype
        (values are copied, never interpolated).
    """
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    data = _as_numpy(array)
    if data.ndim != 4:
        raise ValueError(f"array must be (C, I, J, K), got shape {data.shape}")
    shape = tuple(int(s) for s in np.asarray(dst_shape).reshape(-1))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"dst_shape must be 3 positive sizes, got {dst_shape}")
    out_dtype = data.dtype if mode == "nearest" else np.dtype(np.float32)
    m = _dst_to_src(src_affine, dst_affine)
    perm = _signed_permutation(m)
    if perm is not None:
        return _resample_exact(data.astype(out_dtype, copy=False), shape, perm, padding_value)  # type: ignore[arg-type]
    return _resample_grid_sample(data, m, shape, mode, padding_value).astype(out_dtype, copy=False)


def resample_mask_to_grid(
    prob: np.ndarray | torch.Tensor,
    src_affine: np.ndarray,
    dst_shape: Sequence[int] | np.ndarray,
    dst_affine: np.ndarray,
    threshold: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``resample_to_grid(prob[None], ..., "linear")[0] >= threshold`` as uint8, without the
    float32 map on the destination grid: thresholded chunk by chunk (or, for an exact grid
    mapping, thresholded on the source grid, which gives the same voxels).

    Args:
        prob: ``(I, J, K)`` source values (e.g. one target's probabilities).
        src_affine: ``(4, 4)`` source voxel -> world.
        dst_shape: ``(3,)`` destination grid shape.
        dst_affine: ``(4, 4)`` destination voxel -> world.
        threshold: values ``>= threshold`` give 1 (outside the source: 0, as a 0 padding does).
        out: ``(*dst_shape)`` uint8 array to fill (e.g. one target's slot of a mask stack).

    Returns:
        ``out`` (or a new array), uint8 0/1.
    """
    data = _as_numpy(prob)
    if data.ndim != 3:
        raise ValueError(f"prob must be (I, J, K), got shape {data.shape}")
    shape = tuple(int(s) for s in np.asarray(dst_shape).reshape(-1))
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    m = _dst_to_src(src_affine, dst_affine)
    perm = _signed_permutation(m)
    if perm is not None:
        pad = 1 if threshold <= 0.0 else 0  # padding value 0 compared with the threshold
        above = (data >= threshold).astype(np.uint8)[None]
        out[...] = _resample_exact(above, shape, perm, pad)[0]  # type: ignore[arg-type]
        return out
    for start, stop, values in _grid_sample_chunks(data[None], m, shape, "linear", 0.0):
        np.greater_equal(values[0], threshold, out=out[start:stop])
    return out


def _resample_grid_sample(
    data: np.ndarray, m: np.ndarray, dst_shape: tuple[int, ...], mode: str, pad: float
) -> np.ndarray:
    out = np.empty((data.shape[0], *dst_shape), dtype=np.float32)
    for start, stop, values in _grid_sample_chunks(data, m, dst_shape, mode, pad):
        out[:, start:stop] = values
    return out


def _grid_sample_chunks(
    data: np.ndarray, m: np.ndarray, dst_shape: tuple[int, ...], mode: str, pad: float
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, stop, values (C, stop - start, J, K))`` over slabs of the destination's first axis."""
    src = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if pad != 0.0:
        src = src - pad  # grid_sample pads with zeros; shifting makes it pad with ``pad``
    m = m.copy()
    # a size-1 source axis cannot be normalised with align_corners=True: pad it to 3 voxels
    pads = []
    for axis in (2, 1, 0):  # F.pad wants the last axis first
        if src.shape[1 + axis] == 1:
            pads += [1, 1]
            m[axis, 3] += 1.0
        else:
            pads += [0, 0]
    if any(pads):
        src = F.pad(src, pads)
    sizes = np.array(src.shape[1:], dtype=np.float64)
    # source index -> normalised coordinate in [-1, 1] (align_corners=True): 2 * v / (N - 1) - 1
    norm = np.diag([*(2.0 / (sizes - 1)), 1.0])
    norm[:3, 3] = -1.0
    full = norm @ m  # destination index -> normalised source coordinate
    # grid_sample's last grid axis is (x, y, z) = (K, J, I): reverse the rows
    full_t = torch.from_numpy(full[[2, 1, 0], :].astype(np.float32))
    src5 = src.unsqueeze(0)
    rows = max(1, _CHUNK_VOXELS // max(1, dst_shape[1] * dst_shape[2]))
    jj, kk = torch.meshgrid(
        torch.arange(dst_shape[1], dtype=torch.float32),
        torch.arange(dst_shape[2], dtype=torch.float32),
        indexing="ij",
    )
    gs_mode = "bilinear" if mode == "linear" else "nearest"
    for start in range(0, dst_shape[0], rows):
        stop = min(dst_shape[0], start + rows)
        ii = torch.arange(start, stop, dtype=torch.float32).view(-1, 1, 1)
        grid = (
            full_t[:, 0].view(1, 1, 1, 3) * ii.unsqueeze(-1)
            + full_t[:, 1].view(1, 1, 1, 3) * jj.unsqueeze(0).unsqueeze(-1)
            + full_t[:, 2].view(1, 1, 1, 3) * kk.unsqueeze(0).unsqueeze(-1)
            + full_t[:, 3].view(1, 1, 1, 3)
        )
        sampled = F.grid_sample(
            src5, grid.unsqueeze(0), mode=gs_mode, padding_mode="zeros", align_corners=True
        )[0]
        if pad != 0.0:
            sampled += pad
        yield start, stop, sampled.numpy()


def ras_grid_for(
    shape: tuple[int, int, int] | list[int] | np.ndarray,
    affine: np.ndarray,
    spacing: tuple[float, float, float] | list[float] | np.ndarray,
    source: str | Path | None = None,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """An axis-aligned RAS+ grid of the given spacing covering a volume's voxel centres.

    The grid's voxel axes i, j, k run along world +x (towards the patient's Right), +y (Anterior)
    and +z (Superior). It is centred on the bounding box of the source's voxel centres, so a source
    that is already axis-aligned with this spacing maps onto whole voxels (the identity, LPS <-> RAS
    flips and axis permutations resample exactly).

    Args:
        shape: ``(3,)`` source spatial shape.
        affine: ``(4, 4)`` source voxel -> world matrix.
        spacing: ``(3,)`` output voxel size in mm.
        source: the file the volume came from, named when the grid is too large.

    Returns:
        ``(dst_shape, dst_affine)`` with ``dst_affine = [[sx,0,0,ox],[0,sy,0,oy],[0,0,sz,oz],[0,0,0,1]]``.
    """
    shape_a = np.asarray(shape, dtype=np.float64).reshape(3)
    sp = np.asarray(spacing, dtype=np.float64).reshape(3)
    if np.any(sp <= 0):
        raise ValueError(f"spacing must be positive, got {tuple(sp)}")
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape_a[0] - 1)
            for j in (0, shape_a[1] - 1)
            for k in (0, shape_a[2] - 1)
        ]
    )
    world = (np.asarray(affine, dtype=np.float64) @ corners.T)[:3]
    lo, hi = world.min(axis=1), world.max(axis=1)
    extent = hi - lo
    n = np.array([math.ceil(e / s - 1e-4) + 1 for e, s in zip(extent, sp, strict=True)], dtype=np.int64)
    n = np.maximum(n, 1)
    check_voxels(n.tolist(), source, f"grid resampled to {tuple(float(x) for x in sp)} mm")
    extra = (n - 1) * sp - extent
    origin = lo - extra / 2.0
    dst_affine = np.eye(4)
    dst_affine[:3, :3] = np.diag(sp)
    dst_affine[:3, 3] = origin
    return (int(n[0]), int(n[1]), int(n[2])), dst_affine
