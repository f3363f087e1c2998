"""Prompt templates."""

from __future__ import annotations

import random

import numpy as np
import pytest

from duplus.data.label_space import SYNONYMS
from duplus.errors import InputError
from duplus.text.prompts import (
    indefinite_article,
    sample_t2_prompt,
    single_prompt_text,
    t2_prompts,
)
from duplus.vocab import MODALITY_WORDS, normalise_modality, t1_prompt


@pytest.mark.parametrize(
    ("modality", "region", "expected"),
    [
        ("CT", "abdomen", "A CT scan of the abdomen"),
        ("PETCT", "head and neck", "A PET/CT scan of the head and neck"),
        ("pet/ct", "whole body", "A PET/CT scan of the whole body"),
        ("PET", "whole body", "A PET scan of the whole body"),
    ],
)
def test_t1_template(modality: str, region: str, expected: str) -> None:
    assert t1_prompt(normalise_modality(modality), region) == expected


def test_t1_mri_and_unknown_modality() -> None:
    assert t1_prompt(normalise_modality("MR"), "brain").endswith(f"{MODALITY_WORDS['MRI']} scan of the brain")
    with pytest.raises(InputError, match="unknown modality"):
        normalise_modality("ultrasound")


@pytest.mark.parametrize("target", [*SYNONYMS, "some new structure"])
@pytest.mark.parametrize("modality", [None, "CT", "MRI"])
def test_at_least_five_distinct_paraphrases(target: str, modality: str | None) -> None:
    prompts = t2_prompts(target, modality)
    assert prompts[0] == target
    assert len(set(prompts)) == len(prompts) >= 6
    assert all(p and p == p.strip() for p in prompts)


def test_t2_uses_canonical_name_synonyms_and_modality() -> None:
    prompts = t2_prompts("Liver", "CT")
    assert prompts[0] == "liver"
    assert "hepar" in prompts
    assert "a CT scan of a liver" in prompts
    assert "an MRI scan of an aorta" in t2_prompts("aorta", "MRI")
    assert t2_prompts("kidney_l")[0] == "left kidney"


def test_indefinite_article() -> None:
    assert [indefinite_article(w) for w in ("CT", "MRI", "PET", "aorta", "liver", "PET/CT")] == [
        "a",
        "an",
        "a",
        "an",
        "a",
        "a",
    ]


def test_sampling_is_deterministic_given_rng() -> None:
    a = [sample_t2_prompt("spleen", "CT", np.random.default_rng(3)) for _ in range(3)]
    assert len(set(a)) == 1
    rng1, rng2 = np.random.default_rng(7), np.random.default_rng(7)
    seq1 = [sample_t2_prompt("liver", "CT", rng1) for _ in range(20)]
    seq2 = [sample_t2_prompt("liver", "CT", rng2) for _ in range(20)]
    assert seq1 == seq2
    assert len(set(seq1)) > 3  # it does vary
    assert set(seq1) <= set(t2_prompts("liver", "CT"))
    r1 = [sample_t2_prompt("liver", None, random.Random(1)) for _ in range(5)]
    r2 = [sample_t2_prompt("liver", None, random.Random(1)) for _ in range(5)]
    assert r1 == r2


def test_single_prompt_text() -> None:
    assert single_prompt_text(t1_prompt("CT", "abdomen"), "liver") == "A CT scan of the abdomen: liver"
