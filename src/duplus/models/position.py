"""Voxel positions for the T2 head: where each voxel lies in its (preprocessed) case volume.

A per-voxel head sees only the decoder's local features, and in a small network those carry little
of *where* in the body a voxel is. Left/right pairs suffer most: the left and right kidney look
alike, their prompts embed close together (MiniLM cosine 0.87), and only their side tells them
apart. With ``model.head_position`` the head's input gains :data:`duplus.vocab.POSITION_CHANNELS` channels, the
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

import torch
from torch import Tensor

from duplus.vocab import position_grid


def volume_positions(
    spatial_shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``(1, 3, D, H, W)`` coordinates of a whole volume (see :func:`position_grid`)."""
    return torch.from_numpy(position_grid(spatial_shape))[None].to(device=device, dtype=dtype)


__all__ = ["volume_positions"]
