"""Embedding cache: a frozen encoder runs once per distinct prompt; save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from duplus.errors import InputError
from duplus.text.cache import EmbeddingCache, encoder_key
from duplus.text.encoder import TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder("default")


def test_second_get_does_not_run_the_encoder(encoder: TextEncoder) -> None:
    cache = EmbeddingCache(encoder)
    prompts = ["liver", "spleen", "liver", "A CT scan of the abdomen"]
    start = encoder.forward_count
    first = cache.get(prompts)
    assert encoder.forward_count == start + 1  # one batch for the three distinct prompts
    assert len(cache) == 3 and cache.misses == 3 and cache.hits == 1
    second = cache.get(prompts)
    assert encoder.forward_count == start + 1
    assert cache.hits == 5
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, encoder.encode(prompts))
    assert first.shape == (4, 384)
    # only the new prompt is encoded
    cache.get(["liver", "kidney"])
    assert encoder.forward_count == start + 3 and len(cache) == 4
    assert "kidney" in cache and "pancreas" not in cache


def test_save_load_round_trip(encoder: TextEncoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(encoder)
    ref = cache.get(["aorta", "left kidney"])
    path = tmp_path / "sub" / "embeddings.pt"
    cache.save(path)
    assert path.is_file() and not list(path.parent.glob(".*"))  # no temp file left behind
    fresh = EmbeddingCache(encoder)
    assert fresh.load(path) == 2
    start = encoder.forward_count
    torch.testing.assert_close(fresh.get(["left kidney", "aorta"]), ref[[1, 0]])
    assert encoder.forward_count == start and fresh.misses == 0
    payload = torch.load(path, weights_only=True)
    assert list(payload["entries"]) == [encoder_key(encoder)]


def test_entries_are_per_encoder(encoder: TextEncoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(encoder)
    cache.get(["liver"])
    path = tmp_path / "e.pt"
    cache.save(path)
    other = TextEncoder("default", pooling="cls")
    other_cache = EmbeddingCache(other)
    other_cache.load(path)
    start = other.forward_count
    other_cache.get(["liver"])
    assert other.forward_count == start + 1  # different pooling: no false hit


def test_load_errors(encoder: TextEncoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(encoder)
    with pytest.raises(InputError, match="not found"):
        cache.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable embedding cache"):
        cache.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(InputError, match="not a DuPLUS embedding cache"):
        cache.load(other)


def test_trainable_encoder_bypasses_cache() -> None:
    enc = TextEncoder("default", trainable=True)
    cache = EmbeddingCache(enc)
    emb = cache.get(["liver"])
    assert emb.requires_grad and len(cache) == 0
    cache.get(["liver"])
    assert enc.forward_count == 2
