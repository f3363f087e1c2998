"""End to end with the real (frozen) MiniLM: gradients reach the FiLM MLP and the controller only."""

from __future__ import annotations

import pytest
import torch

from duplus.config import ModelConfig
from duplus.models import build_model
from duplus.text import EmbeddingCache, TextEncoder, t2_prompts
from duplus.vocab import modality_index, t1_prompt


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder("default")


@pytest.mark.parametrize("conditioning", ["film", "gate"])
def test_gradients_reach_conditioner_and_controller_not_text_encoder(
    encoder: TextEncoder, conditioning: str
) -> None:
    cache = EmbeddingCache(encoder)
    model = build_model(ModelConfig(preset="tiny", conditioning=conditioning), encoder.embed_dim)
    t1 = cache.get([t1_prompt("CT", "abdomen")])  # (1, E)
    t2 = cache.get([t2_prompts("liver")[0], t2_prompts("spleen")[1]]).unsqueeze(0)  # (1, 2, E)
    image = torch.randn(1, 2, 32, 32, 32)
    image[:, 1] = 0
    target = (torch.rand(1, 2, 32, 32, 32) > 0.7).float()
    logits = model(image, torch.tensor([modality_index("CT")]), t1, t2)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()

    # the conditioner's (zero-initialised) output layer and the whole controller get gradients
    assert model.conditioner.out.weight.grad is not None
    assert model.conditioner.out.weight.grad.abs().sum() > 0
    for name in ("text_proj", "image_proj", "controller_text", "controller_image"):
        grads = [p.grad for p in getattr(model.head, name).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    # every backbone parameter is trained
    missing = [n for n, p in model.named_parameters() if p.grad is None and not n.startswith("stems.")]
    assert not missing
    # the frozen text encoder is untouched, and it ran once per distinct prompt only
    assert all(p.grad is None for p in encoder.parameters())
    assert not t1.requires_grad and not t2.requires_grad
    assert len(cache) == 3 and cache.misses == 3
