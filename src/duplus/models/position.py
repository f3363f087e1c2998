"""Voxel positions for the T2 head: where each voxel lies in its (preprocessed) case volume.

A per-voxel head sees only the decoder's local features, and in a small network those carry little
of *where* in the body a voxel is. Left/right pairs suffer most: the left and right kidney look
alike, their prompts embed close together (MiniLM cosine 0.87), and only their side tells them
apart. With ``model.head_position`` the head's input gains :data:`POSITION_CHANNELS` channels, the
voxel's normalised coordinates along the volume's three axes, so a target's generated weights can
select a side or a level directly.

Coordinates are ``(2 i + 1) / N - 1`` for voxel ``i`` of ``N`` along each axis of the preprocessed
volume: a RAS+ grid cropped to the body (:func:`duplus.data.preprocess.preprocess_case`), so ``-1``
is the body box's right / posterior / inferior edge and ``+1`` its left / anterior / superior edge.
Training patches and inference windows take their slice of the same per-volume grid (values
continue linearly into padding), and spatial augmentation moves them with the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

POSITION_CHANNELS = 3


def axis_positions(start: int, length: int, size: int) -> np.ndarray:
    """Normalised coordinates of voxels ``start .. start + length - 1`` of an axis of ``size`` voxels."""
    i = np.arange(start, start + length, dtype=np.float32)
    return (2.0 * i + 1.0) / np.float32(size) - 1.0


def position_grid(
    volume_shape: Sequence[int], start: Sequence[int] | None = None, size: Sequence[int] | None = None
) -> np.ndarray:
    """``(3, *size)`` float32 coordinates of the box at ``start`` of a volume of ``volume_shape``.

    Args:
        volume_shape: the whole preprocessed volume's spatial shape ``(D, H, W)``.
        start: the box's first voxel (may be negative or run past the volume: padding); default 0.
        size: the box's shape; default the whole volume.
    """
    shape = [int(s) for s in volume_shape]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"volume_shape must be 3 positive sizes, got {volume_shape}")
    first = [0, 0, 0] if start is None else [int(s) for s in start]
    extent = shape if size is None else [int(s) for s in size]
    axes = [axis_positions(a, n, s) for a, n, s in zip(first, extent, shape, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32, copy=False)


def volume_positions(
    spatial_shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``(1, 3, D, H, W)`` coordinates of a whole volume (see :func:`position_grid`)."""
    return torch.from_numpy(position_grid(spatial_shape))[None].to(device=device, dtype=dtype)


__all__ = ["POSITION_CHANNELS", "axis_positions", "position_grid", "volume_positions"]
