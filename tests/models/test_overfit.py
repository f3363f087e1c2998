"""A tiny DuPLUS overfits two phantom CT cases: the whole path (prompts -> MiniLM -> FiLM -> head) learns."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from duplus.config import ModelConfig
from duplus.data.phantoms import make_phantom_case
from duplus.models import build_model
from duplus.text import EmbeddingCache, TextEncoder
from duplus.vocab import modality_index, t1_prompt

logger = logging.getLogger(__name__)

TARGETS = ("liver", "spleen", "aorta", "left kidney")
SIZE = 32  # 96 mm field of view at 3 mm
MAX_STEPS = 300
GOAL_MEAN = 0.9  # mean Dice over the 2 cases x 4 targets
GOAL_MIN = 0.8  # every single (case, target) Dice; the liver, whose HU matches muscle, is last to fit


def _normalise_ct(hu: np.ndarray) -> np.ndarray:
    """CT window [-991, 500] HU scaled to [-1, 1] (the authors' preprocessing)."""
    return (np.clip(hu, -991.0, 500.0) + 991.0) / 1491.0 * 2.0 - 1.0


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for seed in (0, 1):
        case = make_phantom_case(
            seed, kind="abdomen", modality="CT", shape=(SIZE,) * 3, spacing=(96.0 / SIZE,) * 3
        )
        image = np.zeros((2, SIZE, SIZE, SIZE), np.float32)
        image[0] = _normalise_ct(case.image)
        value = {name: v for v, name in case.label_names.items()}
        images.append(image)
        labels.append(np.stack([case.label == value[t] for t in TARGETS]).astype(np.float32))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = (logits > 0).float()
    return 2 * (pred * target).sum((2, 3, 4)) / (pred.sum((2, 3, 4)) + target.sum((2, 3, 4))).clamp_min(1)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-target soft Dice + 0.5 BCE (the authors' loss)."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((2, 3, 4))
    dice = 1 - (2 * inter + 1) / (prob.sum((2, 3, 4)) + target.sum((2, 3, 4)) + 1)
    return dice.mean() + 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


@pytest.mark.slow
def test_tiny_model_overfits_two_phantom_cases() -> None:
    torch.manual_seed(0)
    image, label = _batch()
    assert (label.sum((2, 3, 4)) > 50).all()  # every target is present in both cases
    cache = EmbeddingCache(TextEncoder("default"))
    t1 = cache.get([t1_prompt("CT", "abdomen")]).expand(2, -1)
    t2 = cache.get(list(TARGETS)).unsqueeze(0).expand(2, -1, -1)
    mods = torch.full((2,), modality_index("CT"))
    model = build_model(ModelConfig(preset="tiny"), cache.encoder.embed_dim)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _step in range(MAX_STEPS):
        logits = model(image, mods, t1, t2)
        dice = _dice(logits.detach(), label)
        if dice.mean() > GOAL_MEAN + 0.02 and dice.min() > GOAL_MIN + 0.02:
            break
        opt.zero_grad()
        _loss(logits, label).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        dice = _dice(model(image, mods, t1, t2), label)
    msg = f"Dice per case and target after {_step} steps: {dice.tolist()}"
    logger.info(msg)
    assert dice.mean() > GOAL_MEAN and dice.min() > GOAL_MIN, msg
    assert cache.encoder.forward_count == 2  # T1 once, the four T2 prompts once
