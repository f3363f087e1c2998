"""Task-scoped network adaptation: the adapted network serves only the adapter's prompts.

An adaptation that trains network parts (head, FiLM conditioner, backbone LoRA) on the new task's
data alone would overwrite what the shared parts do for the original targets (catastrophic
forgetting: measured, it wipes out the original targets). With ``network_scope: task`` the
adapted network is kept *beside* the frozen base network, and every target is routed:

* a target whose T2 prompt is in the adapter's scope (the new task's own prompts), or any target
  under a T1 prompt in the scope (a new modality/region), runs through the adapted network;
* every other target, i.e. the original targets with their original prompts, runs through the
  base network, unchanged: zero forgetting by construction.

A request that mixes both costs one backbone pass per group; a request for original targets only,
or for new targets only, costs one pass, as before.

The routing is decided from the prompt embeddings: the :class:`~duplus.adapt.router.PromptRouter`
serves the scope's prompts from one table (:meth:`~duplus.adapt.router.PromptRouter.scope_table`)
and :class:`ScopedDuPLUS` holds the same table, so a row that is in it came from a scoped prompt.
(A base prompt cannot produce one of those rows: scoped prompts are by definition never base
prompts, and distinct texts give distinct embeddings.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from duplus.errors import InputError
from duplus.models.duplus import DuPLUS, PromptConditioning

__all__ = ["ScopedConditioning", "ScopedDuPLUS"]


@dataclass
class ScopedConditioning:
    """The conditioning of a routed forward pass.

    Attributes:
        base: conditioning of the targets that run through the base network (``None``: none).
        adapted: conditioning of the targets that run through the adapted network.
        base_index: their positions among the ``K`` requested targets.
        adapted_index: idem for the adapted targets.
    """

    base: PromptConditioning | None
    adapted: PromptConditioning | None
    base_index: list[int]
    adapted_index: list[int]

    @property
    def num_targets(self) -> int:
        return len(self.base_index) + len(self.adapted_index)

    def to(self, device: torch.device | str) -> ScopedConditioning:
        return replace(
            self,
            base=self.base.to(device) if self.base is not None else None,
            adapted=self.adapted.to(device) if self.adapted is not None else None,
        )


class ScopedDuPLUS(nn.Module):
    """A frozen base DuPLUS and an adapted copy, with targets routed by prompt (see the module doc).

    Args:
        base: the base network (frozen here).
        adapted: the adapted network (same preset; LoRA, head or conditioner changed).
        scope_embeddings: ``(M, E)`` embeddings of the adapter's prompts, as the router serves them.

    Shapes are those of :class:`~duplus.models.duplus.DuPLUS`; batches must route alike (one
    volume at a time at inference, as the sliding-window predictor does).
    """

    scope_embeddings: Tensor

    def __init__(self, base: DuPLUS, adapted: DuPLUS, scope_embeddings: Tensor | None = None) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.adapted = adapted
        self.register_buffer("scope_embeddings", torch.zeros(0, base.text_dim), persistent=False)
        if scope_embeddings is not None:
            self.set_scope(scope_embeddings)

    # DuPLUS's read-only attributes, for callers that inspect the network
    @property
    def size_divisor(self) -> int:
        return self.base.size_divisor

    @property
    def text_dim(self) -> int:
        return self.base.text_dim

    @property
    def in_channels(self) -> int:
        return self.base.in_channels

    @property
    def single_prompt(self) -> bool:
        return self.base.single_prompt

    @property
    def head_position(self) -> bool:
        return self.base.head_position

    def set_scope(self, scope_embeddings: Tensor) -> None:
        """Replace the scope table ``(M, E)`` (after the text adapter changed)."""
        device = self.scope_embeddings.device
        self.scope_embeddings = scope_embeddings.detach().to(device, torch.float32).clone()

    def route(self, t1_emb: Tensor, t2_emb: Tensor) -> Tensor:
        """``(K,)`` bool: which targets run through the adapted network.

        Args:
            t1_emb: ``(B, E)``.
            t2_emb: ``(B, K, E)``.
        """
        table = self.scope_embeddings.to(t2_emb.device)
        if table.shape[0] == 0:
            return torch.zeros(t2_emb.shape[1], dtype=torch.bool, device=t2_emb.device)

        def member(x: Tensor) -> Tensor:
            return (x.float().unsqueeze(-2) == table).all(-1).any(-1)

        routed = member(t2_emb) | member(t1_emb).unsqueeze(1)  # (B, K)
        if not bool((routed == routed[:1]).all()):
            raise InputError(
                None, "samples of one batch route their targets differently; predict one volume at a time"
            )
        return routed[0]

    def condition(self, modality_index: Tensor, t1_emb: Tensor, t2_emb: Tensor) -> ScopedConditioning:
        """Route the targets and condition each network on its own (see :meth:`DuPLUS.condition`)."""
        modality_index = torch.as_tensor(modality_index, dtype=torch.long).reshape(-1)
        if t2_emb.ndim == 2:
            t2_emb = t2_emb.unsqueeze(0).expand(modality_index.shape[0], -1, -1)
        routed = self.route(t1_emb, t2_emb).tolist()
        adapted_index = [k for k, r in enumerate(routed) if r]
        base_index = [k for k, r in enumerate(routed) if not r]
        return ScopedConditioning(
            base=self.base.condition(modality_index, t1_emb, t2_emb[:, base_index]) if base_index else None,
            adapted=self.adapted.condition(modality_index, t1_emb, t2_emb[:, adapted_index])
            if adapted_index
            else None,
            base_index=base_index,
            adapted_index=adapted_index,
        )

    def forward_conditioned(
        self, image: Tensor, cond: ScopedConditioning, position: Tensor | None = None
    ) -> Tensor:
        """``logits (N, K, D, H, W)``, each target from its network, in the requested order."""
        if cond.adapted is None:
            assert cond.base is not None
            return self.base.forward_conditioned(image, cond.base, position)
        if cond.base is None:
            return self.adapted.forward_conditioned(image, cond.adapted, position)
        base = self.base.forward_conditioned(image, cond.base, position)
        adapted = self.adapted.forward_conditioned(image, cond.adapted, position)
        out = base.new_empty(base.shape[0], cond.num_targets, *base.shape[2:])
        out[:, cond.base_index] = base
        out[:, cond.adapted_index] = adapted.to(base.dtype)
        return out

    # condition() then forward_conditioned(): the same composition as the base network's, on ours
    forward = DuPLUS.forward

    def extract_features(
        self, image: Tensor, modality_index: Tensor, t1_emb: Tensor, decoder: bool = True
    ) -> dict[str, Tensor]:
        """The base network's features (downstream tasks keep what they were built on)."""
        return self.base.extract_features(image, modality_index, t1_emb, decoder=decoder)
