"""The networks DuPLUS is measured against, and one callable per measured unit (a training step,
a whole-volume prediction) so every benchmark times the same thing.

* ``dynunet``: MONAI's ``DynUNet`` with DuPLUS's widths (kernel 3, strides ``[1, 2, 2, ...]``,
  residual blocks, instance norm with affine, LeakyReLU 0.01) and ``out_channels = K``: the peer
  named by the design. It has one block per stage and no modality stem, so for a preset with more
  blocks (``base``: two per encoder stage) it is a lighter network, not the same backbone.
* ``plain``: DuPLUS's own stems + encoder + decoder with no T1 conditioning and a static 1x1x1
  conv to ``K`` outputs instead of the T2 dynamic head, i.e. exactly "the same backbone without
  conditioning"; the ratio against it is the price of FiLM + the dynamic head alone.
* ``duplus``: the library model as it is (FiLM + the T2 dynamic head, whose per-target stacks
  ``DynamicHead.run_heads`` evaluates over chunks of voxels); ``duplus_unfused`` and
  ``duplus_head_only`` are variants of it for ``bench_attribution.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet
from torch import Tensor, nn

from duplus.config import ModelConfig
from duplus.inference.sliding import predict_volume_logits
from duplus.losses.segmentation import PartialLabelDiceBCELoss
from duplus.models.duplus import DuPLUS
from duplus.models.film import FiLM
from duplus.models.registry import build_model, get_preset

TEXT_DIM = 384  # all-MiniLM-L6-v2, the default encoder


def build_duplus(preset: str, conditioning: str = "film", head_context: str = "bottleneck") -> DuPLUS:
    """A freshly initialised DuPLUS network of ``preset``."""
    cfg = ModelConfig(preset=preset, conditioning=conditioning, head_context=head_context)
    return build_model(cfg, text_dim=TEXT_DIM)


def build_dynunet(features: Sequence[int], out_channels: int, in_channels: int = 1) -> DynUNet:
    """MONAI ``DynUNet`` of the given widths (one residual block per stage)."""
    n = len(features)
    strides = [1] + [2] * (n - 1)
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3] * n,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(features),
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        res_block=True,
    )


class PlainUNet(nn.Module):
    """DuPLUS's backbone without any conditioning and with a static head ``Conv3d(8, K, 1)``.

    Shapes:
        ``image (B, 2, D, H, W)``, ``modality_index (B,)`` -> ``logits (B, K, D, H, W)``.
    """

    def __init__(self, preset: str, out_channels: int) -> None:
        super().__init__()
        donor = build_duplus(preset, conditioning="none", head_context="none")
        self.stems = donor.stems
        self.encoder = donor.encoder
        self.decoder = donor.decoder
        self.head = nn.Conv3d(self.decoder.out_channels, out_channels, kernel_size=1)

    def forward(self, image: Tensor, modality_index: Tensor) -> Tensor:
        if modality_index.numel() == 1:  # one volume's windows share its modality
            modality_index = modality_index.reshape(1).expand(image.shape[0])
        skips = self.encoder(self.stems(image, modality_index))
        return self.head(self.decoder(skips))


def unfuse_film(model: DuPLUS) -> DuPLUS:
    """A deep copy of ``model`` whose FiLM runs after the norm (``FiLM.fuse_into_norm = False``):
    the reference the library's folded FiLM replaced."""
    clone = copy.deepcopy(model)
    if not isinstance(clone.conditioner, FiLM):
        raise ValueError("unfuse_film needs a FiLM-conditioned model")
    clone.conditioner.fuse_into_norm = False
    return clone


DUPLUS_VARIANTS: dict[str, str] = {
    "duplus": "the library model: FiLM folded into the norms + dynamic head (chunked over voxels)",
    "duplus_unfused": "FiLM as a separate pass after each norm (the former library) + dynamic head",
    "duplus_head_only": "no T1 conditioning (conditioning='none') + library dynamic head",
}


def build_peers(preset: str, num_targets: int, which: Sequence[str]) -> dict[str, nn.Module]:
    """Networks named in ``which`` for ``preset``: ``dynunet``, ``plain`` or one of
    :data:`DUPLUS_VARIANTS` (the variants share the library model's initial weights)."""
    out: dict[str, nn.Module] = {}
    library: DuPLUS | None = None
    for name in which:
        if name in DUPLUS_VARIANTS and name != "duplus_head_only" and library is None:
            library = build_duplus(preset)
        if name == "duplus":
            out[name] = library
        elif name == "duplus_unfused":
            out[name] = unfuse_film(library)
        elif name == "duplus_head_only":
            out[name] = build_duplus(preset, conditioning="none")
        elif name == "dynunet":
            out[name] = build_dynunet(get_preset(preset).features, num_targets)
        elif name == "plain":
            out[name] = PlainUNet(preset, num_targets)
        else:
            raise ValueError(f"unknown network {name!r}")
    return out


def make_batch(batch: int, patch: int, num_targets: int, seed: int = 0) -> dict[str, Tensor]:
    """A synthetic training batch: CT image ``(B, 2, P, P, P)`` (channel 1 zero), binary targets
    ``(B, K, P, P, P)`` (spheres), all targets supervised, random prompt embeddings."""
    g = torch.Generator().manual_seed(seed)
    image = torch.zeros(batch, 2, patch, patch, patch)
    image[:, 0] = torch.randn(batch, patch, patch, patch, generator=g)
    grid = torch.stack(torch.meshgrid(*[torch.arange(patch, dtype=torch.float32)] * 3, indexing="ij"))
    label = torch.zeros(batch, num_targets, patch, patch, patch)
    for b in range(batch):
        for k in range(num_targets):
            centre = torch.rand(3, 1, 1, 1, generator=g) * patch
            radius = patch * (0.1 + 0.15 * float(torch.rand(1, generator=g)))
            label[b, k] = (((grid - centre) ** 2).sum(0) < radius**2).float()
    t1 = torch.nn.functional.normalize(torch.randn(batch, TEXT_DIM, generator=g), dim=-1)
    t2 = torch.nn.functional.normalize(torch.randn(batch, num_targets, TEXT_DIM, generator=g), dim=-1)
    return {
        "image": image,
        "label": label,
        "label_mask": torch.ones(batch, num_targets, dtype=torch.bool),
        "modality_index": torch.zeros(batch, dtype=torch.long),  # CT
        "t1": t1,
        "t2": t2,
    }


def forward_for(name: str, net: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The logits of ``net`` (named as in :func:`build_peers`) for ``batch``."""
    if name.startswith("duplus"):
        return net(batch["image"], batch["modality_index"], batch["t1"], batch["t2"])
    if name == "dynunet":
        return net(batch["image"][:, :1])
    return net(batch["image"], batch["modality_index"])


def make_train_step(
    name: str, net: nn.Module, batch: dict[str, Tensor], lr: float = 1e-3
) -> Callable[[], float]:
    """One optimisation step of ``net`` on ``batch`` (AdamW, partial-label Dice + BCE), as a
    zero-argument callable returning the loss."""
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    loss_fn = PartialLabelDiceBCELoss(bce_weight=0.5)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        logits = forward_for(name, net, batch)
        loss = loss_fn(logits.float(), batch["label"], batch["label_mask"])
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def make_volume_predict(
    name: str,
    net: nn.Module,
    image: Tensor,
    t1: Tensor,
    t2: Tensor,
    roi: Sequence[int],
    overlap: float,
    sw_batch_size: int,
) -> Callable[[], Tensor]:
    """Whole-volume Gaussian sliding-window logits of ``net`` for ``image (1, 2, D, H, W)``, as a
    zero-argument callable. DuPLUS takes the library path: ``condition`` once per volume, then
    :func:`duplus.inference.sliding.predict_volume_logits` (``forward_conditioned`` per window)."""
    net.eval()
    modality_index = torch.zeros(1, dtype=torch.long)
    roi = tuple(int(r) for r in roi)
    kw: dict[str, Any] = {
        "roi_size": roi,
        "sw_batch_size": sw_batch_size,
        "overlap": overlap,
        "mode": "gaussian",
    }

    if name.startswith("duplus"):

        def predict() -> Tensor:
            with torch.no_grad():
                cond = net.condition(modality_index, t1, t2)  # type: ignore[operator]
                return predict_volume_logits(
                    net, image, cond, roi, overlap=overlap, sw_batch_size=sw_batch_size
                )  # type: ignore[arg-type]

    elif name == "dynunet":
        image1 = image[:, :1].contiguous()

        def predict() -> Tensor:
            with torch.no_grad():
                return sliding_window_inference(image1, predictor=net, **kw)  # type: ignore[return-value]

    else:

        def predict() -> Tensor:
            with torch.no_grad():
                return sliding_window_inference(image, predictor=net, modality_index=modality_index, **kw)  # type: ignore[return-value]

    return predict


def synthetic_ct_volume(shape: Sequence[int], seed: int = 0) -> Tensor:
    """A normalised CT-like volume ``(1, 2, D, H, W)`` (values in ``[-1, 1]``, channel 1 zero): noise
    in an elliptic body filling most of the field of view. The network's cost does not depend on
    the content; sliding-window air skipping does, see ``bench_volume.py``."""
    g = torch.Generator().manual_seed(seed)
    d, h, w = (int(s) for s in shape)
    x = torch.full((1, 2, d, h, w), -1.0)
    x[:, 1] = 0.0
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    body = (yy / 0.7) ** 2 + (xx / 0.9) ** 2 <= 1.0
    x[0, 0, :, body] = (0.1 * torch.randn(d, int(body.sum()), generator=g)).clamp(-1, 1)
    return x


__all__ = [
    "DUPLUS_VARIANTS",
    "TEXT_DIM",
    "PlainUNet",
    "build_duplus",
    "build_dynunet",
    "build_peers",
    "forward_for",
    "make_batch",
    "make_train_step",
    "make_volume_predict",
    "synthetic_ct_volume",
    "unfuse_film",
]
