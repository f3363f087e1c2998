"""Wordings held out from training, for the demo's unseen-wording experiment.

Training sees each target's canonical name in the templates of :mod:`duplus.text.prompts`;
the synonym table of :mod:`duplus.data.label_space` maps a few more names at inference. None of
the wordings below is a training prompt. Each names one of the demo model's targets, or nothing
it was trained on (``target=None``).

Two disjoint sets: ``VALIDATION`` chooses the free-text mapping's design and thresholds
(:mod:`duplus.text.matching`); ``TEST`` is reported and was never used for a choice. Each set was
written before any of its wordings was measured. ``VALIDATION`` is the first validation set and
the first test set, which became validation when its first measurement showed a flaw in the
mapping (``docs/EXPERIMENTS.md``), plus ``VALIDATION_THIRD``: the second test set, reported once
(21 of its 28 wordings within 2 Dice points of the canonical name) and then moved to validation,
because its misses were read before the mapping was improved. ``TEST`` is the third test set,
written (and committed on its own) before the mapping changed and before any of it was measured;
it was measured once (32 of 39 within 2 points) and its misses have been read, so the next change
to the mapping moves it to validation and needs a fourth test set.
"""

from __future__ import annotations

from dataclasses import dataclass

WORDING_CLASSES: tuple[str, ...] = (
    "synonym table",  # names the synonym table maps, not training prompts
    "clinical or Latin name",
    "description",
    "typo",
    "abbreviation",
    "word order",
    "second language",
    "names no trained target",
)
"""The classes of the unseen-wording table, in its order."""


@dataclass(frozen=True)
class Wording:
    """One held-out wording: its text, class, the trained target it names (``None``: none)."""

    text: str
    kind: str
    target: str | None


def _w(kind: str, pairs: list[tuple[str, str | None]]) -> list[Wording]:
    return [Wording(text, kind, target) for text, target in pairs]


VALIDATION: tuple[Wording, ...] = tuple(
    _w("synonym table", [("hepar", "liver"), ("kidney_l", "left kidney"), ("gray matter", "grey matter")])
    + _w(
        "clinical or Latin name",
        [
            ("hepatic parenchyma", "liver"),
            ("splenic tissue", "spleen"),
            ("ren sinister", "left kidney"),
            ("cerebral cortex", "grey matter"),
        ],
    )  # fmt: skip
    + _w(
        "description",
        [
            ("the large organ in the right upper abdomen", "liver"),
            ("the organ behind the stomach on the left that filters blood", "spleen"),
            ("the fluid around the brain", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "typo",
        [
            ("livr", "liver"),
            ("spleeen", "spleen"),
            ("rigth kidney", "right kidney"),
            ("white mater", "white matter"),
        ],
    )  # fmt: skip
    + _w("abbreviation", [("lt kidney", "left kidney"), ("GM", "grey matter"), ("liv", "liver")])
    + _w(
        "word order",
        [
            ("kidney on the right", "right kidney"),
            ("matter, white", "white matter"),
            ("fluid, cerebrospinal", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "second language",
        [
            ("Leber", "liver"),
            ("rate", "spleen"),
            ("riñón derecho", "right kidney"),
            ("substance blanche", "white matter"),
        ],
    )  # fmt: skip
    + _w(
        "names no trained target",
        [
            ("gallbladder", None),
            ("femur", None),
            ("the heart", None),
            ("banana", None),
            ("urinary bladder", None),
            ("appendix", None),
        ],
    )  # fmt: skip
)

VALIDATION_SECOND: tuple[Wording, ...] = tuple(
    _w(
        "synonym table",
        [("lien", "spleen"), ("kidney right", "right kidney"), ("csf", "cerebrospinal fluid")],
    )
    + _w(
        "clinical or Latin name",
        [
            ("hepatic tissue", "liver"),
            ("splen", "spleen"),
            ("ren dexter", "right kidney"),
            ("left renal parenchyma", "left kidney"),
            ("cerebral white matter tracts", "white matter"),
        ],
    )  # fmt: skip
    + _w(
        "description",
        [
            ("the biggest organ under the right ribs", "liver"),
            ("the bean-shaped organ on the patient's left side", "left kidney"),
            ("the outer layer of the brain", "grey matter"),
        ],
    )  # fmt: skip
    + _w(
        "typo",
        [
            ("lievr", "liver"),
            ("spleem", "spleen"),
            ("left kindey", "left kidney"),
            ("grey mattre", "grey matter"),
            ("cerebrospinal fluis", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "abbreviation",
        [
            ("rt kidney", "right kidney"),
            ("WM", "white matter"),
            ("spl", "spleen"),
            ("lft kidney", "left kidney"),
        ],
    )  # fmt: skip
    + _w(
        "word order",
        [("kidney on the left", "left kidney"), ("matter, grey", "grey matter"), ("liver the", "liver")],
    )  # fmt: skip
    + _w(
        "second language",
        [
            ("foie", "liver"),
            ("Milz", "spleen"),
            ("linke Niere", "left kidney"),
            ("substance grise", "grey matter"),
            ("hígado", "liver"),
        ],
    )  # fmt: skip
    + _w(
        "names no trained target",
        [
            ("stomach", None),
            ("left lung", None),
            ("thyroid gland", None),
            ("a cup of coffee", None),
            ("pancreas", None),
            ("vertebral body", None),
        ],
    )  # fmt: skip
)

VALIDATION = VALIDATION + VALIDATION_SECOND

VALIDATION_THIRD: tuple[Wording, ...] = tuple(
    _w(
        "synonym table",
        [
            ("liver parenchyma", "liver"),
            ("Kidney R", "right kidney"),
            ("cerebral white matter", "white matter"),
        ],
    )
    + _w(
        "clinical or Latin name",
        [
            ("hepatic lobes", "liver"),
            ("splenic parenchyma", "spleen"),
            ("right renal parenchyma", "right kidney"),
            ("substantia grisea", "grey matter"),
            ("cerebral myelinated tissue", "white matter"),
        ],
    )  # fmt: skip
    + _w(
        "description",
        [
            ("the organ that stores glycogen and makes bile", "liver"),
            ("the fist-sized organ in the left upper quadrant", "spleen"),
            ("the deep tissue of the brain made of nerve fibres", "white matter"),
        ],
    )  # fmt: skip
    + _w(
        "typo",
        [
            ("liverr", "liver"),
            ("slpeen", "spleen"),
            ("right kidnye", "right kidney"),
            ("whtie matter", "white matter"),
            ("cerebrospinl fluid", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "abbreviation",
        [
            ("L. kidney", "left kidney"),
            ("R kid", "right kidney"),
            ("spln", "spleen"),
            ("cereb. spinal fluid", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "word order",
        [
            ("kidney (right side)", "right kidney"),
            ("spleen, the", "spleen"),
            ("matter that is white", "white matter"),
        ],
    )
    + _w(
        "second language",
        [
            ("rein gauche", "left kidney"),
            ("bazo", "spleen"),
            ("weiße Substanz", "white matter"),
            ("Liquor", "cerebrospinal fluid"),
            ("fegato", "liver"),
        ],
    )  # fmt: skip
    + _w(
        "names no trained target",
        [
            ("gall bladder", None),
            ("esophagus", None),
            ("right lung", None),
            ("a chest x-ray", None),
            ("the patient's name", None),
            ("femoral head", None),
        ],
    )  # fmt: skip
)

VALIDATION = VALIDATION + VALIDATION_THIRD

TEST: tuple[Wording, ...] = tuple(
    _w(
        "synonym table",
        [("left renal", "left kidney"), ("rkidney", "right kidney"), ("cortical grey matter", "grey matter")],
    )
    + _w(
        "clinical or Latin name",
        [
            ("splenic organ", "spleen"),
            ("hepatic organ", "liver"),
            ("sinister kidney", "left kidney"),
            ("right renal cortex and medulla", "right kidney"),
            ("cortical ribbon", "grey matter"),
            ("subcortical white matter", "white matter"),
            ("intracranial fluid spaces", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "description",
        [
            ("the organ that detoxifies the blood and produces bile", "liver"),
            ("the organ in the left upper abdomen next to the stomach", "spleen"),
            ("the organ on the right that produces urine", "right kidney"),
            ("brain tissue made of neuron cell bodies", "grey matter"),
            ("the clear liquid that bathes the brain and spinal cord", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "typo",
        [
            ("lvier", "liver"),
            ("speen", "spleen"),
            ("lfet kidney", "left kidney"),
            ("gery matter", "grey matter"),
            ("white mattter", "white matter"),
            ("cerebrospinal flud", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "abbreviation",
        [
            ("lt kid", "left kidney"),
            ("right kid.", "right kidney"),
            ("lvr", "liver"),
            ("sple", "spleen"),
            ("C.S.F.", "cerebrospinal fluid"),
            ("W.M.", "white matter"),
        ],
    )  # fmt: skip
    + _w(
        "word order",
        [
            ("kidney, left", "left kidney"),
            ("the right-sided kidney", "right kidney"),
            ("matter which is grey", "grey matter"),
            ("the fluid: cerebrospinal", "cerebrospinal fluid"),
            ("liver, whole", "liver"),
        ],
    )  # fmt: skip
    + _w(
        "second language",
        [
            ("fígado", "liver"),
            ("lever", "liver"),
            ("milza", "spleen"),
            ("rechte Niere", "right kidney"),
            ("sustancia gris", "grey matter"),
            ("witte stof", "white matter"),
            ("líquido cefalorraquídeo", "cerebrospinal fluid"),
        ],
    )  # fmt: skip
    + _w(
        "names no trained target",
        [
            ("the head of the pancreas", None),
            ("left adrenal", None),
            ("thyroid", None),
            ("a tree", None),
            ("hippocampus", None),
            ("bile duct", None),
            ("aortic arch", None),
        ],
    )  # fmt: skip
)

T1_VALIDATION: tuple[tuple[str, str], ...] = (
    ("A computed tomography scan of the abdomen", "CT"),
    ("abdominal CT", "CT"),
    ("CT of the tummy", "CT"),
    ("MR image of the abdomen", "MRI"),
)
"""T1 wordings (text, modality) of the validation set: the modality's abdominal T1 in other words."""

T1_TEST: tuple[tuple[str, str], ...] = (
    ("CT of the belly", "CT"),
    ("contrast-enhanced abdominal CT", "CT"),
    ("an abdominal CT scan", "CT"),
    ("magnetic resonance imaging of the abdomen", "MRI"),
    ("abdomen MRI", "MRI"),
)
"""T1 wordings (text, modality) of the test set, never used for a choice."""
