"""T1 conditioning of the backbone: FiLM (the paper's choice), the authors' sigmoid gate, or none.

A conditioner maps one prompt embedding per sample to one parameter vector per conditioned block
(every residual block of the encoder and the decoder, in the order ``encoder.block_channels +
decoder.block_channels``). The work is split in two so that the parameters are computed once per
volume and reused for every sliding window:

* :meth:`Conditioner.compute` ``(B, E) -> [params_i (B, P_i)]``: the MLP, run once per prompt;
* :meth:`Conditioner.modulate` ``(x (B, C_i, D, H, W), params_i (B, P_i)) -> x'``: inside block ``i``,
  right after the block's last normalisation (see :class:`~duplus.models.blocks.ResidualBlock`).
  (It is not called ``apply``: that would shadow :meth:`torch.nn.Module.apply`, which recursive
  initialisers such as ``model.apply(init_fn)`` rely on.)
* :meth:`Conditioner.modulator` ``params_i -> Modulator``: what block ``i`` is handed. FiLM hands
  a :class:`~duplus.models.blocks.NormModulation`, which the block's norm folds into its own
  affine (no extra pass over the features); ``FiLM.fuse_into_norm = False`` hands
  :meth:`modulate` instead (the reference the fused path is tested against).

All conditioners are the identity at initialisation (their last layer is zero-initialised), so a
freshly built conditioned network computes exactly what the unconditioned one computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from duplus.errors import ConfigError, InputError
from duplus.models.blocks import Modulator, NormModulation


class Conditioner(nn.Module):
    """Base class: a prompt-embedding MLP producing per-block modulation parameters.

    Args:
        text_dim: prompt embedding size ``E``.
        block_channels: channel count ``C_i`` of every conditioned block, in application order.
        hidden_dim: width of the MLP's hidden layer.
    """

    def __init__(self, text_dim: int, block_channels: Sequence[int], hidden_dim: int = 256) -> None:
        super().__init__()
        self.text_dim = int(text_dim)
        self.block_channels = tuple(int(c) for c in block_channels)
        self.hidden_dim = int(hidden_dim)

    def params_per_block(self, channels: int) -> int:
        """Length ``P_i`` of the parameter vector of a block with ``channels`` channels."""
        raise NotImplementedError

    @property
    def num_blocks(self) -> int:
        return len(self.block_channels)

    def _check_embedding(self, emb: Tensor) -> None:
        if emb.ndim != 2 or emb.shape[1] != self.text_dim:
            raise InputError(
                None, f"prompt embedding must have shape (B, {self.text_dim}), got {tuple(emb.shape)}"
            )

    def compute(self, emb: Tensor) -> list[Tensor]:
        """Per-block parameters for prompt embeddings ``emb (B, E)``: a list of ``(B, P_i)``."""
        raise NotImplementedError

    def modulate(self, x: Tensor, params: Tensor) -> Tensor:
        """Modulate block features ``x (B, C, D, H, W)`` with ``params (B, P)``; same shape out."""
        raise NotImplementedError

    def modulator(self, params: Tensor) -> Modulator | None:
        """What a block applies after its last norm for ``params (B, P)``: :meth:`modulate` bound
        to ``params`` (conditioners that can fold into the norm override this)."""
        return partial(self.modulate, params=params)


class _MLPConditioner(Conditioner):
    """Shared trunk ``Linear(E, hidden) -> ReLU`` and one zero-initialised output layer whose
    output is split into the per-block parameter vectors (one matmul for all blocks)."""

    def __init__(self, text_dim: int, block_channels: Sequence[int], hidden_dim: int = 256) -> None:
        super().__init__(text_dim, block_channels, hidden_dim)
        self.sizes = [self.params_per_block(c) for c in self.block_channels]
        self.trunk = nn.Sequential(nn.Linear(self.text_dim, self.hidden_dim), nn.ReLU(inplace=True))
        self.out = nn.Linear(self.hidden_dim, sum(self.sizes))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def compute(self, emb: Tensor) -> list[Tensor]:
        self._check_embedding(emb)
        flat = self.out(self.trunk(emb))
        return list(torch.split(flat, self.sizes, dim=1))


class FiLM(_MLPConditioner):
    """Feature-wise linear modulation: ``x * (1 + gamma) + beta`` with per-channel ``gamma, beta``.

    ``gamma`` and ``beta`` come from a zero-initialised layer, so an untrained FiLM is the identity.
    Parameters per block: ``P_i = 2 C_i`` (``gamma`` first, then ``beta``).

    By default FiLM is folded into the preceding instance norm's affine
    (:class:`~duplus.models.blocks.NormModulation`): no pass over the features beyond the norm's
    own. :attr:`fuse_into_norm` ``= False`` applies :meth:`modulate` after the norm instead (the
    same result up to float rounding; the reference the fused path is tested against).
    """

    fuse_into_norm: bool = True

    def params_per_block(self, channels: int) -> int:
        return 2 * channels

    def modulator(self, params: Tensor) -> Modulator | None:
        if not self.fuse_into_norm:
            return super().modulator(params)
        gamma, beta = params.view(params.shape[0], 2, -1).unbind(1)
        return NormModulation(gamma, beta)

    def modulate(self, x: Tensor, params: Tensor) -> Tensor:
        gamma, beta = params.view(params.shape[0], 2, -1, *([1] * (x.ndim - 2))).unbind(1)
        return x * (1.0 + gamma) + beta


class ChannelGate(_MLPConditioner):
    """The authors' default: the prompt makes a 1x1x1 convolution ``C -> 1`` (``C`` weights and one
    bias, ``P_i = C_i + 1``) whose sigmoid multiplies the features:
    ``x * 2 * sigmoid(sum_c w_c x_c + b)``.

    The factor 2 makes the zero-initialised gate the identity (``2 * sigmoid(0) = 1``); the gate
    scales every channel of a voxel by one prompt-dependent weight computed from all channels.
    """

    def params_per_block(self, channels: int) -> int:
        return channels + 1

    def modulate(self, x: Tensor, params: Tensor) -> Tensor:
        weight, bias = params[:, :-1], params[:, -1:]
        logit = torch.einsum("bc,bc...->b...", weight, x) + bias.view(-1, *([1] * (x.ndim - 2)))
        return x * (2.0 * torch.sigmoid(logit)).unsqueeze(1)


class NoConditioning(Conditioner):
    """No T1 conditioning (ablation): zero parameters per block, ``modulate`` is the identity."""

    def params_per_block(self, channels: int) -> int:
        return 0

    def compute(self, emb: Tensor) -> list[Tensor]:
        self._check_embedding(emb)
        return [emb.new_zeros(emb.shape[0], 0) for _ in self.block_channels]

    def modulate(self, x: Tensor, params: Tensor) -> Tensor:
        return x

    def modulator(self, params: Tensor) -> Modulator | None:
        return None


CONDITIONERS: dict[str, type[Conditioner]] = {"film": FiLM, "gate": ChannelGate, "none": NoConditioning}


def build_conditioner(
    name: str, text_dim: int, block_channels: Sequence[int], hidden_dim: int = 256
) -> Conditioner:
    """The conditioner registered as ``name`` (``film`` | ``gate`` | ``none``)."""
    try:
        cls = CONDITIONERS[name]
    except KeyError:
        raise ConfigError(
            f"model.conditioning: unknown value {name!r}; expected one of {', '.join(CONDITIONERS)}"
        ) from None
    return cls(text_dim, block_channels, hidden_dim)


__all__ = ["CONDITIONERS", "ChannelGate", "Conditioner", "FiLM", "NoConditioning", "build_conditioner"]
