"""Size presets: every preset builds and runs; parameter counts are in the expected ranges."""

from __future__ import annotations

import logging

import pytest
import torch

from duplus.config import ModelConfig
from duplus.errors import ConfigError, InputError
from duplus.models import build_model, count_model_parameters, count_parameters, get_preset, list_presets

logger = logging.getLogger(__name__)


def test_presets_registered() -> None:
    assert {"tiny", "small", "base"} <= set(list_presets())
    assert get_preset("base").features == (32, 64, 128, 256, 320)


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_every_preset_builds_with_expected_size(preset: str) -> None:
    model = build_model(ModelConfig(preset=preset), text_dim=32)
    counts = count_model_parameters(model)
    logger.info("%s parameters: %s", preset, counts)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert counts["head"] > 0 and counts["conditioner"] > 0
    bounds = {"tiny": (1e5, 1e6), "small": (2e6, 1.5e7), "base": (1e7, 4e7)}[preset]
    assert bounds[0] < counts["backbone"] < bounds[1]
    if preset == "base":  # the authors report ~19M; their encoder alone is that size
        assert 1.5e7 < count_parameters(model.encoder) < 2.2e7


def test_small_preset_forward_runs() -> None:
    model = build_model(ModelConfig(preset="small"), text_dim=16).eval()
    with torch.no_grad():
        out = model(
            torch.zeros(1, 2, 32, 16, 16), torch.tensor([0]), torch.zeros(1, 16), torch.zeros(1, 2, 16)
        )
    assert out.shape == (1, 2, 32, 16, 16)
    assert model.size_divisor == 16
    with pytest.raises(InputError, match="too small"):
        model(torch.zeros(1, 2, 16, 16, 16), torch.tensor([0]), torch.zeros(1, 16), torch.zeros(1, 2, 16))


def test_config_options() -> None:
    model = build_model(ModelConfig(preset="tiny", features=[4, 8, 16]), text_dim=8)
    assert model.encoder.features == (4, 8, 16) and model.size_divisor == 4
    assert not build_model(ModelConfig(head_context="none"), 8).head.uses_image_context
    assert build_model(ModelConfig(single_prompt=True), 8).single_prompt
    with pytest.raises(ConfigError, match="preset"):
        build_model(ModelConfig(preset="huge"), 8)
    with pytest.raises(ConfigError, match="head_context"):
        build_model(ModelConfig(head_context="global"), 8)
    with pytest.raises(ConfigError, match="conditioning"):
        build_model(ModelConfig(conditioning="cross-attention"), 8)


def test_count_parameters_trainable_only() -> None:
    model = build_model(ModelConfig(), 8)
    total = count_parameters(model)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - count_parameters(model.encoder)
