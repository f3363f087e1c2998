"""Residual U-Net decoder: consumes the encoder's skips, ends in a small feature map for the head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from duplus.models.blocks import Conv3d, Modulator, UpSample, per_stage, stage_blocks


class UNetDecoder(nn.Module):
    """From the bottleneck up: transposed-conv upsampling, concatenation with the skip, residual
    blocks; then a 1x1x1 projection to ``out_channels`` (the dynamic head's input, 8 in the paper).

    Args:
        spatial_dims: must be 3.
        features: the encoder's widths, finest first (same tuple as the encoder's).
        out_channels: channels of the returned feature map.
        num_blocks: residual blocks per decoder stage (an int, or one per stage, coarsest first;
            there are ``len(features) - 1`` decoder stages).
        act: activation name.

    Shapes:
        skips ``[(B, features[i], D/2^i, H/2^i, W/2^i)]`` -> ``(B, out_channels, D, H, W)``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        features: Sequence[int] = (32, 64, 128, 256, 320),
        out_channels: int = 8,
        num_blocks: int | Sequence[int] = 1,
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        self.features = tuple(int(f) for f in features)
        levels = list(range(len(self.features) - 2, -1, -1))  # coarsest decoder level first
        self.num_blocks = per_stage(num_blocks, len(levels), "decoder blocks per stage")
        self.ups = nn.ModuleList(
            [UpSample(spatial_dims, self.features[i + 1], self.features[i]) for i in levels]
        )
        self.stages = nn.ModuleList(
            [
                stage_blocks(spatial_dims, 2 * self.features[i], self.features[i], n, stride=1, act=act)
                for i, n in zip(levels, self.num_blocks, strict=True)
            ]
        )
        self.out_channels = int(out_channels)
        self.proj = Conv3d(self.features[0], self.out_channels, kernel_size=1)
        self._levels = levels

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Output channels of every residual block, in forward order (one conditioner slot each)."""
        return tuple(
            self.features[i] for i, n in zip(self._levels, self.num_blocks, strict=True) for _ in range(n)
        )

    def forward(
        self, skips: Sequence[Tensor], modulators: Sequence[Modulator | None] | None = None
    ) -> Tensor:
        """Decode.

        Args:
            skips: the encoder's output, finest first (``len(features)`` tensors).
            modulators: one optional callable per residual block (``len(block_channels)``).

        Returns:
            ``(B, out_channels, D, H, W)`` at the resolution of ``skips[0]``.
        """
        if len(skips) != len(self.features):
            raise ValueError(f"expected {len(self.features)} skips, got {len(skips)}")
        mods = list(modulators) if modulators is not None else [None] * len(self.block_channels)
        if len(mods) != len(self.block_channels):
            raise ValueError(f"expected {len(self.block_channels)} modulators, got {len(mods)}")
        x = skips[-1]
        j = 0
        for level, up, stage in zip(self._levels, self.ups, self.stages, strict=True):
            x = torch.cat([up(x), skips[level]], dim=1)
            for block in stage.children():
                x = block(x, mods[j])
                j += 1
        return self.proj(x)


__all__ = ["UNetDecoder"]
