"""Prompt templates: T1 (modality + region, conditions the backbone) and T2 (the target, drives the head).

* T1 is one sentence per dataset, ``"A CT scan of the abdomen"`` (:func:`t1_prompt`, defined once
  in :mod:`duplus.data.specs`).
* T2 is a target's canonical name or one of its paraphrases (:func:`t2_prompts`); training samples
  one per step (:func:`sample_t2_prompt`), inference uses the canonical name. The paraphrases
  combine a few templates ("the liver", "segmentation of the liver", "a CT scan of a liver", ...)
  with the synonyms of :mod:`duplus.data.label_space` ("hepar").
* The single-prompt ablation joins both into one sentence (:func:`single_prompt_text`).
"""

from __future__ import annotations

import random
from typing import Any

from duplus.data.label_space import canonical_target
from duplus.data.label_space import synonyms as target_synonyms
from duplus.vocab import MODALITY_WORDS, normalise_modality

# templates applied to the canonical name ({name}) and, with {modality}, to the modality word
T2_TEMPLATES: tuple[str, ...] = (
    "{name}",
    "the {name}",
    "segmentation of the {name}",
    "{name} region",
    "an image of the {name}",
    "mask of the {name}",
)
T2_MODALITY_TEMPLATES: tuple[str, ...] = (
    "{a_modality} {modality} scan of {a_name} {name}",
    "the {name} in {a_modality} {modality} image",
)


def indefinite_article(word: str) -> str:
    """``"a"`` or ``"an"`` for ``word`` by its sound (``"an MRI"``, ``"a CT"``, ``"an aorta"``)."""
    w = word.strip()
    if w.upper().startswith(("MR", "F", "H", "L", "N", "S", "X")) and w.isupper():  # spelt-out initialisms
        return "an"
    return "an" if w[:1].lower() in "aeiou" else "a"


def t2_prompts(target: str, modality: str | None = None, *, synonyms: bool = True) -> list[str]:
    """The T2 prompts of ``target``: its canonical name first, then at least five paraphrases.

    Args:
        target: any name of the target (mapped to its canonical name).
        modality: optional modality; adds templates such as ``"a CT scan of a liver"``, ``"an MRI scan of an aorta"``.
        synonyms: append the target's registry synonyms (``"kidney_l"``, ``"lkidney"``, ...).

    Returns:
        Distinct prompts in a fixed order (canonical name first, then template paraphrases, then
        synonyms).
    """
    name = canonical_target(target)
    if not name:
        raise ValueError(f"empty target name {target!r}")
    prompts = [t.format(name=name) for t in T2_TEMPLATES]
    if modality is not None:
        word = MODALITY_WORDS[normalise_modality(modality)]
        prompts += [
            t.format(
                name=name, modality=word, a_name=indefinite_article(name), a_modality=indefinite_article(word)
            )
            for t in T2_MODALITY_TEMPLATES
        ]
    if synonyms:
        prompts += list(target_synonyms(name)[1:])
    return list(dict.fromkeys(prompts))


def sample_t2_prompt(target: str, modality: str | None, rng: Any) -> str:
    """One T2 prompt of ``target`` chosen by ``rng`` (deterministic given its state): the canonical
    name or one of the sentence templates, as the authors sample one of five paraphrases per step.

    Registry synonyms are left out: many are file-naming variants (``"kidney_l"``, ``"lkidney"``)
    that a sentence encoder places farther from ``"left kidney"`` than ``"right kidney"`` is, so
    training on them teaches the head that left and right are interchangeable. They remain
    accepted at inference (the label space resolves them to the canonical name).

    Args:
        target: any name of the target.
        modality: optional modality (see :func:`t2_prompts`).
        rng: a ``numpy.random.Generator`` or a ``random.Random``.
    """
    prompts = t2_prompts(target, modality, synonyms=False)
    if isinstance(rng, random.Random):
        return prompts[rng.randrange(len(prompts))]
    return prompts[int(rng.integers(len(prompts)))]


def single_prompt_text(t1: str, t2: str) -> str:
    """The one prompt of the single-prompt ablation: ``"A CT scan of the abdomen: liver"``."""
    return f"{t1.strip()}: {t2.strip()}"


__all__ = [
    "T2_MODALITY_TEMPLATES",
    "T2_TEMPLATES",
    "indefinite_article",
    "sample_t2_prompt",
    "single_prompt_text",
    "t2_prompts",
]
