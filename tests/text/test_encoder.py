"""Text encoder: the bundled MiniLM (offline), a tiny local CLIP checkpoint, errors and freezing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from duplus.errors import ConfigError, DuplusError, InputError
from duplus.text.encoder import TextEncoder, resolve_model_path


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder("default")


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE vocabularies (GPT-2 / CLIP)."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def _save_tiny_clip(folder: Path, projection_dim: int = 12) -> None:
    """A randomly initialised tiny CLIP with a byte-level tokenizer (no merges), built offline."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 16}  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    ).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_clip")
    _save_tiny_clip(folder)
    return folder


def test_default_minilm_loads_offline_and_normalises(minilm: TextEncoder) -> None:
    assert minilm.model_id == "default"
    assert minilm.pooling == "mean"  # sentence-transformers checkpoint
    assert minilm.embed_dim == 384
    emb = minilm.encode(["liver", "the liver", "A CT scan of the abdomen"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    # meaning, not just shape: paraphrases are closer than different organs
    other = minilm.encode(["brain"])[0]
    assert emb[0] @ emb[1] > emb[0] @ other


def test_frozen_by_default(minilm: TextEncoder) -> None:
    assert not minilm.is_trainable
    assert all(not p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.model.training  # a frozen encoder never enters dropout
    with torch.enable_grad():
        emb = minilm.encode(["spleen"])
    assert not emb.requires_grad
    a, b = minilm.encode(["kidney tumour"]), minilm.encode(["kidney tumour"])
    assert torch.equal(a, b)


def test_forward_count_counts_transformer_runs(minilm: TextEncoder) -> None:
    before = minilm.forward_count
    minilm.encode(["a", "b", "c"])
    minilm(["d"])
    minilm.encode([])
    assert minilm.forward_count == before + 2


def test_bad_prompts(minilm: TextEncoder) -> None:
    with pytest.raises(InputError, match="prompt 1 is empty"):
        minilm.encode(["liver", "   "])
    with pytest.raises(InputError, match="not a string"):
        minilm.encode(["liver", None])  # type: ignore[list-item]


def test_long_prompt_truncated_with_warning(minilm: TextEncoder, caplog: pytest.LogCaptureFixture) -> None:
    long = "liver " * 200
    with caplog.at_level(logging.WARNING, logger="duplus.text.encoder"):
        emb = minilm.encode([long])
    assert emb.shape == (1, 384)
    assert any("truncated to 77 tokens" in r.getMessage() for r in caplog.records)


def test_trainable_encoder_gets_gradients() -> None:
    enc = TextEncoder("default", trainable=True, pooling="cls")
    assert enc.pooling == "cls" and enc.is_trainable and enc.model.training
    enc.encode(["liver", "spleen"]).sum().backward()
    grads = [p.grad for p in enc.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_missing_folder_and_offline_model_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder not found"):
        TextEncoder(str(tmp_path / "no_such_model"))
    with pytest.raises(InputError, match="folder not found"):
        TextEncoder("./relative/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DuplusError, match="cannot load the text encoder"):
        TextEncoder(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="pooling"):
        TextEncoder("default", pooling="max")


def test_hub_id_not_cached_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert resolve_model_path("Idan0405/ClipMD") == ("Idan0405/ClipMD", False)
    with pytest.raises(DuplusError, match="cannot load the text encoder"):
        TextEncoder("someone/not-a-cached-model")


def test_tiny_clip_projection_path(tiny_clip: Path) -> None:
    enc = TextEncoder(str(tiny_clip))
    assert type(enc.model).__name__ == "CLIPTextModelWithProjection"
    assert enc.pooling == "projection" and enc.embed_dim == 12
    emb = enc.encode(["A CT scan of the abdomen", "liver"])
    assert emb.shape == (2, 12)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    # same as the full CLIP model's text features
    from transformers import CLIPModel

    full = CLIPModel.from_pretrained(tiny_clip, local_files_only=True).eval()
    tokens = enc.tokenizer(["liver"], return_tensors="pt")
    with torch.no_grad():
        ref = full.get_text_features(**tokens)
    ref = getattr(ref, "pooler_output", ref)  # transformers 5.x returns an output object
    torch.testing.assert_close(emb[1], torch.nn.functional.normalize(ref, dim=-1)[0], atol=1e-5, rtol=1e-4)


def test_tiny_clip_pooler_path(tiny_clip: Path) -> None:
    enc = TextEncoder(str(tiny_clip), pooling="pooler")
    assert type(enc.model).__name__ == "CLIPTextModel"
    assert enc.embed_dim == 16
    emb = enc.encode(["liver"] * 2)
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_projection_pooling_needs_clip() -> None:
    with pytest.raises(ConfigError, match="projection"):
        TextEncoder("default", pooling="projection")


def test_lora_can_wrap_the_model_and_train_only_adapters() -> None:
    from peft import LoraConfig, get_peft_model

    enc = TextEncoder("default")
    frozen = enc.encode(["liver"])
    enc.model = get_peft_model(enc.model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    assert enc.is_trainable
    torch.testing.assert_close(enc.encode(["liver"]), frozen, atol=1e-5, rtol=0)  # LoRA B starts at zero
    enc.train()
    emb = enc.encode(["liver", "spleen"])
    assert emb.requires_grad
    emb.sum().backward()
    trained = {n for n, p in enc.model.named_parameters() if p.grad is not None}
    assert trained and all("lora_" in n for n in trained)
