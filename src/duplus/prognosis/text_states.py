"""Hidden states of the frozen lower layers of the EHR text encoder, computed once per cohort.

When LoRA adapts only the top layers of a BERT-like text encoder (the CPU-sized demo adapts layers
4 and 5 of MiniLM's six), the embeddings and the layers below the first adapted one are frozen:
for a fixed set of EHR texts their outputs never change. :func:`compute_text_states` runs that
frozen part once, without gradients and in eval mode, and keeps the hidden states entering the
first adapted layer; :func:`encode_text_states` runs only the remaining layers and the pooling on
them, with gradients through LoRA in training.

In eval mode the result equals :meth:`duplus.text.encoder.TextEncoder.encode` (up to float
rounding). Training the full forward also applies the frozen layers' dropout (the model is in
train mode), a fresh draw at every step. ``dropout_draws`` keeps that: the frozen part also runs
that many times in train mode (still without gradients), and training step ``k`` uses draw ``k``
(:meth:`TextStates.draw`); with the same random state this equals the full forward in train mode.
The draws of one cohort are shared by every model fitted on it (folds, modes).

With a frozen encoder (no LoRA) the states are the last hidden states and encoding is the pooling
alone. With LoRA on every layer there is nothing to skip (:func:`frozen_layer_count` is 0) and the
prognosis model uses the full forward. Only BERT-type models are split (``model.embeddings`` then
``model.encoder.layer``); other encoders (CLIP text towers) always take the full forward.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "TextStates",
    "frozen_layer_count",
    "has_dropout",
    "compute_text_states",
    "encode_text_states",
]

# Model types whose forward is embeddings -> encoder.layer[...] -> (pooler), with layers called as
# ``layer(hidden_states, attention_mask)``; others are never split.
SPLITTABLE_MODEL_TYPES = ("bert",)
DRAW_BUDGET_BYTES = 1 << 30
_POOLINGS = ("mean", "cls", "pooler")


@dataclass
class TextStates:
    """Cached hidden states of ``N`` texts entering transformer layer ``layer``.

    Attributes:
        texts: the ``N`` texts, in row order.
        layer: index of the first layer still to run (``num_layers`` = only pooling is left).
        hidden: ``(N, L, H)`` hidden states, every text padded to the same length ``L``.
        token_mask: ``(N, L)`` attention mask of the tokens (1 = token, 0 = padding).
        draws: ``(S, N, L, H)`` the same with the frozen layers' dropout on (``S`` draws), or
            ``None``.
    """

    texts: tuple[str, ...]
    layer: int
    hidden: Tensor
    token_mask: Tensor
    draws: Tensor | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_draws(self) -> int:
        return 0 if self.draws is None else int(self.draws.shape[0])

    def subset(self, idx: np.ndarray | Sequence[int], with_draws: bool = True) -> TextStates:
        """The states of rows ``idx`` (in that order); ``with_draws=False`` leaves the draws out."""
        rows = np.asarray(idx, dtype=int).reshape(-1)
        sel = torch.as_tensor(rows, dtype=torch.long, device=self.hidden.device)
        return TextStates(
            texts=tuple(self.texts[i] for i in rows),
            layer=self.layer,
            hidden=self.hidden.index_select(0, sel),
            token_mask=self.token_mask.index_select(0, sel),
            draws=None if self.draws is None or not with_draws else self.draws.index_select(1, sel),
        )

    def draw(self, k: int) -> TextStates:
        """Dropout draw ``k % S`` as plain states (the clean states when there are no draws)."""
        if self.draws is None:
            return self
        return TextStates(self.texts, self.layer, self.draws[k % self.num_draws], self.token_mask)


def _layers(encoder: Any) -> nn.ModuleList | None:
    model = getattr(encoder, "model", None)
    if getattr(getattr(model, "config", None), "model_type", None) not in SPLITTABLE_MODEL_TYPES:
        return None
    pooling = getattr(encoder, "pooling", None)
    if pooling not in _POOLINGS or not hasattr(model, "embeddings"):
        return None
    if pooling == "pooler" and getattr(model, "pooler", None) is None:
        return None
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def frozen_layer_count(encoder: Any) -> int | None:
    """How many leading transformer layers of ``encoder`` (a ``TextEncoder``) are frozen.

    Returns:
        ``None`` when the model cannot be split (not BERT-type, or an unsupported pooling);
        0 when the embeddings or the first layer train (nothing to skip); ``num_layers`` for a
        frozen encoder.
    """
    layers = _layers(encoder)
    if layers is None:
        return None
    if any(p.requires_grad for p in encoder.model.embeddings.parameters()):
        return 0
    for i, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return len(layers)


def has_dropout(encoder: Any, layer: int) -> bool:
    """Whether the frozen part below ``layer`` (embeddings, layers) drops anything in train mode."""
    layers = _layers(encoder)
    if layers is None:
        return False
    parts = [encoder.model.embeddings, *layers[:layer]]
    return any(isinstance(m, nn.Dropout) and m.p > 0 for part in parts for m in part.modules())


@torch.no_grad()
def compute_text_states(
    encoder: Any,
    texts: Sequence[str],
    layer: int | None = None,
    batch_size: int = 64,
    dropout_draws: int = 0,
    max_draw_bytes: int = DRAW_BUDGET_BYTES,
) -> TextStates:
    """Run the frozen part of ``encoder`` on ``texts`` once (eval mode, no gradients).

    Args:
        encoder: a :class:`duplus.text.encoder.TextEncoder` (LoRA may be applied).
        texts: ``N`` non-empty texts.
        layer: first layer left to run; default :func:`frozen_layer_count`. Every layer below it
            must be frozen.
        batch_size: texts per forward pass (all are padded to the longest of the ``N``).
        dropout_draws: also run the frozen part this many times in train mode (dropout on),
            for training steps; each draw takes ``N * L * H`` floats, and fewer are made (then
            cycled) when they would take more than ``max_draw_bytes``.
        max_draw_bytes: memory budget of the draws.

    Returns:
        :class:`TextStates` with ``hidden (N, L, H)`` on the encoder's device.

    Raises:
        ValueError: the encoder cannot be split, or a layer below ``layer`` trains.
    """
    frozen = frozen_layer_count(encoder)
    if frozen is None:
        raise ValueError(f"cannot split text encoder {getattr(encoder, 'model_id', encoder)!r}")
    layer = frozen if layer is None else int(layer)
    if not 0 <= layer <= frozen:
        raise ValueError(f"layer must be in [0, {frozen}] (the frozen layers), got {layer}")
    clean = encoder._check_texts(list(texts))
    if not clean:
        raise ValueError("no texts")
    model, layers = encoder.model, _layers(encoder)
    assert layers is not None
    batch = encoder._tokenize(clean)
    token_type_ids = batch.get("token_type_ids")

    def run() -> Tensor:  # embeddings, then the frozen layers: the same blocks encode_text_states calls
        chunks = []
        for s in range(0, len(clean), batch_size):
            rows = slice(s, s + batch_size)
            hidden = model.embeddings(
                input_ids=batch["input_ids"][rows],
                token_type_ids=token_type_ids[rows] if token_type_ids is not None else None,
            )
            bias = _additive_mask(batch["attention_mask"][rows], hidden.dtype)
            for block in layers[:layer]:
                out = block(hidden, bias)
                hidden = out[0] if isinstance(out, tuple) else out
            chunks.append(hidden)
        return torch.cat(chunks).detach()

    was_training = model.training
    try:
        model.eval()
        hidden = run()
        fit = max(1, max_draw_bytes // max(1, hidden.numel() * hidden.element_size()))
        if dropout_draws > fit:
            logger.info(
                "EHR text: %d dropout draws fit in memory (of %d asked); cycling them", fit, dropout_draws
            )
            dropout_draws = fit
        draws = None
        if dropout_draws > 0:
            model.train()
            draws = torch.stack([run() for _ in range(dropout_draws)])
    finally:
        model.train(was_training)
    return TextStates(tuple(clean), layer, hidden, batch["attention_mask"], draws)


def _additive_mask(token_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, L)`` token mask -> ``(B, 1, 1, L)`` additive attention bias (0 = attend), which eager and
    SDPA attention accept alike."""
    return (1.0 - token_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def encode_text_states(encoder: Any, states: TextStates) -> Tensor:
    """Embeddings ``(N, E)`` of the texts of ``states``: the layers from ``states.layer`` on, then the
    encoder's pooling; L2-normalised, with gradients through LoRA when enabled and trainable.

    Every layer from ``states.layer`` on runs in the encoder's current mode (dropout in training).
    """
    layers = _layers(encoder)
    if layers is None:
        raise ValueError(f"cannot split text encoder {getattr(encoder, 'model_id', encoder)!r}")
    if len(states) == 0:
        return torch.zeros(0, encoder.embed_dim, device=encoder.device)
    hidden, token_mask = states.hidden, states.token_mask
    if getattr(encoder.tokenizer, "padding_side", "right") == "right":
        length = int(token_mask.sum(dim=1).max())  # drop padding no text of this batch needs
        hidden, token_mask = hidden[:, :length], token_mask[:, :length]
    with torch.set_grad_enabled(torch.is_grad_enabled() and encoder.is_trainable):
        bias = _additive_mask(token_mask, hidden.dtype)
        for block in layers[states.layer :]:
            out = block(hidden, bias)
            hidden = out[0] if isinstance(out, tuple) else out
        pooled = types.SimpleNamespace(
            last_hidden_state=hidden,
            pooler_output=encoder.model.pooler(hidden) if encoder.pooling == "pooler" else None,
        )
        emb = encoder._pool(pooled, token_mask).float()
    return nn.functional.normalize(emb, dim=-1)
