"""Prompt-embedding cache: a frozen text encoder runs once per distinct prompt.

Entries are keyed by ``(encoder.model_id, pooling, max_length)`` and the prompt text, kept on the
CPU, and can be saved to / loaded from one file (``torch.save`` of plain tensors and strings, read
back with ``weights_only=True``), so a run's prompts need no encoder call after warm-up, and a
predictor can ship the embeddings it was trained with.

A trainable encoder (full fine-tuning or LoRA) is never cached: its embeddings change every step,
so :meth:`EmbeddingCache.get` then calls it directly (with gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from duplus.checkpoint import load_torch_file, save_torch_file
from duplus.errors import InputError
from duplus.text.encoder import TextEncoder

CACHE_FORMAT = "duplus-embedding-cache"
CACHE_VERSION = 1


def encoder_key(encoder: TextEncoder) -> str:
    """The cache namespace of ``encoder``: its ``model_id``, plus pooling and length when they are
    not the defaults (the same model pooled differently gives different embeddings)."""
    return f"{encoder.model_id}|{encoder.pooling}|{encoder.max_length}"


class EmbeddingCache:
    """Cache of L2-normalised prompt embeddings for one text encoder.

    Args:
        encoder: the (frozen) text encoder that fills the cache.

    Attributes:
        hits: prompts served from the cache.
        misses: prompts that had to be encoded.
    """

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self._store: dict[tuple[str, str], Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and (encoder_key(self.encoder), text.strip()) in self._store

    def get(self, texts: Sequence[str], device: torch.device | str | None = None) -> Tensor:
        """Embeddings of ``texts``, encoding only the missing ones, in one batch.

        Args:
            texts: ``N`` prompts (duplicates allowed).
            device: where to put the result (default: the encoder's device).

        Returns:
            ``(N, E)`` float32, L2-normalised.
        """
        if isinstance(texts, str):
            texts = [texts]
        device = self.encoder.device if device is None else device
        if self.encoder.is_trainable:
            return self.encoder.encode(texts).to(device)
        ns = encoder_key(self.encoder)
        clean = [t.strip() if isinstance(t, str) else t for t in texts]
        missing = list(dict.fromkeys(t for t in clean if (ns, t) not in self._store))
        if missing:
            emb = self.encoder.encode(missing).detach().to("cpu", torch.float32)
            for text, row in zip(missing, emb, strict=True):
                self._store[(ns, text)] = row.clone()
        self.misses += len(missing)
        self.hits += len(clean) - len(missing)
        if not clean:
            return torch.zeros(0, self.encoder.embed_dim, device=device)
        return torch.stack([self._store[(ns, t)] for t in clean]).to(device)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self._store.clear()
        self.hits = self.misses = 0

    def save(self, path: str | Path) -> None:
        """Write every entry to ``path`` atomically (a ``.pt`` file of plain tensors and strings)."""
        entries: dict[str, dict[str, object]] = {}
        for (ns, text), row in self._store.items():
            entry = entries.setdefault(ns, {"texts": [], "rows": []})
            entry["texts"].append(text)  # type: ignore[attr-defined]
            entry["rows"].append(row)  # type: ignore[attr-defined]
        payload = {
            "entries": {
                ns: {"texts": e["texts"], "embeddings": torch.stack(e["rows"])}  # type: ignore[arg-type]
                for ns, e in entries.items()
            },
        }
        save_torch_file(path, CACHE_FORMAT, CACHE_VERSION, payload)

    def load(self, path: str | Path) -> int:
        """Merge the entries saved in ``path`` into this cache; returns how many were read.

        Raises:
            InputError: a missing file or one that is not an embedding cache.
        """
        path = Path(path)
        payload = load_torch_file(path, CACHE_FORMAT, CACHE_VERSION, what="embedding cache", error=InputError)
        count = 0
        for ns, entry in payload.get("entries", {}).items():
            texts, emb = entry.get("texts"), entry.get("embeddings")
            if (
                not isinstance(texts, list)
                or not isinstance(emb, Tensor)
                or emb.ndim != 2
                or len(texts) != emb.shape[0]
            ):
                raise InputError(path, f"corrupt entry for encoder {ns!r}")
            for text, row in zip(texts, emb.float(), strict=True):
                self._store[(str(ns), str(text))] = row.clone()
                count += 1
        return count


__all__ = ["EmbeddingCache", "encoder_key"]
