"""Cached frozen-layer states of the EHR text encoder: the same embeddings as the full forward."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from duplus.adapt.lora import apply_lora
from duplus.prognosis.text_states import (
    compute_text_states,
    encode_text_states,
    frozen_layer_count,
    has_dropout,
)

TEXTS = [
    "Age: 62 years. Sex: male. Tobacco: yes. HPV status: positive.",
    "Age: 48 years. Sex: female.",
    "Age: 71 years. Sex: male. Weight: 92.5 kg. Tobacco: unknown. Alcohol: no. HPV status: negative.",
    "Sex: female. Chemotherapy: yes.",
    "Age: 55 years. Sex: female. Weight: unknown. Performance status: 1. Surgery: no.",
]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DUPLUS_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoders():
    from duplus.text.encoder import TextEncoder

    return {
        pooling: TextEncoder("default", pooling=pooling, max_length=64)
        for pooling in ("mean", "cls", "pooler")
    }


def _adapted(base, targets: str | None):
    """A copy of ``base`` with LoRA on ``targets`` (``None`` = frozen), adapters made non-zero."""
    enc = copy.deepcopy(base)
    if targets is not None:
        apply_lora(enc.model, r=4, alpha=8.0, dropout=0.0, target_modules=targets)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in enc.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    enc.eval()
    return enc


@pytest.mark.parametrize(
    "targets, frozen",
    [
        (r"encoder\.layer\.[45]\..*", 4),  # the last two layers
        (r"encoder\.layer\.5\..*", 5),  # the demo's adapter: every linear of the last layer
        (r"encoder\.layer\.5\.attention\.self\.(query|value)", 5),
        (None, 6),  # frozen encoder: the states are the last hidden states, only pooling is left
        (r"encoder\.layer\.\d+\.attention\.self\.(query|value)", 0),  # every layer: nothing to skip
    ],
)
@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_cached_states_equal_the_full_forward(encoders, targets, frozen: int, pooling: str) -> None:
    enc = _adapted(encoders[pooling], targets)
    assert frozen_layer_count(enc) == frozen
    with torch.no_grad():
        full = enc.encode(TEXTS)
        states = compute_text_states(enc, TEXTS)
        assert states.layer == frozen and states.hidden.shape[:2] == states.token_mask.shape
        cached = encode_text_states(enc, states)
        # a subset is padded to the cohort's longest text, then trimmed to its own
        rows = np.array([3, 1])
        part = encode_text_states(enc, states.subset(rows))
        part_full = enc.encode([TEXTS[i] for i in rows])
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(part, part_full, atol=1e-5, rtol=1e-4)
    assert enc.training is False  # the mode is restored


def test_lora_gradients_equal_the_full_forward(encoders) -> None:
    enc = _adapted(encoders["mean"], r"encoder\.layer\.[45]\..*")
    weights = torch.linspace(-1.0, 1.0, enc.embed_dim)
    lora = {n: p for n, p in enc.model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)

    def grads(embed) -> dict[str, torch.Tensor]:
        enc.model.zero_grad(set_to_none=True)
        (embed() @ weights).square().sum().backward()
        return {n: p.grad.clone() for n, p in lora.items()}

    states = compute_text_states(enc, TEXTS)
    assert not states.hidden.requires_grad
    full = grads(lambda: enc.encode(TEXTS))
    cached = grads(lambda: encode_text_states(enc, states))
    assert any(g.abs().sum() > 0 for g in full.values())
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-5, rtol=1e-4)


def test_bad_requests(encoders) -> None:
    enc = _adapted(encoders["mean"], r"encoder\.layer\.[45]\..*")
    with pytest.raises(ValueError, match="frozen layers"):
        compute_text_states(enc, TEXTS, layer=5)  # layer 4 trains
    states = compute_text_states(enc, TEXTS, layer=2)  # fewer layers skipped is fine
    with torch.no_grad():
        torch.testing.assert_close(encode_text_states(enc, states), enc.encode(TEXTS), atol=1e-5, rtol=1e-4)


def test_fit_refuses_states_of_other_texts(encoders) -> None:
    from duplus.prognosis.config import PrognosisConfig
    from duplus.prognosis.model import build_prognosis_model, fit_prognosis

    cfg = PrognosisConfig(mode="ehr", epochs=1, lora_r=4, lora_targets=r"encoder\.layer\.5\..*")
    model = build_prognosis_model(cfg, text_encoder=copy.deepcopy(encoders["mean"]))
    assert model.text_frozen_layers == 5
    states = compute_text_states(model.text_encoder, TEXTS[::-1])
    with pytest.raises(ValueError, match="other texts"):
        fit_prognosis(model, TEXTS, None, np.arange(5.0) + 1, np.array([1, 0, 1, 1, 0]), text_states=states)


def test_dropout_draw_equals_the_full_forward_in_train_mode(encoders) -> None:
    """A draw of the frozen layers, then the adapted layers, use the random stream as the full
    forward does: with the same seed, the same training-mode embeddings."""
    enc = _adapted(encoders["mean"], r"encoder\.layer\.[45]\..*")
    assert has_dropout(enc, 4)
    enc.train()
    torch.manual_seed(3)
    with torch.no_grad():
        full = enc.encode(TEXTS)
        torch.manual_seed(3)
        states = compute_text_states(enc, TEXTS, dropout_draws=1)
        assert enc.training  # the mode is restored
        drawn = encode_text_states(enc, states.draw(0))
        torch.testing.assert_close(drawn, full, atol=1e-5, rtol=1e-4)
        two = compute_text_states(enc, TEXTS, dropout_draws=2)
        assert two.num_draws == 2 and two.draws is not None
        assert not torch.equal(two.draws[0], two.draws[1])  # fresh dropout per draw
        torch.testing.assert_close(two.hidden, states.hidden)  # the clean states have none
        sub = two.subset([4, 0])
        assert sub.draws is not None and torch.equal(sub.draws[1, 0], two.draws[1, 4])
        assert two.subset([4, 0], with_draws=False).draws is None
        assert torch.equal(two.draw(3).hidden, two.draws[1])  # draws cycle


def test_dropout_detection_and_draw_budget(encoders) -> None:
    from duplus.prognosis.config import PrognosisConfig
    from duplus.prognosis.model import build_prognosis_model, text_dropout_draws

    cfg = PrognosisConfig(mode="ehr", epochs=7, lora_r=4, lora_targets=r"encoder\.layer\.[45]\..*")
    model = build_prognosis_model(cfg, text_encoder=copy.deepcopy(encoders["mean"]))
    assert text_dropout_draws(model) == 7  # one per epoch
    enc = model.text_encoder
    states = compute_text_states(enc, TEXTS, dropout_draws=3)
    per_draw = states.hidden.numel() * states.hidden.element_size()
    assert compute_text_states(enc, TEXTS, dropout_draws=3, max_draw_bytes=2 * per_draw).num_draws == 2
    for m in enc.model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    assert not has_dropout(enc, 4) and text_dropout_draws(model) == 0
    frozen = build_prognosis_model(
        PrognosisConfig(mode="ehr", lora_r=0), text_encoder=copy.deepcopy(encoders["mean"])
    )
    assert frozen.text_frozen_layers == 6 and text_dropout_draws(frozen) == 0  # eval mode: no dropout


def test_fit_with_cached_layers_equals_the_full_forward_fit(encoders, monkeypatch) -> None:
    """Without dropout (which draws differently in the two), the cached fit and the full-forward
    fit train the same model."""
    from duplus.prognosis.config import PrognosisConfig
    from duplus.prognosis.model import PrognosisModel, build_prognosis_model, fit_prognosis, predict_risk

    base = copy.deepcopy(encoders["mean"])
    for m in base.model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    rng = np.random.default_rng(0)
    texts = [TEXTS[i % len(TEXTS)].replace("Age: ", f"Age: {40 + i} ") for i in range(24)]
    time, event = rng.exponential(500.0, 24) + 1.0, (rng.random(24) < 0.6).astype(int)
    cfg = PrognosisConfig(
        mode="ehr", epochs=3, batch_size=16, lora_r=4, lora_dropout=0.0, dropout=0.0,
        lr=1e-2, lora_lr=1e-2, lora_targets=r"encoder\.layer\.[45]\..*",
    )  # fmt: skip

    def fitted() -> tuple[np.ndarray, list[float]]:
        model = build_prognosis_model(cfg, text_encoder=copy.deepcopy(base))
        history = fit_prognosis(model, texts, None, time, event)
        return predict_risk(model, texts), history["loss"]

    cached, loss = fitted()
    with monkeypatch.context() as m:
        m.setattr(PrognosisModel, "text_frozen_layers", property(lambda self: 0))  # the full forward
        full, full_loss = fitted()
    np.testing.assert_allclose(loss, full_loss, rtol=1e-4)
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-5)
    assert np.std(cached) > 0
