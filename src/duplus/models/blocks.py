"""Building blocks of the residual 3D U-Net: residual conv blocks, down- and up-sampling.

Every block that can be conditioned by the T1 prompt takes an optional ``modulate``, applied right
after the block's last normalisation (before the residual addition and the final activation),
which is where FiLM / the channel gate act (see :mod:`duplus.models.film`). It is either a callable
on the normalised features, or a :class:`NormModulation`: FiLM folded into that norm's affine, so
that conditioning costs no pass over the features beyond the norm's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from duplus.errors import ConfigError


@dataclass(frozen=True)
class NormModulation:
    """Per-sample FiLM to be folded into an instance norm's affine:
    ``norm(x) * (1 + gamma) + beta`` computed as one normalisation whose per-(sample, channel)
    weight is ``w * (1 + gamma)`` and bias ``b * (1 + gamma) + beta``.

    Attributes:
        gamma: ``(B, C)`` (or ``(1, C)``, shared by the batch).
        beta: ``(B, C)`` (or ``(1, C)``).
    """

    gamma: Tensor
    beta: Tensor


Modulator = Callable[[Tensor], Tensor] | NormModulation

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leakyrelu": lambda: nn.LeakyReLU(negative_slope=0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
}


def build_activation(name: str) -> nn.Module:
    """A fresh activation module by name (``leakyrelu`` | ``elu`` | ``relu``)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}") from None


def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims != 3:
        raise ConfigError(f"spatial_dims={spatial_dims}: only 3D networks are supported")


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that picks faster CPU kernels for the small networks DuPLUS trains on a CPU.

    Two cases, both for batched CPU float32 input with zero padding; everything else (unbatched
    input, other devices and dtypes, ``torch.backends.mkldnn.enabled = False``, code traced by
    ``torch.compile``, whose fake tensors the direct oneDNN call cannot take) is ``nn.Conv3d``'s
    own path:

    * **A batch of one** goes to oneDNN (MKL-DNN) directly. PyTorch picks the CPU kernel by a size
      heuristic and takes its native im2col path whenever ``C_in * D * H`` is at most 20480, which
      holds for the first levels of a small network on one window (``(1, 8, 48, 48, 48)``). That
      path measured 12x slower than oneDNN for the forward pass on 2 cores (67 ms against 5.7 ms for
      an ``8 -> 8`` conv at ``48^3``), and batch-of-one windows are what inference, validation and
      feature extraction run.
    * **Training** (autograd records the op, batch of two or more, at least
      :attr:`channels_last_min_voxels` output voxels) runs the conv on a ``channels_last_3d`` copy
      of the input and returns the usual contiguous layout. oneDNN's weight gradient is about twice
      as fast in that layout for few channels over many voxels (``2 x 8 x 40^3``: 14 ms against
      30 ms), which is where a small U-Net spends most of a training step; the two layout copies
      cost under 1 ms each there. Coarse levels (few voxels, many channels) gain nothing and keep
      the contiguous layout.

    Input that is already channels-last (a network converted with
    ``model.to(memory_format=torch.channels_last_3d)``, the fast inference path) stays so: a batch
    of one goes to oneDNN in that layout, anything else to ``nn.Conv3d``'s own path.

    Parameters and state-dict keys are those of ``nn.Conv3d``.
    """

    #: Output voxels from which a training conv runs channels-last (``16^3``).
    channels_last_min_voxels = 4096

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (
            torch.compiler.is_compiling()  # first: the checks below break a traced graph
            or input.dim() != 5  # unbatched (C, D, H, W): its first size is not a batch
            or input.device.type != "cpu"
            or input.dtype != torch.float32
            or weight.dtype != torch.float32
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
            or not torch.backends.mkldnn.enabled
            or not torch.backends.mkldnn.is_available()
        ):
            return super()._conv_forward(input, weight, bias)
        channels_last = is_channels_last(input)
        if input.shape[0] == 1:
            return torch.ops.aten.mkldnn_convolution(
                input if channels_last else input.contiguous(),
                weight,
                bias,
                list(self.padding),
                list(self.stride),
                list(self.dilation),
                self.groups,
            )
        records = torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)
        if records and not channels_last and _out_voxels(input, self) >= self.channels_last_min_voxels:
            out = super()._conv_forward(input.contiguous(memory_format=torch.channels_last_3d), weight, bias)
            return out.contiguous()
        return super()._conv_forward(input, weight, bias)


def is_channels_last(x: Tensor) -> bool:
    """Whether a 5-D tensor is laid out channels-last (``channels_last_3d``) and not also plain
    contiguous (a tensor with one channel or one voxel is both)."""
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def _out_voxels(input: Tensor, conv: nn.Conv3d) -> int:
    """Spatial size of ``conv``'s output for ``input`` (stride only: DuPLUS pads to keep the size)."""
    n = 1
    for size, stride in zip(input.shape[2:], conv.stride, strict=True):
        n *= -(-size // stride)
    return n


class InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` computed by the group-norm kernel (one group per channel).

    The two are the same normalisation, but PyTorch's instance norm reshapes to a batch norm over
    ``B * C`` channels and repeats the affine parameters for it, while the group-norm kernel
    normalises the tensor as it is: forward plus backward measured 1.7 ms against 5.2 ms for
    ``2 x 8 x 40^3`` on 2 cores.
    Running statistics (``track_running_stats=True``) and unbatched input keep ``nn.InstanceNorm3d``'s
    path. Parameters and state-dict keys are those of ``nn.InstanceNorm3d``.
    """

    def forward(self, input: Tensor, modulation: NormModulation | None = None) -> Tensor:
        """Normalise ``input (B, C, D, H, W)``; with ``modulation``, also apply FiLM in the same pass."""
        if modulation is not None:
            return self._modulated(input, modulation)
        if self.track_running_stats or input.dim() != 5 or input.shape[1] != self.num_features:
            return super().forward(input)
        return nn.functional.group_norm(input, self.num_features, self.weight, self.bias, self.eps)

    def _modulated(self, input: Tensor, mod: NormModulation) -> Tensor:
        """Instance norm with FiLM folded into a per-(sample, channel) affine.

        The batch is folded into the channels, ``(1, B*C, D, H, W)``, so that one group-norm call
        with ``B*C`` groups applies a different weight and bias to every sample: the same work as
        the unconditioned norm. (Without a view of that shape, a channels-last batch, it normalises
        once and applies the affine in one ``addcmul``.)
        """
        if self.track_running_stats or input.dim() != 5:
            raise ValueError("FiLM folded into the norm needs batched input and no running statistics")
        b, c = input.shape[:2]
        scale = (1.0 + mod.gamma).expand(b, c)
        shift = mod.beta.expand(b, c)
        weight = scale if self.weight is None else self.weight * scale
        bias = shift if self.bias is None else torch.addcmul(shift, self.bias.expand(b, c), scale)
        if b == 1 or input.is_contiguous():
            folded = input.view(1, b * c, *input.shape[2:])
            out = nn.functional.group_norm(folded, b * c, weight.reshape(-1), bias.reshape(-1), self.eps)
            return out.view_as(input)
        plain = nn.functional.group_norm(input, c, None, None, self.eps)
        shape = (b, c, *([1] * (input.dim() - 2)))
        return torch.addcmul(bias.reshape(shape), plain, weight.reshape(shape))


class ConvNormAct(nn.Sequential):
    """``Conv3d(k) -> InstanceNorm3d(affine) -> activation``; used by the modality stems.

    Args:
        spatial_dims: must be 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: cubic kernel size (odd; padding keeps the size at stride 1).
        stride: convolution stride.
        act: activation name.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str = "leakyrelu",
    ) -> None:
        _check_spatial_dims(spatial_dims)
        super().__init__(
            Conv3d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            InstanceNorm3d(out_channels, affine=True),
            build_activation(act),
        )


class ResidualBlock(nn.Module):
    """Residual block: ``conv3 -> norm -> act -> conv3 -> norm -> [modulate] -> (+ shortcut) -> act``.

    The shortcut is the identity, or a 1x1x1 convolution + norm when the channel count or the
    stride changes. With ``stride=2`` the block also downsamples (the U-Net's "down" step).

    Args:
        spatial_dims: must be 3.
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        stride: stride of the first convolution and of the shortcut (1 or 2).
        act: activation name (``leakyrelu`` | ``elu`` | ``relu``).

    Shapes:
        ``x (B, C_in, D, H, W) -> (B, C_out, D/stride, H/stride, W/stride)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv1 = Conv3d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = InstanceNorm3d(out_channels, affine=True)
        self.act1 = build_activation(act)
        self.conv2 = Conv3d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = InstanceNorm3d(out_channels, affine=True)
        self.act2 = build_activation(act)
        self.shortcut: nn.Module
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                Conv3d(in_channels, out_channels, 1, stride, bias=False),
                InstanceNorm3d(out_channels, affine=True),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor, modulate: Modulator | None = None) -> Tensor:
        """Apply the block.

        Args:
            x: features ``(B, C_in, D, H, W)``.
            modulate: optional conditioning after the second norm: a callable ``(B, C_out, ...)``
                to the same shape (the channel gate, unfused FiLM), or a :class:`NormModulation`
                that the norm applies itself (fused FiLM).

        Returns:
            ``(B, C_out, D', H', W')``.
        """
        h = self.act1(self.norm1(self.conv1(x)))
        if isinstance(modulate, NormModulation):
            h = self.norm2(self.conv2(h), modulate)
        else:
            h = self.norm2(self.conv2(h))
            if modulate is not None:
                h = modulate(h)
        if torch.is_grad_enabled():
            return self.act2(h + self.shortcut(x))
        return self.act2(h.add_(self.shortcut(x)))  # inference: no new tensor for the sum


class UpSample(nn.Module):
    """Transposed convolution, kernel 2 stride 2: doubles each spatial size.

    Shapes:
        ``x (B, C_in, D, H, W) -> (B, C_out, 2D, 2H, 2W)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def init_weights(module: nn.Module, neg_slope: float = 0.01) -> None:
    """Kaiming-normal initialisation of every conv in ``module`` (nnU-Net's choice); biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(m.weight, a=neg_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def per_stage(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    """``value`` repeated ``n`` times if it is an int, else checked to hold ``n`` positive ints."""
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n or min(out) < 1:
        raise ConfigError(f"{what}: expected a positive int or {n} positive ints, got {value!r}")
    return out


def stage_blocks(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    num_blocks: int,
    stride: int,
    act: str,
) -> nn.ModuleList:
    """``num_blocks`` residual blocks; the first maps ``in -> out`` with ``stride``, the rest ``out -> out``."""
    if num_blocks < 1:
        raise ConfigError(f"a stage needs at least one residual block, got {num_blocks}")
    blocks = [ResidualBlock(spatial_dims, in_channels, out_channels, stride=stride, act=act)]
    blocks += [
        ResidualBlock(spatial_dims, out_channels, out_channels, act=act) for _ in range(num_blocks - 1)
    ]
    return nn.ModuleList(blocks)


__all__ = [
    "ACTIVATIONS",
    "Conv3d",
    "ConvNormAct",
    "InstanceNorm3d",
    "Modulator",
    "NormModulation",
    "ResidualBlock",
    "UpSample",
    "build_activation",
    "init_weights",
    "is_channels_last",
    "per_stage",
    "stage_blocks",
]
