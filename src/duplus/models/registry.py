"""Named size presets (registered functions, timm style) and :func:`build_model`.

=========  ===========================  =====================  ==========================
preset     widths                       res. blocks enc / dec  use
=========  ===========================  =====================  ==========================
``tiny``   8, 16, 32, 64                1 / 1                  tests and the CPU demo
``small``  16, 32, 64, 128, 256         1 / 1                  quick experiments
``base``   32, 64, 128, 256, 320        2 / 1                  the paper's backbone
=========  ===========================  =====================  ==========================

All presets use a 3-layer ``8 -> 8 -> 8 -> 1`` dynamic head over an 8-channel decoder output and a
256-wide projection of the text and of the pooled bottleneck, as in the authors' code. A new preset
is one decorated function returning a :class:`ModelPreset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from duplus.config import ModelConfig
from duplus.errors import ConfigError
from duplus.limits import DEFAULT_MAX_PARAMETERS
from duplus.models.blocks import init_weights
from duplus.models.decoder import UNetDecoder
from duplus.models.duplus import DuPLUS
from duplus.models.dynamic_head import DynamicHead
from duplus.models.encoder import UNetEncoder
from duplus.models.film import build_conditioner
from duplus.models.stems import ModalityStems
from duplus.vocab import POSITION_CHANNELS

HEAD_CONTEXTS = ("bottleneck", "none")
MAX_WIDTH = 4096
MAX_TEXT_DIM = 16384


@dataclass(frozen=True)
class ModelPreset:
    """The size of a DuPLUS network.

    Attributes:
        features: widths of the U-Net stages, finest first (``len - 1`` downsamplings).
        encoder_blocks: residual blocks per encoder stage.
        decoder_blocks: residual blocks per decoder stage.
        head_channels: channels of the decoder's output (the dynamic head's input).
        head_hidden: hidden width of the dynamic conv stack.
        head_layers: layers of the dynamic conv stack.
        embed_dim: projection width of text and pooled image features in the head.
        controller_hidden: 0 for a linear controller, else its hidden width.
        conditioner_hidden: hidden width of the FiLM / gate MLP.
        act: activation (``leakyrelu`` | ``elu``).
    """

    features: tuple[int, ...]
    encoder_blocks: int = 1
    decoder_blocks: int = 1
    head_channels: int = 8
    head_hidden: int = 8
    head_layers: int = 3
    embed_dim: int = 256
    controller_hidden: int = 0
    conditioner_hidden: int = 256
    act: str = "leakyrelu"


_PRESETS: dict[str, Callable[[], ModelPreset]] = {}


def register_preset(fn: Callable[[], ModelPreset]) -> Callable[[], ModelPreset]:
    """Decorator: register ``fn`` as the preset named ``fn.__name__``."""
    _PRESETS[fn.__name__] = fn
    return fn


@register_preset
def tiny() -> ModelPreset:
    """~0.3 M backbone parameters: trains in minutes on a CPU at 48^3-64^3."""
    return ModelPreset(features=(8, 16, 32, 64), conditioner_hidden=128)


@register_preset
def small() -> ModelPreset:
    """Four downsamplings, light widths."""
    return ModelPreset(features=(16, 32, 64, 128, 256))


@register_preset
def base() -> ModelPreset:
    """The authors' backbone: widths 32-320, four downsamplings, two residual blocks per encoder stage."""
    return ModelPreset(features=(32, 64, 128, 256, 320), encoder_blocks=2, decoder_blocks=1)


def list_presets() -> list[str]:
    """Names of the registered presets."""
    return sorted(_PRESETS)


def get_preset(name: str) -> ModelPreset:
    """The preset registered as ``name``."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ConfigError(
            f"model.preset: unknown preset {name!r}; available: {', '.join(list_presets())}"
        ) from None


def estimate_parameters(preset: ModelPreset) -> int:
    """Roughly the backbone's parameter count (3^3 convolutions of each stage), from the widths alone,
    so an absurd description is refused before anything is allocated."""
    blocks = 2 * (preset.encoder_blocks + preset.decoder_blocks) + 2
    return sum(27 * f * f * blocks for f in preset.features)


def check_model_size(preset: ModelPreset, text_dim: int) -> None:
    """Refuse widths, depths or a text size that no DuPLUS model has (they come from configs and
    from checkpoints, which may be damaged or hostile).

    Raises:
        ConfigError: naming the value and the bound.
    """
    feats = preset.features
    if not 2 <= len(feats) <= 8 or any(not 1 <= f <= MAX_WIDTH for f in feats):
        raise ConfigError(f"model.features {list(feats)}: expected 2-8 widths between 1 and {MAX_WIDTH}")
    if not 1 <= text_dim <= MAX_TEXT_DIM:
        raise ConfigError(f"text_dim {text_dim}: expected 1-{MAX_TEXT_DIM}")
    n = estimate_parameters(preset)
    if n > DEFAULT_MAX_PARAMETERS:
        raise ConfigError(
            f"model.features {list(feats)}: about {n:,} parameters, more than the limit of {DEFAULT_MAX_PARAMETERS:,}"
        )


def build_model(cfg: ModelConfig, text_dim: int) -> DuPLUS:
    """Build the DuPLUS network described by ``cfg`` for prompt embeddings of size ``text_dim``.

    ``cfg.features`` overrides the preset's widths; an optional attribute ``act`` on ``cfg`` is
    honoured when present.
    """
    preset = get_preset(cfg.preset)
    if cfg.features:
        preset = replace(preset, features=tuple(int(f) for f in cfg.features))
    check_model_size(preset, text_dim)
    act = getattr(cfg, "act", None) or preset.act
    if cfg.head_context not in HEAD_CONTEXTS:
        raise ConfigError(
            f"model.head_context: unknown value {cfg.head_context!r}; expected one of {', '.join(HEAD_CONTEXTS)}"
        )
    stems = ModalityStems(3, preset.features[0], act=act, single_stem=cfg.single_stem)
    encoder = UNetEncoder(3, preset.features, num_blocks=preset.encoder_blocks, act=act)
    decoder = UNetDecoder(3, preset.features, preset.head_channels, num_blocks=preset.decoder_blocks, act=act)
    for part in (stems, encoder, decoder):
        init_weights(part)
    conditioner = build_conditioner(
        cfg.conditioning,
        text_dim,
        encoder.block_channels + decoder.block_channels,
        hidden_dim=preset.conditioner_hidden,
    )
    head = DynamicHead(
        text_dim,
        in_channels=preset.head_channels + (POSITION_CHANNELS if cfg.head_position else 0),
        bottleneck_channels=preset.features[-1] if cfg.head_context == "bottleneck" else None,
        embed_dim=preset.embed_dim,
        hidden_channels=preset.head_hidden,
        num_layers=preset.head_layers,
        controller_hidden=preset.controller_hidden,
    )
    return DuPLUS(
        stems,
        encoder,
        decoder,
        conditioner,
        head,
        single_prompt=cfg.single_prompt,
        head_position=cfg.head_position,
    )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_model_parameters(model: DuPLUS) -> dict[str, int]:
    """Parameter counts by part: ``stems``, ``backbone`` (encoder + decoder), ``conditioner``,
    ``head``, and ``total``."""
    parts = {
        "stems": count_parameters(model.stems),
        "backbone": count_parameters(model.encoder) + count_parameters(model.decoder),
        "conditioner": count_parameters(model.conditioner),
        "head": count_parameters(model.head),
    }
    parts["total"] = count_parameters(model)
    return parts


__all__ = [
    "ModelPreset",
    "build_model",
    "count_model_parameters",
    "count_parameters",
    "get_preset",
    "list_presets",
    "register_preset",
]
