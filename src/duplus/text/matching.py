"""Mapping a free-text target prompt to a target the model was trained on.

A model segments reliably only the targets it was trained on, prompted as in training. A text
the synonym table does not resolve ("the fluid around the brain", "livr", "hepatic tissue") is
mapped to the nearest trained target when it is close enough, by these measures, in order:

* **prefix**: the text (3 letters or more) begins a name of exactly one trained target ("spl"),
  or, with ``abbreviations``, one word of 3-8 letters is spelled in order inside such a name with
  the same first letter ("spln"); where the hits are a target and longer names that start with its
  name ("liv": liver, liver tumour), the shorter one;
* **spelling**: the edit-distance similarity (:func:`spelling_similarity`) to a trained target's
  names (canonical name and synonyms) reaches :data:`SPELLING_THRESHOLD`: typos, abbreviations
  such as "lt kidney";
* **meaning**: the text encoder's cosine similarity to the target's training prompts (the
  templates of :func:`~duplus.text.prompts.t2_prompts` and its synonyms) and, with ``glossary``,
  to its plain-language descriptions (:mod:`duplus.text.glossary`) reaches
  :data:`EMBEDDING_THRESHOLD`, with a lead of :data:`EMBEDDING_MARGIN` over the runner-up
  target, and the sides agree (a text saying "left" never maps to a right-sided target). With
  ``decoys``, the known targets the model was *not* trained on (their names and descriptions)
  compete too: a text nearest to one of them (to the gallbladder's names or description, say)
  is unmatched. Which of the three optional measures are on by default was chosen on the
  validation wordings (:data:`GLOSSARY`, :data:`DECOYS`, :data:`ABBREVIATIONS`).

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

from duplus.data.label_space import SYNONYMS, canonical_target, is_known_target, normalise_name, synonyms
from duplus.text.glossary import descriptions

KNOWN_TARGETS: tuple[str, ...] = tuple(SYNONYMS)

SPELLING_THRESHOLD = 0.75
EMBEDDING_THRESHOLD = 0.60
EMBEDDING_MARGIN = 0.0
GLOSSARY = True
DECOYS = False
ABBREVIATIONS = True

_LEFT = "left|lt|l|sinister|sinistra|sinistro|links|linke|linker|linkes|gauche|izquierdo|izquierda|esquerdo|esquerda"
_RIGHT = "right|rt|r|dexter|dextra|destro|destra|rechts|rechte|rechter|rechtes|droit|droite|derecho|derecha|direito|direita"
_SIDES = {"left": re.compile(rf"\b({_LEFT})\b"), "right": re.compile(rf"\b({_RIGHT})\b")}
"""Words naming a body side, in English, Latin, German, French, Spanish, Italian and Portuguese
(accents folded): a text naming a side never maps to a target of the other side."""


@dataclass(frozen=True)
class TargetMatch:
    """How one asked target text was resolved.

    Attributes:
        text: the text as asked.
        target: the trained target it stands for; ``None`` when unmatched.
        how: ``"trained name"`` (a training name or a synonym-table name of a trained target),
            ``"prefix"``, ``"abbreviation"``, ``"spelling"``, ``"meaning"``, ``"as written"`` (exact prompts) or ``"unmatched"``.
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


def _is_subsequence(short: str, long: str) -> bool:
    letters = iter(long)
    return all(c in letters for c in short)


def _one_target(hits: dict[str, str]) -> str | None:
    """The target of ``{target: its shortest matching name}`` when there is one, or when one
    target's name starts every other's ("liver" of "liver tumour"); else ``None``."""
    if len(hits) <= 1:
        return next(iter(hits), None)
    short = min(hits, key=lambda t: len(hits[t]))
    return short if all(n.startswith(hits[short]) for n in hits.values()) else None


def prefix_of(
    text: str, targets: Sequence[str], min_letters: int = 3, *, abbreviations: bool = False
) -> str | None:
    """The one target of ``targets`` one of whose names starts with ``text`` (an abbreviation such
    as "spl"; at least ``min_letters`` letters). With ``abbreviations``, a single word of 3-8
    letters also matches a name that holds its letters in order and starts with its first letter
    ("spln": spleen), and of a target and longer names starting with its name ("liv": liver and
    liver tumour) the target is taken. ``None`` when no target matches, or several (without
    ``abbreviations``, any two)."""
    norm = normalise_name(text).replace(" ", "")
    if len(norm) < min_letters:
        return None
    word = abbreviations and norm.isalpha() and " " not in normalise_name(text) and len(norm) <= 8
    hits: dict[str, str] = {}
    for t in targets:
        for n in synonyms(t):
            name = normalise_name(n).replace(" ", "")
            fits = name.startswith(norm) or (word and name[0] == norm[0] and _is_subsequence(norm, name))
            if fits and (t not in hits or len(name) < len(hits[t])):
                hits[t] = name
    if not abbreviations:
        return next(iter(hits)) if len(hits) == 1 else None
    return _one_target(hits)


def _decoys(trained: Sequence[str]) -> list[str]:
    """The known targets not in ``trained``, less those whose words hold or are held by a trained
    target's ("kidney" beside "left kidney"): a general name must not steal its specific target."""
    words = [set(t.split()) for t in trained]
    return [
        d
        for d in KNOWN_TARGETS
        if d not in trained and not any(set(d.split()) <= w or w <= set(d.split()) for w in words)
    ]


class TargetMatcher:
    """Resolve target texts against the targets a model was trained on.

    Args:
        trained: the model's trained targets (canonical names).
        embed: texts -> L2-normalised embeddings ``(N, E)`` (the model's frozen text encoder).
        spelling_threshold, embedding_threshold, embedding_margin, glossary, decoys,
            abbreviations: see the module docstring.
    """

    def __init__(
        self,
        trained: Sequence[str],
        embed: Callable[[list[str]], torch.Tensor],
        *,
        spelling_threshold: float = SPELLING_THRESHOLD,
        embedding_threshold: float = EMBEDDING_THRESHOLD,
        embedding_margin: float = EMBEDDING_MARGIN,
        glossary: bool = GLOSSARY,
        decoys: bool = DECOYS,
        abbreviations: bool = ABBREVIATIONS,
    ) -> None:
        self.trained = list(dict.fromkeys(canonical_target(t) for t in trained))
        self.embed = embed
        self.spelling_threshold = spelling_threshold
        self.embedding_threshold = embedding_threshold
        self.embedding_margin = embedding_margin
        self.glossary = glossary
        self.abbreviations = abbreviations
        self.decoys = _decoys(self.trained) if decoys else []
        self._anchor_cache: dict[str | None, tuple[list[str], torch.Tensor, torch.Tensor]] = {}

    def _anchors(self, modality: str | None) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """The targets scored, the anchors' embeddings ``(A, E)`` and each anchor's target index
        ``(A,)``; computed once per modality (the anchors depend on nothing else)."""
        from duplus.text.prompts import t2_prompts

        if modality in self._anchor_cache:
            return self._anchor_cache[modality]
        names = [*self.trained, *self.decoys]
        owners, texts = [], []
        for k, t in enumerate(names):
            names_of = t2_prompts(t, modality, synonyms=True) if k < len(self.trained) else synonyms(t)
            for p in (*names_of, *(descriptions(t) if self.glossary else ())):
                owners.append(k)
                texts.append(p)
        entry = (names, self.embed(texts).float(), torch.tensor(owners))
        self._anchor_cache[modality] = entry
        return entry

    def meaning_scores(self, texts: Sequence[str], modality: str | None = None) -> list[dict[str, float]]:
        """``{target: max cosine similarity to its anchors}`` for each text: the trained targets
        and, with decoys, the known targets the model was not trained on."""
        names, anchors, owners = self._anchors(modality)
        sims = self.embed(list(texts)).float() @ anchors.T  # (N, A)
        best = torch.full((sims.shape[0], len(names)), -1.0)
        best.scatter_reduce_(1, owners.expand_as(sims), sims, reduce="amax")
        return [dict(zip(names, row, strict=True)) for row in best.tolist()]

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

        def side_ok(t: str) -> bool:
            return not said or not sides(t) or sides(t) <= said

        allowed = [t for t in self.trained if side_ok(t)]
        if not allowed:
            return TargetMatch(
                text, None, "unmatched", None, None, f"no trained target on the side it names ({said})"
            )
        prefix = prefix_of(text, allowed, abbreviations=self.abbreviations)
        if prefix:
            norm = normalise_name(text).replace(" ", "")
            starts = any(normalise_name(n).replace(" ", "").startswith(norm) for n in synonyms(prefix))
            return TargetMatch(text, prefix, "prefix" if starts else "abbreviation", 1.0, prefix)
        spelled = max(((spelling_similarity(text, t), t) for t in allowed), key=lambda x: x[0])
        if spelled[0] >= self.spelling_threshold:
            return TargetMatch(text, spelled[1], "spelling", round(spelled[0], 4), spelled[1])
        competing = allowed + [d for d in self.decoys if side_ok(d)]
        ranked = sorted(((meaning[t], t) for t in competing), reverse=True)
        (s1, best), s2 = ranked[0], ranked[1][0] if len(ranked) > 1 else -1.0
        if best not in self.trained:
            nearest = max(allowed, key=lambda t: meaning[t])
            reason = f"it reads closest to {best!r} ({s1:.2f}), a target this model was not trained on"
            return TargetMatch(text, None, "unmatched", round(meaning[nearest], 4), nearest, reason)
        if s1 >= self.embedding_threshold and s1 - s2 >= self.embedding_margin:
            return TargetMatch(text, best, "meaning", round(s1, 4), best)
        reason = (
            f"similarity {s1:.2f} < {self.embedding_threshold:.2f}"
            if s1 < self.embedding_threshold
            else f"{best!r} leads the runner-up by {s1 - s2:.3f} < {self.embedding_margin:.2f}"
        )
        return TargetMatch(text, None, "unmatched", round(s1, 4), best, reason)


__all__ = [
    "ABBREVIATIONS",
    "DECOYS",
    "EMBEDDING_MARGIN",
    "EMBEDDING_THRESHOLD",
    "GLOSSARY",
    "KNOWN_TARGETS",
    "SPELLING_THRESHOLD",
    "TargetMatch",
    "TargetMatcher",
    "edit_distance",
    "prefix_of",
    "sides",
    "spelling_similarity",
]
