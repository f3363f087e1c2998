"""Free text resolved to trained targets (duplus.text.matching): names, spelling, sides, meaning, refusal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from duplus.data.label_space import canonical_target, normalise_name
from duplus.text import matching
from duplus.text.matching import TargetMatcher, edit_distance, sides, spelling_similarity

TRAINED = [
    "liver",
    "spleen",
    "left kidney",
    "right kidney",
    "white matter",
    "grey matter",
    "cerebrospinal fluid",
]
VOCAB = sorted(
    {w for t in TRAINED for w in t.split()} | {"organ", "brain", "fluid", "around", "hepatic", "the"}
)


def bag_of_words(texts: list[str]) -> torch.Tensor:
    """A stand-in encoder: L2-normalised counts of VOCAB words (plus one 'other' slot)."""
    out = torch.zeros(len(texts), len(VOCAB) + 1)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z]+", t.lower()):
            out[i, VOCAB.index(w) if w in VOCAB else -1] += 1
    return torch.nn.functional.normalize(out + 1e-6, dim=1)


@pytest.fixture
def matcher() -> TargetMatcher:
    return TargetMatcher(TRAINED, bag_of_words)


def test_trained_and_table_names(matcher: TargetMatcher) -> None:
    got = {m.text: m for m in matcher.match(["liver", "hepar", "Kidney (L)", "Leber", "rein droit", "csf"])}
    assert {t: m.target for t, m in got.items()} == {
        "liver": "liver", "hepar": "liver", "Kidney (L)": "left kidney", "Leber": "liver",
        "rein droit": "right kidney", "csf": "cerebrospinal fluid",
    }  # fmt: skip
    assert {m.how for m in got.values()} == {"trained name"}


def test_a_known_target_the_model_was_not_trained_on_is_unmatched(matcher: TargetMatcher) -> None:
    (m,) = matcher.match(["gallbladder"])
    assert m.target is None and m.how == "unmatched" and "not trained on" in m.reason


def test_misspellings_map_by_spelling_and_keep_their_side(matcher: TargetMatcher) -> None:
    got = {
        m.text: m
        for m in matcher.match(["livr", "spleeen", "lt kidney", "rigth kidney", "white mater", "spl"])
    }
    assert got["livr"].target == "liver" and got["livr"].how == "abbreviation"  # its letters in order
    assert got["spleeen"].target == "spleen"
    assert got["lt kidney"].target == "left kidney" and got["rigth kidney"].target == "right kidney"
    assert got["spl"].target == "spleen" and got["spl"].how == "prefix"
    assert got["white mater"].target == "white matter"
    assert sides("lt. kidney") == {"left"} and sides("kidney, right") == {"right"} and not sides("liver")


def test_a_side_is_never_crossed(matcher: TargetMatcher) -> None:
    """'left' in a text rules out the right-sided targets, whatever the encoder says."""
    for m in matcher.match(["the organ on the left", "left kidney region", "left renal thing"]):
        assert m.target != "right kidney"


def test_sides_are_read_in_other_languages_too(matcher: TargetMatcher) -> None:
    """'sinister kidney' was read as the right kidney by the encoder (third test set): a side named
    in Latin, German, French, Spanish, Italian or Portuguese rules out the other side as well."""
    assert sides("sinister kidney") == {"left"} and sides("rene destro") == {"right"}
    assert sides("Niere links") == {"left"} and sides("riñón derecho") == {"right"}
    assert sides("rim esquerdo") == {"left"} and sides("rein droite") == {"right"}
    assert not sides("sinus") and not sides("linked") and not sides("direct")
    for m in matcher.match(["sinister kidney", "kidney, sinistra side"]):
        assert m.target != "right kidney"
    for m in matcher.match(["dexter kidney", "kidney on the derecha side"]):
        assert m.target != "left kidney"


def test_meaning_maps_close_texts_and_refuses_far_ones() -> None:
    m = TargetMatcher(TRAINED, bag_of_words, spelling_threshold=0.99, embedding_margin=0.01, glossary=False)
    close, far = m.match(["the fluid around the brain cerebrospinal", "banana bread"])
    assert close.target == "cerebrospinal fluid" and close.how == "meaning"
    assert far.target is None and far.how == "unmatched" and far.nearest in TRAINED
    assert "<" in far.reason


def test_a_tie_between_two_targets_is_refused() -> None:
    """Equally close to two trained targets: the margin refuses to guess."""
    m = TargetMatcher(
        TRAINED, bag_of_words, spelling_threshold=0.99, embedding_threshold=0.0, embedding_margin=0.05
    )
    (tie,) = m.match(["matter"])  # white matter and grey matter alike
    assert tie.target is None and "runner-up" in tie.reason


def test_spelling_similarity_and_accents() -> None:
    assert spelling_similarity("livr", "liver") == pytest.approx(0.8)  # one letter missing of five
    assert spelling_similarity("lievr", "liver") == pytest.approx(0.8)  # one swap
    # a different phrase ("hepatic tumour" is a name of the liver tumour): below the threshold
    assert spelling_similarity("hepatic tissue", "liver tumour") < matching.SPELLING_THRESHOLD
    assert edit_distance("ca", "ac") == 1 and edit_distance("kitten", "sitting") == 3
    assert normalise_name("Hígado") == "higado" and normalise_name("Weiße Substanz") == "weisse substanz"
    assert (
        canonical_target("hígado") == "liver"
        and canonical_target("Liquide céphalo-rachidien") == "cerebrospinal fluid"
    )


def test_thresholds_are_the_ones_chosen_on_validation_wordings() -> None:
    """The module's constants are what experiments/choose_matching.py chose; changing one means
    choosing again on the validation wordings (never on the test wordings)."""
    chosen = json.loads(
        (Path(__file__).resolve().parents[2] / "experiments" / "results" / "matching_choice.json").read_text()
    )["chosen"]
    assert (
        chosen["spelling"], chosen["embedding"], chosen["margin"],
    ) == (matching.SPELLING_THRESHOLD, matching.EMBEDDING_THRESHOLD, matching.EMBEDDING_MARGIN)  # fmt: skip
    assert (chosen["glossary"], chosen["decoys"], chosen["abbreviations"]) == (
        matching.GLOSSARY, matching.DECOYS, matching.ABBREVIATIONS,
    )  # fmt: skip
    default = TargetMatcher(["liver"], bag_of_words)  # the predictor builds it with the defaults
    assert (default.glossary, bool(default.decoys), default.abbreviations) == (
        matching.GLOSSARY, matching.DECOYS, matching.ABBREVIATIONS,
    )  # fmt: skip


def test_wording_sets_are_disjoint_and_unseen_in_training() -> None:
    """Validation and test wordings share nothing, and none is a training prompt of its target."""
    from duplus.demo.wordings import TEST, VALIDATION
    from duplus.text.prompts import t2_prompts

    val, test = {normalise_name(w.text) for w in VALIDATION}, {normalise_name(w.text) for w in TEST}
    assert not val & test
    for w in (*VALIDATION, *TEST):
        if w.target is not None:
            seen = {
                normalise_name(p)
                for m in (None, "CT", "MRI")
                for p in t2_prompts(w.target, m, synonyms=False)
            }
            assert normalise_name(w.text) not in seen, w


def _glossary_words(texts: list[str]) -> torch.Tensor:
    """A stand-in encoder over every word of the names and descriptions: L2-normalised counts."""
    from duplus.data.label_space import SYNONYMS
    from duplus.text.glossary import DESCRIPTIONS

    vocab = sorted(
        {w for t, d in DESCRIPTIONS.items() for p in (t, *d) for w in re.findall(r"[a-z]+", p)}
        | {w for t in SYNONYMS for w in re.findall(r"[a-z]+", t)}
    )
    out = torch.zeros(len(texts), len(vocab) + 1)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z]+", t.lower()):
            out[i, vocab.index(w) if w in vocab else -1] += 1
    return torch.nn.functional.normalize(out + 1e-6, dim=1)


def test_abbreviations_spell_a_name_in_order_and_prefer_the_organ_to_its_tumour() -> None:
    trained = [*TRAINED, "liver tumour"]
    on = TargetMatcher(trained, bag_of_words, embedding_threshold=1.01, abbreviations=True)
    got = {m.text: m for m in on.match(["spln", "liv", "lvr", "wht", "kid"])}
    assert got["spln"].target == "spleen" and got["spln"].how == "abbreviation"
    assert got["liv"].target == "liver" and got["liv"].how == "prefix"  # not the liver tumour
    assert got["lvr"].target == "liver" and got["lvr"].how == "abbreviation"
    assert got["wht"].target == "white matter"
    assert got["kid"].target is None  # left and right kidney alike: no guess
    off = TargetMatcher(trained, bag_of_words, embedding_threshold=1.01, abbreviations=False)
    assert [m.target for m in off.match(["spln", "liv"])] == [None, None]


def test_descriptions_map_through_the_glossary_and_decoys_keep_untrained_organs_out() -> None:
    text = "the lymphoid organ that removes old red blood cells"  # words of the spleen's glossary entry
    with_glossary = TargetMatcher(
        TRAINED, _glossary_words, spelling_threshold=0.99, embedding_threshold=0.3, decoys=True
    )
    (m,) = with_glossary.match([text])
    assert m.target == "spleen" and m.how == "meaning"
    without = TargetMatcher(
        TRAINED,
        _glossary_words,
        spelling_threshold=0.99,
        embedding_threshold=0.3,
        glossary=False,
        decoys=True,
    )
    assert without.match([text])[0].target != "spleen"
    # nearest to the gallbladder's description, a target this model was not trained on
    bile = "the small sac that stores and concentrates bile"
    decoyed = with_glossary.match([bile])[0]
    assert decoyed.target is None and "gallbladder" in decoyed.reason and decoyed.nearest in TRAINED
    no_decoys = TargetMatcher(
        TRAINED, _glossary_words, spelling_threshold=0.99, embedding_threshold=0.0, decoys=False
    )
    assert no_decoys.match([bile])[0].target is not None  # without decoys the nearest organ takes it


def test_decoys_leave_out_general_names_of_trained_targets() -> None:
    from duplus.text.matching import _decoys

    decoys = _decoys(TRAINED)
    assert "gallbladder" in decoys and "pancreas" in decoys
    assert "kidney" not in decoys and "liver" not in decoys  # 'kidney' would steal 'left kidney'


def test_no_test_wording_is_written_into_the_tables() -> None:
    """The test wordings were written before the glossary; none may be copied into it, and the
    name tables resolve exactly the test wordings they resolved when the test set was written."""
    from duplus.data.label_space import is_known_target
    from duplus.demo.wordings import TEST
    from duplus.text.glossary import DESCRIPTIONS

    glossary = {normalise_name(p) for d in DESCRIPTIONS.values() for p in d}
    assert not [w.text for w in TEST if normalise_name(w.text) in glossary]
    assert {w.text for w in TEST if is_known_target(w.text)} == {
        "left renal", "rkidney", "cortical grey matter", "C.S.F.", "W.M.", "kidney, left",
        "rechte Niere", "sustancia gris", "líquido cefalorraquídeo", "left adrenal", "hippocampus",
    }  # fmt: skip
