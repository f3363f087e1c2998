"""Mapping a free-text target prompt to a target the model was trained on.

A model segments reliably only the targets it was trained on, prompted as in training. A text
the synonym table does not resolve ("the fluid around the brain", "livr", "hepatic tissue") is
mapped to the nearest trained target when it is close enough, by one of two measures:

* **prefix**: the text (3 letters or more) begins a name of exactly one trained target ("spl");
* **spelling**: the edit-distance similarity (:func:`spelling_similarity`) to a trained target's
  names (canonical name and synonyms) reaches :data:`SPELLING_THRESHOLD`: typos, abbreviations
  such as "lt kidney";
* **meaning**: the text encoder's cosine similarity to the target's training prompts (the
  templates of :func:`~duplus.text.prompts.t2_prompts` and its synonyms) reaches
  :data:`EMBEDDING_THRESHOLD`, with a lead of :data:`EMBEDDING_MARGIN` over the runner-up
  target, and the sides agree (a text saying "left" never maps to a right-sided target).

Anything else, and any known target the model was not trained on ("gallbladder"), names
nothing the model knows: it is unmatched, and the predictor leaves its mask empty with a
warning instead of letting the head draw some other organ. The thresholds were chosen on the
validation wordings of :mod:`duplus.demo.wordings` (``docs/EXPERIMENTS.md``), never on its test set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from duplus.data.label_space import canonical_target, is_known_target, normalise_name, synonyms

SPELLING_THRESHOLD = 0.75
EMBEDDING_THRESHOLD = 0.60
EMBEDDING_MARGIN = 0.01

_SIDES = {"left": re.compile(r"\b(left|lt|l)\b"), "right": re.compile(r"\b(right|rt|r)\b")}


@dataclass(frozen=True)
class TargetMatch:
    """How one asked target text was resolved.

    Attributes:
        text: the text as asked.
        target: the trained target it stands for; ``None`` when unmatched.
        how: ``"trained name"`` (a training name or a synonym-table name of a trained target),
            ``"prefix"``, ``"spelling"``, ``"meaning"``, ``"as written"`` (exact prompts) or ``"unmatched"``.
        similarity: the similarity of the deciding measure (1.0 for a table name), or of the
            nearest trained target when unmatched.
        nearest: the nearest trained target (also when unmatched).
        reason: why an unmatched text was not mapped (empty otherwise).
    """

    text: str
    target: str | None
    how: str
    similarity: float | None = None
    nearest: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sides(text: str) -> set[str]:
    """The body sides a (normalised) text names: ``{"left"}``, ``{"right"}``, both or none."""
    norm = normalise_name(text)
    return {side for side, pattern in _SIDES.items() if pattern.search(norm)}


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
    neighbouring letters, each 1 (the typos a keyboard makes)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def spelling_similarity(text: str, target: str) -> float:
    """``1 - edit distance / longer length`` of ``text`` to the closest name of ``target`` (spaces
    ignored): 0.8 for one typo in "liver", low for a different phrase of similar letters."""
    norm = normalise_name(text).replace(" ", "")
    best = 0.0
    for name in synonyms(target):
        n = normalise_name(name).replace(" ", "")
        if norm and n:
            best = max(best, 1.0 - edit_distance(norm, n) / max(len(norm), len(n)))
    return best


def prefix_of(text: str, targets: Sequence[str], min_letters: int = 3) -> str | None:
    """The one target of ``targets`` one of whose names starts with ``text`` (an abbreviation such
    as "spl"; at least ``min_letters`` letters); ``None`` when none or several do ("liv": liver and
    liver tumour)."""
    norm = normalise_name(text).replace(" ", "")
    if len(norm) < min_letters:
        return None
    hits = {t for t in targets for n in synonyms(t) if normalise_name(n).replace(" ", "").startswith(norm)}
    return hits.pop() if len(hits) == 1 else None


class TargetMatcher:
    """Resolve target texts against the targets a model was trained on.

    Args:
        trained: the model's trained targets (canonical names).
        embed: texts -> L2-normalised embeddings ``(N, E)`` (the model's frozen text encoder).
        spelling_threshold, embedding_threshold, embedding_margin: see the module docstring.
    """

    def __init__(
        self,
        trained: Sequence[str],
        embed: Callable[[list[str]], torch.Tensor],
        *,
        spelling_threshold: float = SPELLING_THRESHOLD,
        embedding_threshold: float = EMBEDDING_THRESHOLD,
        embedding_margin: float = EMBEDDING_MARGIN,
    ) -> None:
        self.trained = list(dict.fromkeys(canonical_target(t) for t in trained))
        self.embed = embed
        self.spelling_threshold = spelling_threshold
        self.embedding_threshold = embedding_threshold
        self.embedding_margin = embedding_margin

    def _anchors(self, modality: str | None) -> tuple[list[str], torch.Tensor]:
        from duplus.text.prompts import t2_prompts

        owners, texts = [], []
        for t in self.trained:
            for p in t2_prompts(t, modality, synonyms=True):
                owners.append(t)
                texts.append(p)
        return owners, self.embed(texts)

    def meaning_scores(self, texts: Sequence[str], modality: str | None = None) -> list[dict[str, float]]:
        """``{trained target: max cosine similarity to its training prompts}`` for each text."""
        owners, anchors = self._anchors(modality)
        sims = self.embed(list(texts)).float() @ anchors.float().T
        out = []
        for row in sims.tolist():
            best: dict[str, float] = {}
            for owner, s in zip(owners, row, strict=True):
                best[owner] = max(best.get(owner, -1.0), float(s))
            out.append(best)
        return out

    def match(self, texts: Sequence[str], modality: str | None = None) -> list[TargetMatch]:
        """One :class:`TargetMatch` per text, in order."""
        if not self.trained:
            return [
                TargetMatch(t, None, "unmatched", reason="the model has no trained targets") for t in texts
            ]
        free = [t for t in texts if not is_known_target(t)]
        scores = dict(zip(free, self.meaning_scores(free, modality), strict=True)) if free else {}
        return [self._match_one(t, scores.get(t)) for t in texts]

    def _match_one(self, text: str, meaning: dict[str, float] | None) -> TargetMatch:
        if is_known_target(text):
            name = canonical_target(text)
            if name in self.trained:
                return TargetMatch(text, name, "trained name", 1.0, name)
            return TargetMatch(
                text,
                None,
                "unmatched",
                None,
                None,
                f"{name!r} is a known target this model was not trained on",
            )
        assert meaning is not None
        said = sides(text)
        allowed = [t for t in self.trained if not sides(t) or sides(t) <= said] if said else self.trained
        if not allowed:
            return TargetMatch(
                text, None, "unmatched", None, None, f"no trained target on the side it names ({said})"
            )
        prefix = prefix_of(text, allowed)
        if prefix:
            return TargetMatch(text, prefix, "prefix", 1.0, prefix)
        spelled = max(((spelling_similarity(text, t), t) for t in allowed), key=lambda x: x[0])
        if spelled[0] >= self.spelling_threshold:
            return TargetMatch(text, spelled[1], "spelling", round(spelled[0], 4), spelled[1])
        ranked = sorted(((meaning[t], t) for t in allowed), reverse=True)
        (s1, best), s2 = ranked[0], ranked[1][0] if len(ranked) > 1 else -1.0
        if s1 >= self.embedding_threshold and s1 - s2 >= self.embedding_margin:
            return TargetMatch(text, best, "meaning", round(s1, 4), best)
        reason = (
            f"similarity {s1:.2f} < {self.embedding_threshold:.2f}"
            if s1 < self.embedding_threshold
            else f"{best!r} leads the runner-up by {s1 - s2:.3f} < {self.embedding_margin:.2f}"
        )
        return TargetMatch(text, None, "unmatched", round(s1, 4), best, reason)


__all__ = [
    "EMBEDDING_MARGIN",
    "EMBEDDING_THRESHOLD",
    "SPELLING_THRESHOLD",
    "TargetMatch",
    "TargetMatcher",
    "edit_distance",
    "prefix_of",
    "sides",
    "spelling_similarity",
]
