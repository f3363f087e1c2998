"""Residual U-Net encoder: returns one skip per stage, the last being the bottleneck."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from duplus.errors import ConfigError
from duplus.models.blocks import Modulator, per_stage, stage_blocks


class UNetEncoder(nn.Module):
    """Stages of residual blocks; stage 0 keeps the resolution, each later stage halves it
    (its first block has stride 2).

    Args:
        spatial_dims: must be 3.
        features: width of each stage, e.g. ``(32, 64, 128, 256, 320)`` (``len - 1`` downsamplings).
            The input must already have ``features[0]`` channels (the modality stems' output).
        num_blocks: residual blocks per stage (an int, or one per stage).
        act: activation name.

    Shapes:
        ``x (B, features[0], D, H, W)`` -> skips ``[(B, features[i], D/2^i, H/2^i, W/2^i)]``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        features: Sequence[int] = (32, 64, 128, 256, 320),
        num_blocks: int | Sequence[int] = 2,
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        self.features = tuple(int(f) for f in features)
        if len(self.features) < 2:
            raise ConfigError(f"features: need at least two widths, got {list(features)}")
        self.num_blocks = per_stage(num_blocks, len(self.features), "encoder blocks per stage")
        stages = []
        for i, (f, n) in enumerate(zip(self.features, self.num_blocks, strict=True)):
            f_in = self.features[max(i - 1, 0)]
            stages.append(stage_blocks(spatial_dims, f_in, f, n, stride=1 if i == 0 else 2, act=act))
        self.stages = nn.ModuleList(stages)

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Output channels of every residual block, in forward order (one conditioner slot each)."""
        return tuple(f for f, n in zip(self.features, self.num_blocks, strict=True) for _ in range(n))

    @property
    def size_divisor(self) -> int:
        """Spatial sizes must be multiples of this (``2 ** downsamplings``)."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: Tensor, modulators: Sequence[Modulator | None] | None = None) -> list[Tensor]:
        """Encode.

        Args:
            x: ``(B, features[0], D, H, W)``.
            modulators: one optional callable per residual block (``len(block_channels)``).

        Returns:
            The skips, one per stage, finest first; ``skips[-1]`` is the bottleneck.
        """
        mods = list(modulators) if modulators is not None else [None] * len(self.block_channels)
        if len(mods) != len(self.block_channels):
            raise ValueError(f"expected {len(self.block_channels)} modulators, got {len(mods)}")
        skips: list[Tensor] = []
        j = 0
        for stage in self.stages:
            for block in stage.children():
                x = block(x, mods[j])
                j += 1
            skips.append(x)
        return skips


__all__ = ["UNetEncoder"]
