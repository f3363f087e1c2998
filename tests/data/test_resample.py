"""Resampling between affine grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duplus.data.resample import ras_grid_for, resample_to_grid


def _voxel_world(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return (affine[:3, :3] @ idx.T).T + affine[:3, 3]


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


LPS = np.array([[-1.2, 0, 0, 50.0], [0, -1.2, 0, 60.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])
PERMUTED = np.array([[0, 0, 2.0, 5.0], [1.5, 0, 0, -3.0], [0, -1.0, 0, 7.0], [0, 0, 0, 1]])


def test_identity_is_exact() -> None:
    a = np.random.default_rng(0).random((2, 6, 7, 8)).astype(np.float32)
    out = resample_to_grid(a, np.eye(4), (6, 7, 8), np.eye(4))
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.float32


@pytest.mark.parametrize("affine", [LPS, PERMUTED], ids=["lps", "permuted"])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_flip_permutation_round_trip_is_exact(affine: np.ndarray, mode: str) -> None:
    a = np.random.default_rng(1).random((1, 9, 10, 11)).astype(np.float32)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    # the RAS grid's spacing per world axis is the source spacing of the axis that maps onto it
    world_spacing = np.abs(affine[:3, :3]).sum(1)
    shape, ras = ras_grid_for(a.shape[1:], affine, world_spacing)
    assert np.all(np.diag(ras)[:3] > 0) and np.allclose(np.abs(np.diag(ras)[:3]), world_spacing)
    assert sorted(shape) == sorted(a.shape[1:]) and np.allclose(sorted(world_spacing), sorted(spacing))
    there = resample_to_grid(a, affine, shape, ras, mode=mode)
    back = resample_to_grid(there, ras, a.shape[1:], affine, mode=mode)
    np.testing.assert_array_equal(back, a)
    # same world point, same value
    world = _voxel_world(a.shape[1:], affine)
    ijk = np.rint((np.linalg.inv(ras) @ np.c_[world, np.ones(len(world))].T)[:3].T).astype(int)
    np.testing.assert_array_equal(there[0][tuple(ijk.T)], a[0].ravel())


def test_grid_sample_path_matches_exact_path() -> None:
    """A sub-voxel shift forces grid_sample; a whole-voxel shift uses indexing. Compare on a
    linear ramp, which trilinear interpolation reproduces exactly."""
    shape = (8, 9, 10)
    ii, jj, kk = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    ramp = (2 * ii + 3 * jj - kk)[None]
    dst = np.eye(4)
    dst[:3, 3] = [0.5, 0.25, -0.5]
    out = resample_to_grid(ramp, np.eye(4), shape, dst, padding_value=-99.0)
    inside = np.zeros(shape, bool)
    inside[:-1, :-1, 1:] = True
    np.testing.assert_allclose(out[0][inside], (ramp[0] + 2 * 0.5 + 3 * 0.25 + 0.5)[inside], atol=1e-4)
    # half a voxel beyond the last source voxel along i: half value, half padding
    edge = 0.5 * (2 * 7 + 3 * (jj[0, :-1, 1:] + 0.25) - (kk[0, :-1, 1:] - 0.5)) + 0.5 * -99.0
    np.testing.assert_allclose(out[0][-1, :-1, 1:], edge, atol=1e-4)


def test_oblique_resampling_of_a_world_function() -> None:
    src = np.eye(4)
    src[:3, :3] = _rotation(0.3) @ np.diag([1.0, 1.0, 2.0])
    src[:3, 3] = [3.0, 4.0, 5.0]
    shape = (20, 20, 10)
    world = _voxel_world(shape, src)
    f = (0.5 * world[:, 0] - world[:, 1] + 0.25 * world[:, 2]).reshape(shape)[None].astype(np.float32)
    dshape, dst = ras_grid_for(shape, src, (1.5, 1.5, 1.5))
    out = resample_to_grid(torch.from_numpy(f), src, dshape, dst, padding_value=-999.0)
    dworld = _voxel_world(dshape, dst)
    expect = (0.5 * dworld[:, 0] - dworld[:, 1] + 0.25 * dworld[:, 2]).reshape(dshape)
    src_idx = (np.linalg.inv(src) @ np.c_[dworld, np.ones(len(dworld))].T)[:3].T
    inside = np.all((src_idx >= 0) & (src_idx <= np.array(shape) - 1), axis=1).reshape(dshape)
    assert inside.sum() > 1000
    np.testing.assert_allclose(out[0][inside], expect[inside], atol=1e-3)
    # the grid covers the whole source: every source corner maps inside the destination
    corners = _voxel_world(shape, src)[[0, -1]]
    cidx = (np.linalg.inv(dst) @ np.c_[corners, np.ones(2)].T)[:3].T
    assert np.all(cidx >= -1e-6) and np.all(cidx <= np.array(dshape) - 1 + 1e-6)


def test_nearest_keeps_label_values_and_dtype() -> None:
    lab = np.zeros((1, 12, 12, 6), np.int16)
    lab[0, 3:8, 4:9, 2:4] = 3
    src = np.diag([0.8, 0.8, 2.5, 1.0])
    shape, dst = ras_grid_for(lab.shape[1:], src, (1.5, 1.5, 1.5))
    out = resample_to_grid(lab, src, shape, dst, mode="nearest")
    assert out.dtype == np.int16 and set(np.unique(out)) <= {0, 3}
    assert out.sum() > 0


def test_padding_and_size_one_axis() -> None:
    a = np.full((1, 4, 4, 1), 7.0, np.float32)
    dst = np.eye(4)
    dst[:3, 3] = [0.5, 0.5, 0.0]  # sub-voxel shift in-plane forces grid_sample
    out = resample_to_grid(a, np.eye(4), (4, 4, 3), dst, padding_value=-5.0)
    np.testing.assert_allclose(out[0, :3, :3, 0], 7.0, atol=1e-5)
    np.testing.assert_allclose(out[0, :, :, 1:], -5.0, atol=1e-5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        resample_to_grid(np.zeros((1, 2, 2, 2)), np.eye(4), (2, 2, 2), np.eye(4), mode="cubic")
    with pytest.raises(ValueError, match=r"\(C, I, J, K\)"):
        resample_to_grid(np.zeros((2, 2, 2)), np.eye(4), (2, 2, 2), np.eye(4))
    with pytest.raises(ValueError, match="spacing"):
        ras_grid_for((2, 2, 2), np.eye(4), (1.0, 0.0, 1.0))


@pytest.mark.parametrize("kind", ["oblique", "permuted"])
def test_mask_resampling_equals_thresholding_the_resampled_map(kind: str) -> None:
    """``resample_mask_to_grid`` (slab by slab, or on the source grid for an exact mapping) gives
    the voxels of thresholding ``resample_to_grid``'s float map."""
    from duplus.data.resample import resample_mask_to_grid, resample_to_grid

    rng = np.random.default_rng(0)
    prob = rng.random((9, 11, 7)).astype(np.float32)
    src = np.diag([2.0, 2.0, 3.0, 1.0])
    if kind == "oblique":
        c, s = np.cos(0.3), np.sin(0.3)
        dst = np.array([[c, -s, 0, 0.5], [s, c, 0, 1.0], [0, 0, 1.2, -1.0], [0, 0, 0, 1]])
        shape = (22, 25, 20)
    else:  # LPS flip + axis swap at the same spacing: exact
        dst = np.array([[0, -2.0, 0, 20.0], [-2.0, 0, 0, 16.0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
        shape = (11, 9, 7)
    ref = resample_to_grid(prob[None], src, shape, dst, mode="linear", padding_value=0.0)[0] >= 0.5
    out = resample_mask_to_grid(prob, src, shape, dst, 0.5)
    assert out.dtype == np.uint8 and 0 < out.sum() < out.size
    np.testing.assert_array_equal(out, ref.astype(np.uint8))
