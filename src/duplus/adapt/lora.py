"""A thin layer over peft's LoRA: apply, merge, and save/load adapter-only weights.

Adapters are injected *in place* with :func:`peft.inject_adapter_in_model`, so the adapted module
keeps its class and methods (a ``BertModel`` stays a ``BertModel``; a DuPLUS network keeps
``extract_features``) and works the same for Hugging Face text encoders and for plain
``nn.Module`` networks with ``Linear``/``Conv1d/2d/3d`` layers. Every non-LoRA parameter of the
adapted module is frozen.

Target modules are always resolved here to fully qualified module names before peft sees them, so
that a wrong name fails with a clear message and, on a full ``CLIPModel``, attention/MLP layers of
the vision tower are never touched (their names are the same as the text tower's).
"""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from duplus.checkpoint import load_torch_file, save_torch_file
from duplus.errors import CheckpointError

__all__ = [
    "default_target_modules",
    "resolve_target_modules",
    "apply_lora",
    "has_lora",
    "lora_state_dict",
    "save_adapter",
    "load_adapter",
    "merge_lora",
    "count_trainable",
]

logger = logging.getLogger(__name__)

ADAPTER_FORMAT = "duplus-lora"
ADAPTER_VERSION = 1
_CONFIG_ATTR = "duplus_lora_config"

BERT_TARGETS = ("query", "key", "value", "dense")
CLIP_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LORA_KEY = re.compile(r"(^|\.)lora_(A|B|embedding_A|embedding_B|magnitude_vector)(\.|$)")


def _supported(module: nn.Module) -> bool:
    """Linear, and plain convolutions: peft 0.21 drops dilation and padding_mode in the adapter
    branch, and does not adapt grouped or transposed convolutions."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return bool(
            isinstance(module, _SUPPORTED)
            and module.groups == 1
            and not module.transposed
            and all(d == 1 for d in tuple(module.dilation))  # type: ignore[arg-type]
            and module.padding_mode == "zeros"
        )
    return isinstance(module, nn.Linear)


def _text_tower_prefix(model: nn.Module) -> str | None:
    """``"text_model"`` for a full CLIP-like model with both towers, else ``None``."""
    children = dict(model.named_children())
    if "text_model" in children and ("vision_model" in children or "visual_projection" in children):
        return "text_model"
    return None


def default_target_modules(model: nn.Module) -> list[str]:
    """Fully qualified names of the layers LoRA should adapt by default.

    * BERT-like encoders: ``query``, ``key``, ``value`` and the ``dense`` projections of the
      encoder layers (the unused ``pooler`` is left alone).
    * CLIP text towers: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, ``fc1``, ``fc2``; on a
      full ``CLIPModel`` only those under ``text_model`` (the vision tower is never adapted).
    * Any other module: every ``Linear`` and ungrouped ``Conv1d/2d/3d`` layer.
    """
    names = [n for n, m in model.named_modules() if n and _supported(m)]
    leaf = {n: n.rsplit(".", 1)[-1] for n in names}
    clip = [n for n in names if leaf[n] in CLIP_TARGETS]
    if clip:
        prefix = _text_tower_prefix(model)
        if prefix is not None:
            clip = [n for n in clip if n.startswith(prefix + ".")]
        return clip
    bert = [n for n in names if leaf[n] in BERT_TARGETS and not n.startswith("pooler")]
    if any(leaf[n] in ("query", "value") for n in bert):
        return bert
    return names


def resolve_target_modules(model: nn.Module, target_modules: Sequence[str] | str | None) -> list[str]:
    """Turn short names (``["query", "value"]``), full names or a regex into full module names.

    A string is a regular expression matched in full against qualified module names (peft's rule;
    matches LoRA cannot adapt, such as container modules, are skipped); a list entry matches a module whose name equals it or ends with ``"." + entry``. On a full
    CLIP model, matches are restricted to the text tower. Raises ``ValueError`` when an entry
    matches nothing or a matched layer is of a type LoRA cannot adapt.
    """
    if target_modules is None:
        resolved = default_target_modules(model)
    else:
        all_names = [n for n, _ in model.named_modules() if n]
        modules = dict(model.named_modules())
        if isinstance(target_modules, str):
            pattern = re.compile(target_modules)
            resolved = [n for n in all_names if pattern.fullmatch(n) and _supported(modules[n])]
            if not resolved:
                raise ValueError(f"LoRA target regex {target_modules!r} matches no module")
        else:
            resolved = []
            for entry in target_modules:
                hits = [n for n in all_names if n == entry or n.endswith("." + entry)]
                if not hits:
                    raise ValueError(
                        f"LoRA target module {entry!r} matches no module of {type(model).__name__}"
                    )
                resolved.extend(h for h in hits if h not in resolved)
            order = {n: i for i, n in enumerate(all_names)}
            resolved.sort(key=order.__getitem__)
        prefix = _text_tower_prefix(model)
        if prefix is not None:
            resolved = [n for n in resolved if n.startswith(prefix + ".")]
        bad = [n for n in resolved if not _supported(modules[n])]
        if bad:
            raise ValueError(
                f"LoRA cannot adapt {bad[0]} ({type(modules[bad[0]]).__name__}); "
                "supported: Linear and ungrouped, undilated Conv1d/2d/3d with zero padding"
            )
    if not resolved:
        raise ValueError(f"no LoRA target module found in {type(model).__name__}")
    return resolved


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` contains LoRA layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def apply_lora(
    module: nn.Module,
    *,
    r: int = 32,
    alpha: float = 128,
    dropout: float = 0.2,
    target_modules: Sequence[str] | str | None = None,
) -> nn.Module:
    """Inject LoRA adapters into ``module`` in place and freeze everything else in it.

    Args:
        module: any ``nn.Module`` (a Hugging Face encoder, a DuPLUS backbone or head).
        r: adapter rank.
        alpha: LoRA alpha; the update is scaled by ``alpha / r``.
        dropout: dropout on the adapter input (training mode only).
        target_modules: see :func:`resolve_target_modules`; ``None`` uses
            :func:`default_target_modules`.

    Returns:
        The same ``module`` object, now with LoRA layers; only their weights require grad.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(module):
        raise ValueError(f"{type(module).__name__} already has LoRA adapters; merge or reload the base first")
    targets = resolve_target_modules(module, target_modules)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int, uses it as a float scale
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
    )
    from peft.tuners.tuners_utils import BaseTunerLayer

    inject_adapter_in_model(config, module)
    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):  # new adapter layers follow their base layer's mode
            layer.train(layer.get_base_layer().training)
    _fuse_conv_adapters(module)
    for name, p in module.named_parameters():
        p.requires_grad_(_LORA_KEY.search(name) is not None)
    setattr(
        module,
        _CONFIG_ATTR,
        {"r": int(r), "alpha": float(alpha), "dropout": float(dropout), "target_modules": list(targets)},
    )
    trainable, total = count_trainable(module)
    logger.info(
        "LoRA r=%d alpha=%g on %d layers of %s: %d of %d parameters trainable",
        r,
        alpha,
        len(targets),
        type(module).__name__,
        trainable,
        total,
    )
    return module


def _fuse_conv_adapters(module: nn.Module) -> None:
    """Run each LoRA convolution as one convolution with the weight ``W + scaling * B @ A``.

    peft computes ``conv(x, W) + scaling * lora_B(lora_A(x))``: a second convolution of the input
    with ``A``'s full kernel, whose rank (8) matches the 8-16 channels of a small 3D U-Net's fine
    levels, so the adapter costs about as much as the layer it adapts, forward and backward. With
    the update folded into the weight first (a few kilobytes of arithmetic), autograd reaches
    ``A`` and ``B`` through the weight gradient of the one convolution. Same function, same
    parameters and state-dict keys, and faster (docs/EXPERIMENTS.md).
    Layers in training mode with adapter dropout keep peft's forward (the dropout acts on the
    adapter's input only), as do merged, disabled, mixed-batch, grouped and DoRA calls.
    """
    from peft.tuners.lora.layer import _ConvNd

    for layer in module.modules():
        if isinstance(layer, _ConvNd):  # an instance attribute: deepcopy rebinds it to the copy
            layer.forward = types.MethodType(_fused_conv_forward, layer)  # type: ignore[method-assign]


def _fused_conv_forward(layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The ``forward`` of a peft LoRA convolution, see :func:`_fuse_conv_adapters`."""
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    dropout = layer.training and any(
        not isinstance(layer.lora_dropout[a], nn.Identity) and getattr(layer.lora_dropout[a], "p", 1.0) > 0
        for a in active
    )
    base: Any = layer.get_base_layer()
    variant = any(a in getattr(layer, "lora_variant", {}) for a in active)  # DoRA and the like
    if args or kwargs or layer.disable_adapters or layer.merged or dropout or variant or base.groups != 1:
        return type(layer).forward(layer, x, *args, **kwargs)
    weight = base.weight  # no active adapter: the base layer's own weight
    for adapter in active:
        weight = weight + _delta_weight(layer, adapter).to(weight.dtype)
    return base._conv_forward(x, weight, base.bias)


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only, detached copies on the CPU, keyed by their names in ``module``."""
    return {
        k: v.detach().to("cpu").clone().contiguous()
        for k, v in module.state_dict().items()
        if _LORA_KEY.search(k) is not None
    }


def save_adapter(module: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Save the LoRA weights, the LoRA settings and JSON-able ``meta`` to ``path`` atomically.

    The file holds only tensors and plain Python values, so it loads with ``weights_only=True``.
    """
    config = getattr(module, _CONFIG_ATTR, None)
    if config is None or not has_lora(module):
        raise ValueError(f"{type(module).__name__} has no LoRA adapters applied by duplus.adapt.lora")
    payload = {"lora": dict(config), "meta": dict(meta or {}), "state_dict": lora_state_dict(module)}
    save_torch_file(path, ADAPTER_FORMAT, ADAPTER_VERSION, payload)


def read_adapter(path: str | Path) -> dict[str, Any]:
    """Read and check an adapter file written by :func:`save_adapter`."""
    return load_torch_file(path, ADAPTER_FORMAT, ADAPTER_VERSION, what="LoRA adapter file")


def load_adapter(module: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load an adapter saved by :func:`save_adapter` into ``module`` (in place).

    When ``module`` has no adapters yet they are first injected with the saved settings. The
    saved weights must cover exactly the module's adapter weights.

    Returns:
        The ``meta`` dictionary stored with the adapter.
    """
    payload = read_adapter(path)
    lora = payload["lora"]
    if not has_lora(module):
        try:
            apply_lora(
                module,
                r=int(lora["r"]),
                alpha=float(lora["alpha"]),
                dropout=float(lora["dropout"]),
                target_modules=list(lora["target_modules"]),
            )
        except ValueError as exc:
            raise CheckpointError(path, f"adapter does not fit {type(module).__name__}: {exc}") from exc
    current = lora_state_dict(module)
    saved = payload["state_dict"]
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(path, f"adapter weights do not match the module ({detail})")
    for k, v in saved.items():
        if tuple(v.shape) != tuple(current[k].shape):
            raise CheckpointError(
                path, f"adapter weight {k} has shape {tuple(v.shape)}, expected {tuple(current[k].shape)}"
            )
    module.load_state_dict(saved, strict=False)
    return dict(payload.get("meta", {}))


def _delta_weight(layer: Any, adapter: str) -> torch.Tensor:
    """``scaling * B @ A`` for a LoRA Linear or Conv layer.

    Computed here rather than by peft's ``merge()``, which fails on 1x1x1 (and ``(1, 1, k)``)
    Conv3d kernels (huggingface/peft#3768). For a convolution, ``lora_A`` has the
    base kernel and ``lora_B`` is 1x1, so their composition is a channel mix of ``A``'s kernel.
    """
    a = layer.lora_A[adapter].weight.float()
    b = layer.lora_B[adapter].weight.float()
    scaling = float(layer.scaling[adapter])
    if a.ndim == 2:  # Linear
        return (b @ a) * scaling
    return torch.einsum("or,ri...->oi...", b.flatten(1), a) * scaling


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base layer and remove the adapters (in place).

    The returned module (the same object) has the original architecture and parameter names and
    computes the same function as the adapted one in eval mode.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        raise ValueError(f"{type(module).__name__} has no LoRA adapters to merge")
    for name, layer in layers:
        base: Any = layer.get_base_layer()
        if not layer.merged:
            with torch.no_grad():
                for adapter in layer.active_adapters:
                    base.weight += _delta_weight(layer, adapter).to(base.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, base)
    for attr in (_CONFIG_ATTR, "peft_config"):
        if attr in module.__dict__:
            delattr(module, attr)
    return module


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``module``."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
