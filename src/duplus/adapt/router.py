"""Prompt routing for adapted models: the new task's prompts through the LoRA text encoder, every
other prompt through the frozen base encoder.

A text-side adapter is *scoped*: only the prompts of the new task that the base model never saw
(its new targets' T2 paraphrases, a new T1) are embedded with the adapters enabled. Every other
prompt is embedded by the same encoder with peft's adapters disabled, which is exactly the base
encoder, and cached. So when only text-side adapters train, the original targets with their
original prompts give bit-identical outputs: zero forgetting by construction.

:class:`PromptRouter` has the :class:`~duplus.text.cache.EmbeddingCache` interface that the
trainer and the predictor use (``get(texts, device) -> (N, E)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from duplus.text.cache import EmbeddingCache

__all__ = ["PromptRouter", "adapters_disabled", "task_prompts"]


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as its base model: every peft adapter layer in it is disabled inside the
    block. ``requires_grad`` flags are restored on exit (peft's toggle would change them)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        yield
        return
    flags = [(p, p.requires_grad) for layer in layers for p in cast(nn.Module, layer).parameters()]
    states = [layer.disable_adapters for layer in layers]
    try:
        for layer in layers:
            layer.enable_adapters(False)
        yield
    finally:
        for layer, was_disabled in zip(layers, states, strict=True):
            layer.enable_adapters(not was_disabled)
        for p, flag in flags:
            p.requires_grad_(flag)


def _set_lora_dropout_mode(module: nn.Module, mode: bool) -> None:
    """Switch only the LoRA dropout of ``module``'s adapter layers (the base stays in eval mode)."""
    for m in module.modules():
        dropout = getattr(m, "lora_dropout", None)
        if isinstance(dropout, nn.ModuleDict):
            dropout.train(mode)


def task_prompts(t1: str, modality: str, targets: Iterable[str], *, single_prompt: bool = False) -> list[str]:
    """Every prompt training or inference may use for one dataset: its T1 and all T2 paraphrases
    of its targets (for the single-prompt ablation, the joined prompts), in a fixed order."""
    from duplus.text.prompts import single_prompt_text, t2_prompts

    t2 = [p for t in targets for p in t2_prompts(t, modality)]
    prompts = [single_prompt_text(t1, p) for p in t2] if single_prompt else [t1, *t2]
    return list(dict.fromkeys(prompts))


class _BaseEncoderView:
    """The base (adapters-disabled, frozen) view of a possibly LoRA-adapted text encoder, with the
    attributes :class:`EmbeddingCache` reads."""

    is_trainable = False

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder

    def __getattr__(self, name: str) -> Any:  # model_id, pooling, max_length, embed_dim, device, ...
        return getattr(self._encoder, name)

    def encode(self, texts: Sequence[str]) -> Tensor:
        with torch.no_grad(), adapters_disabled(self._encoder.model):
            return self._encoder.encode(texts)


class PromptRouter:
    """Prompt embeddings of an adapted model (the ``prompt_cache`` of trainer and predictor).

    Args:
        encoder: the text encoder (a :class:`~duplus.text.encoder.TextEncoder`), LoRA-adapted or not.
        scope: prompts embedded with the adapters enabled (the new task's own prompts).
        overrides: ``{prompt: (E,)}`` fixed embeddings used before anything else (a merged
            checkpoint stores its adapted prompts this way, so it needs no adapter).
        added_targets: targets the adaptation added to the model's label space.

    Training mode (:meth:`train`) embeds scoped prompts with gradients and never caches them;
    evaluation mode caches them until the next switch to training. Out-of-scope prompts always
    come from the frozen base encoder, cached.
    """

    def __init__(
        self,
        encoder: Any,
        scope: Iterable[str] = (),
        overrides: Mapping[str, Tensor] | None = None,
        added_targets: Iterable[str] = (),
    ) -> None:
        self.encoder = encoder
        self.scope: set[str] = {t.strip() for t in scope}
        self.overrides: dict[str, Tensor] = {
            k.strip(): v.detach().float().cpu() for k, v in (overrides or {}).items()
        }
        self.added_targets = list(added_targets)
        self.base = EmbeddingCache(cast(Any, _BaseEncoderView(encoder)))
        self.training = False
        self._adapted: dict[str, Tensor] = {}

    @classmethod
    def from_overrides(
        cls, encoder: Any, table: Mapping[str, Any], added_targets: Iterable[str] = ()
    ) -> PromptRouter:
        """A router over a stored ``{"texts": [...], "embeddings": (N, E)}`` override table."""
        texts, emb = list(table["texts"]), table["embeddings"]
        return cls(encoder, overrides=dict(zip(texts, emb, strict=True)), added_targets=added_targets)

    def scope_table(self) -> dict[str, Any]:
        """The adapted prompts (scoped and overridden) and their embeddings exactly as :meth:`get`
        serves them in evaluation mode: ``{"texts": [...], "embeddings": (M, E)}``, weights-only
        safe (a merged checkpoint stores it as its ``prompt_overrides``)."""
        texts = sorted(self.scope | set(self.overrides))
        was = self.training
        self.train(False)
        with torch.no_grad():
            emb = self.get(texts, device="cpu") if texts else torch.zeros(0, self.encoder.embed_dim)
        self.train(was)
        return {"texts": texts, "embeddings": emb.detach().clone()}

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> PromptRouter:
        """Training mode: scoped prompts run through the adapters with gradients, uncached."""
        if mode:
            self._adapted.clear()
        self.training = mode
        _set_lora_dropout_mode(self.encoder.model, mode)
        return self

    def eval(self) -> PromptRouter:
        return self.train(False)

    def is_adapted(self, text: str) -> bool:
        """Whether ``text`` is embedded by the adaptation (scoped or overridden)."""
        t = text.strip()
        return t in self.overrides or t in self.scope

    # ------------------------------------------------------------------ lookup
    def _adapted_rows(self, texts: list[str]) -> dict[str, Tensor]:
        if self.training and torch.is_grad_enabled():
            emb = self.encoder.encode(texts)
            return dict(zip(texts, emb, strict=True))
        missing = [t for t in texts if t not in self._adapted]
        if missing:  # the whole scope in one batch, so every served row is a row of scope_table()
            batch = sorted(self.scope | set(missing))
            with torch.no_grad():
                emb = self.encoder.encode(batch).detach().to("cpu", torch.float32)
            self._adapted.update(zip(batch, emb, strict=True))
        return {t: self._adapted[t] for t in texts}

    def get(self, texts: Sequence[str], device: torch.device | str | None = None) -> Tensor:
        """Embeddings of ``texts``.

        Args:
            texts: ``N`` prompts (duplicates allowed).
            device: where to put the result (default: the encoder's device).

        Returns:
            ``(N, E)`` float32, L2-normalised; rows of scoped prompts carry gradients in training.
        """
        if isinstance(texts, str):
            texts = [texts]
        device = self.encoder.device if device is None else device
        clean = [t.strip() if isinstance(t, str) else t for t in texts]
        if not clean:
            return torch.zeros(0, self.encoder.embed_dim, device=device)
        unique = list(dict.fromkeys(clean))
        rows: dict[str, Tensor] = {t: self.overrides[t] for t in unique if t in self.overrides}
        scoped = [t for t in unique if t not in rows and t in self.scope]
        if scoped:
            rows.update(self._adapted_rows(scoped))
        rest = [t for t in unique if t not in rows]
        if rest:
            rows.update(zip(rest, self.base.get(rest, device="cpu"), strict=True))
        return torch.stack([rows[t].to(device) for t in clean])

    def save(self, path: str | Path) -> None:
        """Write the base-encoder cache (the out-of-scope prompts) in the embedding-cache format."""
        self.base.save(path)
