"""The T2 dynamic head: one tiny per-target 1x1x1 conv stack whose weights come from the target's prompt.

As in the CLIP-Driven Universal Model: the target's embedding (projected to ``embed_dim``) is joined
with the pooled bottleneck features (projected to ``embed_dim``; ``head_context="bottleneck"``), and
a controller maps the pair to the weights and biases of a conv stack ``8 -> 8 -> 8 -> 1`` (153
numbers) applied to the decoder's last features.

Two implementation choices:

* **Split controller.** The controller's first layer is linear in ``concat(text, image)``, i.e.
  ``W_t t + W_i i + b``. :meth:`DynamicHead.compute_text` computes ``W_t t + b`` once per volume
  (per prompt); the image part ``W_i i`` is added per window. Asking for more targets costs only
  this head.
* **All heads at once.** The ``B*K`` per-target stacks are the grouped 1x1x1 convolution
  ``conv3d((1, B*K*8, D, H, W), groups=B*K)``; we evaluate that exact operation as batched matrix
  products (``baddbmm``), which avoids copying the features ``K`` times and measured ~3x faster
  than ``conv3d(groups=...)`` on the CPU. There is no Python loop over targets; the stacks run
  over chunks of voxels so that their intermediates stay in cache (ten targets cost about one),
  in training too: the backward pass recomputes each chunk instead of keeping ``K * 17``
  full-size channels of intermediates.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from duplus.errors import ConfigError, InputError


class DynamicHead(nn.Module):
    """Text-driven dynamic segmentation head.

    Args:
        text_dim: prompt embedding size ``E``.
        in_channels: channels of the decoder's output feature map (8 in the paper).
        bottleneck_channels: channels of the bottleneck whose global average is joined with the
            text (``head_context="bottleneck"``); ``None`` uses the text alone.
        embed_dim: projection size of the text and of the pooled image features (256).
        hidden_channels: width of the dynamic conv stack's hidden layers (8).
        num_layers: layers of the dynamic conv stack (3: ``in -> 8 -> 8 -> 1``).
        controller_hidden: 0 for a linear controller (the authors' ``512 -> 153``); otherwise the
            controller is ``Linear -> ReLU -> Linear`` with this hidden width.
        prior_prob: the controller's bias for the last conv's bias starts at
            ``log(p / (1 - p))``, so every target starts out predicting about ``p`` foreground (the
            RetinaNet prior; it avoids the first steps being spent driving all voxels to
            background). ``None`` keeps PyTorch's default initialisation.

    Shapes:
        ``features (B, in_channels, D, H, W)``, ``t2_emb (B, K, E)`` -> ``logits (B, K, D, H, W)``.
    """

    chunk_voxels: int = 4096
    """Voxels per chunk of :meth:`run_heads` without autograd (inference)."""
    chunk_voxels_grad: int = 4096
    """Voxels per chunk of :meth:`run_heads` with autograd (the backward pass recomputes each chunk)."""

    def __init__(
        self,
        text_dim: int,
        in_channels: int = 8,
        bottleneck_channels: int | None = None,
        embed_dim: int = 256,
        hidden_channels: int = 8,
        num_layers: int = 3,
        controller_hidden: int = 0,
        prior_prob: float | None = 0.01,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"dynamic head: num_layers must be >= 1, got {num_layers}")
        self.text_dim = int(text_dim)
        self.in_channels = int(in_channels)
        chans = [self.in_channels] + [int(hidden_channels)] * (num_layers - 1) + [1]
        self.layer_shapes: list[tuple[int, int]] = list(zip(chans[1:], chans[:-1], strict=True))  # (out, in)
        self.num_params = sum(o * i + o for o, i in self.layer_shapes)
        self.text_proj = nn.Sequential(nn.Linear(self.text_dim, embed_dim), nn.ReLU(inplace=True))
        self.image_proj: nn.Module | None = None
        if bottleneck_channels is not None:
            self.image_proj = nn.Sequential(
                nn.Linear(int(bottleneck_channels), embed_dim), nn.ReLU(inplace=True)
            )
        width = controller_hidden or self.num_params
        self.controller_text = nn.Linear(embed_dim, width)
        self.controller_image = (
            nn.Linear(embed_dim, width, bias=False) if self.image_proj is not None else None
        )
        self.controller_rest: nn.Module = (
            nn.Sequential(nn.ReLU(inplace=True), nn.Linear(width, self.num_params))
            if controller_hidden
            else nn.Identity()
        )
        self.text_part_dim = width
        if prior_prob is not None:
            if not 0.0 < prior_prob < 1.0:
                raise ConfigError(f"dynamic head: prior_prob must lie in (0, 1), got {prior_prob}")
            last = list(self.controller_rest.children())[-1] if controller_hidden else self.controller_text
            assert isinstance(last, nn.Linear) and last.bias is not None
            with torch.no_grad():
                last.bias[-1] = math.log(prior_prob / (1.0 - prior_prob))

    @property
    def uses_image_context(self) -> bool:
        return self.image_proj is not None

    def compute_text(self, t2_emb: Tensor) -> Tensor:
        """Text side of the controller's first layer, ``W_t proj(t2) + b``: once per volume.

        Args:
            t2_emb: target prompt embeddings ``(B, K, E)``.

        Returns:
            ``(B, K, text_part_dim)``.
        """
        if t2_emb.ndim != 3 or t2_emb.shape[-1] != self.text_dim:
            raise InputError(
                None, f"T2 embeddings must have shape (B, K, {self.text_dim}), got {tuple(t2_emb.shape)}"
            )
        return self.controller_text(self.text_proj(t2_emb))

    def compute_image(self, bottleneck: Tensor) -> Tensor:
        """Image side of the controller's first layer, ``W_i proj(mean(bottleneck))``: per window.

        Args:
            bottleneck: ``(B, C_bottleneck, d, h, w)``.

        Returns:
            ``(B, text_part_dim)``.
        """
        assert self.image_proj is not None and self.controller_image is not None
        pooled = bottleneck.mean(dim=tuple(range(2, bottleneck.ndim)))
        return self.controller_image(self.image_proj(pooled))

    def compute_params(self, text_part: Tensor, bottleneck: Tensor | None = None) -> Tensor:
        """The flat dynamic-head parameters of every (sample, target): ``(B, K, num_params)``."""
        h = text_part
        if self.uses_image_context:
            if bottleneck is None:
                raise ValueError("this head uses the bottleneck as context: pass bottleneck")
            h = h + self.compute_image(bottleneck).unsqueeze(1)
        return self.controller_rest(h)

    def run_heads(self, features: Tensor, params: Tensor) -> Tensor:
        """Run every per-target conv stack on ``features (B, C, D, H, W)`` with ``params (B, K, P)``.

        The stacks are evaluated over chunks of voxels (:attr:`chunk_voxels`, or
        :attr:`chunk_voxels_grad` with autograd), so the ``K * (8 + 8 + 1)`` channels of
        intermediates stay in cache instead of being written and read at full size: the head is
        memory-bound, and this is what keeps ten targets at about the cost of one. With autograd
        nothing of a chunk is kept either: the backward pass recomputes each chunk
        (:class:`_ChunkedHeads`). The result equals evaluating the whole window at once up to float
        rounding (the BLAS kernel's blocking depends on the chunk size).

        Returns:
            ``logits (B, K, D, H, W)``.
        """
        b, c = features.shape[:2]
        spatial = features.shape[2:]
        k = params.shape[1]
        if c != self.in_channels:
            raise InputError(None, f"head expects {self.in_channels} feature channels, got {c}")
        if params.shape[0] != b:
            raise InputError(None, f"head parameters for {params.shape[0]} samples, features for {b}")
        flat = features.reshape(b, c, -1)  # (B, C, N)
        if torch.is_grad_enabled() and (flat.requires_grad or params.requires_grad):
            out = _ChunkedHeads.apply(flat, params, self.layer_shapes, self.chunk_voxels_grad)
        else:
            out = _run_chunks(flat, params.to(flat.dtype), self.layer_shapes, self.chunk_voxels)
        return out.view(b, k, *spatial)

    def forward(self, features: Tensor, text_part: Tensor, bottleneck: Tensor | None = None) -> Tensor:
        """Segment every requested target.

        Args:
            features: decoder output ``(B, in_channels, D, H, W)``.
            text_part: :meth:`compute_text` of the target prompts, ``(B, K, text_part_dim)``.
            bottleneck: ``(B, C_bottleneck, d, h, w)``, required with image context.

        Returns:
            ``logits (B, K, D, H, W)`` (one sigmoid map per target).
        """
        return self.run_heads(features, self.compute_params(text_part, bottleneck))


LayerShapes = list[tuple[int, int]]


def _layer_params(params: Tensor, layer_shapes: LayerShapes) -> list[tuple[Tensor, Tensor]]:
    """Split ``params (B, K, P)`` into per-layer ``(weight, bias)``: the first layer as
    ``(B, K*c_out, c_in)`` / ``(B, K*c_out, 1)`` (it reads the shared features), the others as
    ``(B*K, c_out, c_in)`` / ``(B*K, c_out, 1)``."""
    b, k = params.shape[:2]
    layers = []
    offset = 0
    for layer, (c_out, c_in) in enumerate(layer_shapes):
        w = params[..., offset : offset + c_out * c_in]
        offset += c_out * c_in
        bias = params[..., offset : offset + c_out]
        offset += c_out
        rows = (b, k * c_out) if layer == 0 else (b * k, c_out)
        layers.append((w.reshape(*rows, c_in), bias.reshape(*rows, 1)))
    return layers


def _chunk_activations(x: Tensor, layers: list[tuple[Tensor, Tensor]], b: int, k: int) -> list[Tensor]:
    """The post-ReLU activations of every layer but the last for one chunk ``x (B, C, n)``:
    ``[(B*K, c_out, n)]`` (what the backward pass needs; the last layer is linear)."""
    acts: list[Tensor] = []
    if len(layers) < 2:
        return acts
    (w0, b0), *rest = layers
    a = torch.baddbmm(b0, w0, x).view(b * k, w0.shape[1] // k, -1).relu_()
    acts.append(a)
    for w, bias in rest[:-1]:
        a = torch.baddbmm(bias, w, a).relu_()
        acts.append(a)
    return acts


def _run_chunks(flat: Tensor, params: Tensor, layer_shapes: LayerShapes, chunk: int) -> Tensor:
    """``(B, K, N)`` logits without autograd (ReLU in place, one chunk's intermediates at a time)."""
    b, k, n = flat.shape[0], params.shape[1], flat.shape[-1]
    (w0, b0), *rest = _layer_params(params, layer_shapes)
    out = flat.new_empty(b, k, n)
    for start in range(0, n, chunk):
        # first layer, shared input: (B, K*c_out, C) @ (B, C, n) -> (B*K, c_out, n)
        h = torch.baddbmm(b0, w0, flat[:, :, start : start + chunk]).view(b * k, w0.shape[1] // k, -1)
        for w, bias in rest:
            h = torch.baddbmm(bias, w, h.relu_())
        out[:, :, start : start + chunk] = h.view(b, k, -1)
    return out


class _ChunkedHeads(torch.autograd.Function):
    """The per-target stacks with autograd, chunk by chunk in both directions.

    Forward keeps only its inputs (the features and the ``(B, K, P)`` parameters); backward
    recomputes each chunk's pre-activations and back-propagates through them by hand, summing
    the parameter gradients over chunks. Autograd would instead keep ``K * 17`` full-size channels
    of intermediates per sample, which made the head the largest part of the conditioning's price
    in a training step. Both directions run in the features' dtype, outside autocast.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, flat: Tensor, params: Tensor, layer_shapes: LayerShapes, chunk: int
    ) -> Tensor:
        ctx.save_for_backward(flat, params)
        ctx.layer_shapes, ctx.chunk = layer_shapes, chunk
        with torch.autocast(flat.device.type, enabled=False):
            return _run_chunks(flat, params.to(flat.dtype), layer_shapes, chunk)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        flat, params = ctx.saved_tensors
        with torch.autocast(flat.device.type, enabled=False):
            g_flat, g_params = _chunked_backward(
                flat,
                params.to(flat.dtype),
                grad_out.to(flat.dtype),
                ctx.layer_shapes,
                ctx.chunk,
                features_grad=ctx.needs_input_grad[0],
            )
        return (
            g_flat.to(flat.dtype) if g_flat is not None else None,
            g_params.to(params.dtype),
            None,
            None,
        )


def _chunked_backward(
    flat: Tensor,
    params: Tensor,
    grad_out: Tensor,
    layer_shapes: LayerShapes,
    chunk: int,
    *,
    features_grad: bool = True,
) -> tuple[Tensor | None, Tensor]:
    """Gradients of ``sum(grad_out * heads(flat, params))`` for ``flat (B, C, N)`` (``None``
    unless ``features_grad``), ``params (B, K, P)``, ``grad_out (B, K, N)``."""
    b, k, n = flat.shape[0], params.shape[1], flat.shape[-1]
    layers = _layer_params(params, layer_shapes)
    g_w = [torch.zeros_like(w) for w, _ in layers]
    g_b = [torch.zeros_like(bias) for _, bias in layers]
    g_flat = torch.empty_like(flat) if features_grad else None
    for start in range(0, n, chunk):
        x = flat[:, :, start : start + chunk]
        acts = _chunk_activations(x, layers, b, k)
        g = grad_out[:, :, start : start + chunk].reshape(b * k, 1, -1)
        for i in range(len(layers) - 1, 0, -1):
            a = acts[i - 1]
            g_w[i].baddbmm_(g, a.transpose(1, 2))
            g_b[i] += g.sum(-1, keepdim=True)
            # ReLU's backward: zero where the activation is (a > 0 exactly where its input was)
            g = torch.ops.aten.threshold_backward(torch.bmm(layers[i][0].transpose(1, 2), g), a, 0)
        g0 = g.reshape(b, -1, g.shape[-1])  # (B, K*c_out, n)
        g_w[0].baddbmm_(g0, x.transpose(1, 2))
        g_b[0] += g0.sum(-1, keepdim=True)
        if g_flat is not None:
            g_flat[:, :, start : start + chunk] = torch.bmm(layers[0][0].transpose(1, 2), g0)
    pieces = []
    for gw, gb in zip(g_w, g_b, strict=True):
        pieces += [gw.reshape(b, k, -1), gb.reshape(b, k, -1)]
    return g_flat, torch.cat(pieces, dim=-1)


__all__ = ["DynamicHead"]
