"""The DuPLUS network, composed from parts: modality stems, a T1-conditioned residual U-Net, and a
T2-driven dynamic head.

::

    image (B,2,D,H,W) --stem[modality]--> encoder --skips--> decoder --(B,8,D,H,W)--> dynamic head --> (B,K,D,H,W)
                                           ^ conditioner(T1) at every residual block    ^ controller(T2_k, pooled bottleneck)
                                                                     [+ voxel position (B,3,D,H,W), optional]

Everything that depends only on the prompts is computed once per volume by :meth:`DuPLUS.condition`
into a :class:`PromptConditioning`; :meth:`DuPLUS.forward_conditioned` then runs any number of
windows with it (MONAI's ``sliding_window_inference`` passes it through ``**kwargs``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from duplus.errors import ConfigError, InputError
from duplus.models.blocks import Modulator
from duplus.models.decoder import UNetDecoder
from duplus.models.dynamic_head import DynamicHead
from duplus.models.encoder import UNetEncoder
from duplus.models.film import Conditioner
from duplus.models.position import volume_positions
from duplus.models.stems import ModalityStems
from duplus.vocab import IN_CHANNELS, POSITION_CHANNELS


@dataclass
class PromptConditioning:
    """The prompt-dependent state of one forward pass, computed once per volume.

    Attributes:
        modality_index: ``(B,)`` long, the stem of each sample.
        block_params: one tensor per conditioned block: ``(B, P_i)``, or ``(B, K, P_i)`` for a
            single-prompt model (each target's prompt conditions its own backbone pass).
        head_text: the text side of the head's controller, ``(B, K, H)``.
        single_prompt: whether ``block_params`` are per target.
    """

    modality_index: Tensor
    block_params: list[Tensor]
    head_text: Tensor
    single_prompt: bool = False

    @property
    def batch_size(self) -> int:
        return int(self.head_text.shape[0])

    @property
    def num_targets(self) -> int:
        return int(self.head_text.shape[1])

    def broadcast_to(self, batch_size: int) -> PromptConditioning:
        """The same conditioning for a batch of ``batch_size``; a ``B = 1`` conditioning is expanded
        (no copy), e.g. over the windows of one volume."""
        if batch_size == self.batch_size:
            return self
        if self.batch_size != 1:
            raise InputError(
                None,
                f"conditioning computed for a batch of {self.batch_size} cannot serve a batch of {batch_size}",
            )

        def grow(t: Tensor) -> Tensor:
            return t.expand(batch_size, *t.shape[1:])

        return replace(
            self,
            modality_index=grow(self.modality_index),
            block_params=[grow(p) for p in self.block_params],
            head_text=grow(self.head_text),
        )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptConditioning:
        """A copy on ``device``; its floating-point tensors cast to ``dtype`` when given."""
        return replace(
            self,
            modality_index=self.modality_index.to(device),
            block_params=[p.to(device, dtype) for p in self.block_params],
            head_text=self.head_text.to(device, dtype),
        )


class DuPLUS(nn.Module):
    """Dual-prompt universal segmentation network (built by :func:`duplus.models.registry.build_model`).

    Args:
        stems: routes each sample through its modality's stem to ``features[0]`` channels.
        encoder: residual U-Net encoder returning its skips.
        decoder: residual U-Net decoder returning the head's input features.
        conditioner: T1 conditioning (FiLM, gate or none) for every encoder and decoder block.
        head: the T2 dynamic head.
        single_prompt: the single-prompt ablation. The forward signature is unchanged; ``t1_emb``
            is ignored and each target's embedding ``t2_emb[:, k]`` drives both the backbone
            conditioning and the head for that target, i.e. the backbone runs once per target
            (``B*K`` passes). Feed it prompts that carry the context, e.g.
            :func:`duplus.text.prompts.single_prompt_text` ("A CT scan of the abdomen: liver").
        head_position: the head also reads each voxel's position in its case volume
            (:mod:`duplus.models.position`); ``head.in_channels`` is then the decoder's channels + 3.

    Shapes:
        ``image (B, 2, D, H, W)``, ``modality_index (B,)``, ``t1_emb (B, E)``, ``t2_emb (B, K, E)``,
        optional ``position (B, 3, D, H, W)`` -> ``logits (B, K, D, H, W)``. ``D, H, W`` must be
        multiples of :attr:`size_divisor`.
    """

    def __init__(
        self,
        stems: ModalityStems,
        encoder: UNetEncoder,
        decoder: UNetDecoder,
        conditioner: Conditioner,
        head: DynamicHead,
        single_prompt: bool = False,
        head_position: bool = False,
    ) -> None:
        super().__init__()
        expected = tuple(encoder.block_channels) + tuple(decoder.block_channels)
        if tuple(conditioner.block_channels) != expected:
            raise ConfigError(
                f"conditioner covers blocks {conditioner.block_channels}, backbone has {expected}"
            )
        position_channels = POSITION_CHANNELS if head_position else 0
        if decoder.out_channels + position_channels != head.in_channels:
            raise ConfigError(
                f"decoder gives {decoder.out_channels} channels"
                + (f" + {position_channels} position channels" if position_channels else "")
                + f", head expects {head.in_channels}"
            )
        if conditioner.text_dim != head.text_dim:
            raise ConfigError(f"conditioner text_dim {conditioner.text_dim} != head text_dim {head.text_dim}")
        self.stems = stems
        self.encoder = encoder
        self.decoder = decoder
        self.conditioner = conditioner
        self.head = head
        self.single_prompt = bool(single_prompt)
        self.head_position = bool(head_position)
        self.text_dim = head.text_dim
        self.in_channels = IN_CHANNELS

    @property
    def size_divisor(self) -> int:
        """Input sizes must be multiples of this (``2 ** downsamplings``)."""
        return self.encoder.size_divisor

    # ------------------------------------------------------------------ prompts -> conditioning
    def condition(self, modality_index: Tensor, t1_emb: Tensor, t2_emb: Tensor) -> PromptConditioning:
        """Compute everything that depends on the prompts only (once per volume).

        Args:
            modality_index: ``(B,)`` long.
            t1_emb: context prompt embeddings ``(B, E)`` (ignored by a single-prompt model).
            t2_emb: target prompt embeddings ``(B, K, E)``; ``(K, E)`` is shared by the batch.

        Returns:
            The :class:`PromptConditioning` for :meth:`forward_conditioned`.
        """
        modality_index = torch.as_tensor(modality_index, dtype=torch.long).reshape(-1)
        if t2_emb.ndim == 2:
            t2_emb = t2_emb.unsqueeze(0).expand(modality_index.shape[0], -1, -1)
        if t2_emb.ndim != 3 or t2_emb.shape[0] != modality_index.shape[0]:
            raise InputError(
                None,
                f"t2_emb must have shape (B, K, E) with B={modality_index.shape[0]}, got {tuple(t2_emb.shape)}",
            )
        b, k, e = t2_emb.shape
        head_text = self.head.compute_text(t2_emb)
        if self.single_prompt:
            params = self.conditioner.compute(t2_emb.reshape(b * k, e))
            block_params = [p.reshape(b, k, -1) for p in params]
        else:
            if t1_emb.ndim != 2 or t1_emb.shape[0] != b:
                raise InputError(None, f"t1_emb must have shape ({b}, E), got {tuple(t1_emb.shape)}")
            block_params = self.conditioner.compute(t1_emb)
        return PromptConditioning(modality_index, block_params, head_text, self.single_prompt)

    # ------------------------------------------------------------------ image -> logits
    def _check_image(self, image: Tensor) -> None:
        if image.ndim != 5 or image.shape[1] != self.in_channels:
            raise InputError(
                None, f"image must have shape (B, {self.in_channels}, D, H, W), got {tuple(image.shape)}"
            )
        bad = [s for s in image.shape[2:] if s % self.size_divisor]
        if bad:
            raise InputError(
                None,
                f"image spatial size {tuple(image.shape[2:])} must be a multiple of {self.size_divisor} "
                "(pad it, or use a sliding-window roi that is)",
            )
        if all(s == self.size_divisor for s in image.shape[2:]):
            raise InputError(
                None,
                f"image spatial size {tuple(image.shape[2:])} is too small: the bottleneck would be one voxel "
                f"(use at least {2 * self.size_divisor} along one axis)",
            )

    def _modulators(self, block_params: list[Tensor]) -> list[Modulator | None]:
        return [self.conditioner.modulator(p) for p in block_params]

    def _backbone(
        self, image: Tensor, modality_index: Tensor, block_params: list[Tensor]
    ) -> tuple[list[Tensor], Tensor]:
        mods = self._modulators(block_params)
        skips = self._encode(image, modality_index, mods)
        return skips, self.decoder(skips, mods[len(self.encoder.block_channels) :])

    def _encode(self, image: Tensor, modality_index: Tensor, mods: list[Modulator | None]) -> list[Tensor]:
        """Stems and encoder with the encoder's share of the block modulators ``mods``."""
        return self.encoder(self.stems(image, modality_index), mods[: len(self.encoder.block_channels)])

    def _head_input(self, feats: Tensor, position: Tensor | None, repeats: int = 1) -> Tensor:
        """The decoder's features, joined with the voxel positions when the head reads them."""
        if not self.head_position:
            return feats
        n = feats.shape[0] // repeats
        if position is None:
            position = volume_positions(feats.shape[2:], feats.device, feats.dtype)
        if position.shape[0] == 1 and n > 1:
            position = position.expand(n, -1, -1, -1, -1)
        if position.shape[:2] != (n, POSITION_CHANNELS) or position.shape[2:] != feats.shape[2:]:
            raise InputError(
                None,
                f"position must have shape ({n}, {POSITION_CHANNELS}, {', '.join(map(str, feats.shape[2:]))}), "
                f"got {tuple(position.shape)}",
            )
        if repeats > 1:
            position = position.repeat_interleave(repeats, dim=0)
        return torch.cat([feats, position.to(feats.dtype)], dim=1)

    def forward_conditioned(
        self, image: Tensor, cond: PromptConditioning, position: Tensor | None = None
    ) -> Tensor:
        """Segment with a precomputed conditioning.

        Args:
            image: ``(N, 2, D, H, W)``: a batch of volumes or of windows of one volume.
            cond: from :meth:`condition`, for a batch of ``N`` or of 1 (then shared by all ``N``).
            position: ``(N or 1, 3, D, H, W)`` voxel positions in the case volume, read by a
                ``head_position`` model (ignored otherwise). ``None`` takes ``image`` to be a whole
                volume (:func:`duplus.models.position.volume_positions`); windows and patches
                must pass their slice of it.

        Returns:
            ``logits (N, K, D, H, W)``.
        """
        self._check_image(image)
        n = image.shape[0]
        cond = cond.broadcast_to(n)
        if not cond.single_prompt:
            skips, feats = self._backbone(image, cond.modality_index, cond.block_params)
            return self.head(
                self._head_input(feats, position),
                cond.head_text,
                skips[-1] if self.head.uses_image_context else None,
            )
        k = cond.num_targets
        image_k = image.repeat_interleave(k, dim=0)  # (N*K, ...)
        modality_k = cond.modality_index.repeat_interleave(k)
        params_k = [p.reshape(n * k, -1) for p in cond.block_params]
        skips, feats = self._backbone(image_k, modality_k, params_k)
        head_text = cond.head_text.reshape(n * k, 1, -1)
        logits = self.head(
            self._head_input(feats, position, repeats=k),
            head_text,
            skips[-1] if self.head.uses_image_context else None,
        )
        return logits.reshape(n, k, *image.shape[2:])

    def forward(
        self,
        image: Tensor,
        modality_index: Tensor,
        t1_emb: Tensor,
        t2_emb: Tensor,
        position: Tensor | None = None,
    ) -> Tensor:
        """Segment the ``K`` targets named by ``t2_emb`` in the context named by ``t1_emb``.

        Args:
            image: ``(B, 2, D, H, W)`` (channel 1 is zero unless the modality is PET/CT).
            modality_index: ``(B,)`` long, positions in :data:`duplus.models.stems.MODALITIES`.
            t1_emb: context prompt embeddings ``(B, E)``.
            t2_emb: target prompt embeddings ``(B, K, E)``.
            position: voxel positions for a ``head_position`` model (see :meth:`forward_conditioned`).

        Returns:
            ``logits (B, K, D, H, W)``.
        """
        return self.forward_conditioned(image, self.condition(modality_index, t1_emb, t2_emb), position)

    def extract_features(
        self, image: Tensor, modality_index: Tensor, t1_emb: Tensor, decoder: bool = True
    ) -> dict[str, Tensor]:
        """Backbone features for downstream tasks (prognosis), conditioned by ``t1_emb``.

        For a single-prompt model ``t1_emb`` is the one prompt that conditions the backbone.

        Args:
            image: ``(B, 2, D, H, W)``.
            modality_index: ``(B,)``.
            t1_emb: ``(B, E)``.
            decoder: also run the decoder (``False``: the encoder only, for bottleneck features).

        Returns:
            ``{"bottleneck": (B, C_last, D/s, H/s, W/s), "decoder": (B, head_channels, D, H, W)}``
            (no ``"decoder"`` entry when ``decoder`` is false).
        """
        self._check_image(image)
        modality_index = torch.as_tensor(modality_index, dtype=torch.long).reshape(-1)
        params = self.conditioner.compute(t1_emb)
        if t1_emb.shape[0] == 1 and image.shape[0] > 1:
            params = [p.expand(image.shape[0], -1) for p in params]
            modality_index = modality_index.expand(image.shape[0])
        if not decoder:
            return {"bottleneck": self._encode(image, modality_index, self._modulators(params))[-1]}
        skips, feats = self._backbone(image, modality_index, params)
        return {"bottleneck": skips[-1], "decoder": feats}


__all__ = ["DuPLUS", "PromptConditioning"]
