"""The texts a predictor sends to the text encoder: the single-prompt model reads its T1 context."""

from __future__ import annotations

import pytest

from duplus.config import ModelConfig, PreprocessConfig
from duplus.data.label_space import LabelSpace
from duplus.inference.predictor import Predictor
from duplus.models.registry import build_model
from duplus.text.encoder import TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder("default")


@pytest.mark.parametrize("single_prompt", [False, True])
def test_single_prompt_model_gets_the_sentence_it_was_trained_on(
    encoder: TextEncoder, single_prompt: bool
) -> None:
    """Training joins T1 and T2 into one sentence for the single-prompt ablation; so must inference,
    also when the T1 text is overridden (a wrong-T1 experiment)."""
    model = build_model(ModelConfig(preset="tiny", single_prompt=single_prompt), text_dim=encoder.embed_dim)
    predictor = Predictor(model, encoder, PreprocessConfig(), [32, 32, 32], LabelSpace.from_names(["liver"]))
    _, t2, used = predictor.encode_prompts("CT", "abdomen", ["liver"])
    _, _, wrong = predictor.encode_prompts("CT", "abdomen", ["liver"], t1_text="A MRI scan of the head")
    assert t2.shape == (1, 1, encoder.embed_dim)
    if single_prompt:
        assert used["t2"] == {"liver": "A CT scan of the abdomen: liver"}
        assert (
            wrong["t2"] == {"liver": "A MRI scan of the head: liver"}
            and wrong["t1"] == "A MRI scan of the head"
        )
    else:
        assert used["t2"] == wrong["t2"] == {"liver": "liver"}


def test_single_stem_is_a_config_switch_kept_by_checkpoints() -> None:
    """``model.single_stem`` builds one shared stem, and a saved config rebuilds the same network."""
    from duplus.config import from_dict, to_dict

    cfg = ModelConfig(preset="tiny", single_stem=True)
    model = build_model(from_dict(ModelConfig, to_dict(cfg)), text_dim=8)
    assert list(model.stems.keys()) == ["shared"]
    assert len(build_model(ModelConfig(preset="tiny"), text_dim=8).stems) > 1
