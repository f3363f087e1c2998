"""Modality stems: one small conv block per imaging modality, all mapping to the first width.

Images enter the network as ``(B, IN_CHANNELS, D, H, W)`` with ``IN_CHANNELS = 2``: CT, MRI and PET
use channel 0 (channel 1 is zero), PET/CT uses both in the order
:data:`duplus.vocab.PETCT_CHANNEL_ORDER` (PET, then CT). Each sample is routed through the
stem of its modality; a batch may mix modalities.

:data:`duplus.vocab.MODALITIES` fixes the order; the modality index of a case is its position in
this tuple (:func:`duplus.vocab.modality_index`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from duplus.errors import InputError
from duplus.models.blocks import ConvNormAct
from duplus.vocab import IN_CHANNELS, MODALITIES, MODALITY_CHANNELS


class ModalityStems(nn.ModuleDict):
    """One ``Conv3d(3) -> InstanceNorm -> act`` stem per modality, mapping its channels to ``out_channels``.

    Args:
        spatial_dims: must be 3.
        out_channels: the first width of the backbone, ``features[0]``.
        act: activation name.
        single_stem: ablation: one shared stem reading all ``IN_CHANNELS`` channels for every
            modality (unused channels are zero).

    Shapes:
        ``image (B, IN_CHANNELS, D, H, W)``, ``modality_index (B,)`` -> ``(B, out_channels, D, H, W)``.
    """

    def __init__(
        self, spatial_dims: int = 3, out_channels: int = 32, act: str = "leakyrelu", single_stem: bool = False
    ) -> None:
        if single_stem:
            stems = {"shared": ConvNormAct(spatial_dims, IN_CHANNELS, out_channels, act=act)}
        else:
            stems = {
                m: ConvNormAct(spatial_dims, MODALITY_CHANNELS[m], out_channels, act=act) for m in MODALITIES
            }
        super().__init__(stems)
        self.out_channels = out_channels
        self.single_stem = single_stem

    def forward(self, image: Tensor, modality_index: Tensor) -> Tensor:  # type: ignore[override]
        """Route each sample through the stem of its modality.

        Args:
            image: ``(B, IN_CHANNELS, D, H, W)``; channels a modality does not use must be zero.
            modality_index: ``(B,)`` integer positions in :data:`MODALITIES`.

        Returns:
            ``(B, out_channels, D, H, W)``.
        """
        if image.ndim != 5 or image.shape[1] != IN_CHANNELS:
            raise InputError(
                None, f"image must have shape (B, {IN_CHANNELS}, D, H, W), got {tuple(image.shape)}"
            )
        if self.single_stem:
            return self["shared"](image)
        modality_index = modality_index.reshape(-1).to(device=image.device, dtype=torch.long)
        if modality_index.shape[0] != image.shape[0]:
            raise InputError(
                None, f"modality_index has {modality_index.shape[0]} entries for a batch of {image.shape[0]}"
            )
        present = torch.unique(modality_index).tolist()
        bad = [m for m in present if not 0 <= m < len(MODALITIES)]
        if bad:
            raise InputError(None, f"modality index {bad[0]} out of range 0..{len(MODALITIES) - 1}")
        if len(present) == 1:  # the common case: no gather/scatter
            name = MODALITIES[present[0]]
            return self[name](image[:, : MODALITY_CHANNELS[name]])
        out: Tensor | None = None
        for m in present:
            name = MODALITIES[m]
            rows = (modality_index == m).nonzero(as_tuple=True)[0]
            y = self[name](image[rows, : MODALITY_CHANNELS[name]])
            if out is None:
                out = y.new_zeros((image.shape[0], *y.shape[1:]))
            out.index_copy_(0, rows, y)  # autograd tracks the in-place copy into the fresh tensor
        assert out is not None
        return out


__all__ = ["ModalityStems"]
