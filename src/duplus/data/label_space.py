"""The global label space: one canonical name per anatomical target, and the synonyms that map to it.

Dataset label maps name their classes in many ways ("left kidney", "kidney_left", "Kidney (L)",
"LKidney"); :func:`canonical_target` maps each to one canonical, lower-case, space-separated name,
which is also the default T2 prompt. Unknown names are not an error: the text encoder reads free
text, so they are normalised and kept.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# canonical name -> synonyms (the canonical name itself is always a synonym)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "liver": ("hepar", "liver parenchyma"),
    "spleen": ("lien",),
    "left kidney": ("kidney left", "kidney l", "l kidney", "lkidney", "kidney_l", "left renal"),
    "right kidney": ("kidney right", "kidney r", "r kidney", "rkidney", "kidney_r", "right renal"),
    "kidney": ("kidneys", "renal"),
    "gallbladder": ("gall bladder",),
    "esophagus": ("oesophagus",),
    "stomach": (),
    "aorta": ("abdominal aorta",),
    "inferior vena cava": ("ivc", "postcava", "vena cava inferior"),
    "portal vein and splenic vein": ("portal and splenic vein", "portal vein", "pv sv"),
    "pancreas": (),
    "left adrenal gland": ("adrenal gland left", "left adrenal", "adrenal l", "l adrenal"),
    "right adrenal gland": ("adrenal gland right", "right adrenal", "adrenal r", "r adrenal"),
    "duodenum": (),
    "bladder": ("urinary bladder",),
    "prostate uterus": ("prostate/uterus", "prostate or uterus"),
    "liver tumour": ("liver tumor", "liver lesion", "hepatic tumour", "hepatic tumor", "liver cancer"),
    "kidney tumour": ("kidney tumor", "renal tumour", "renal tumor", "kidney cancer"),
    "kidney cyst": ("renal cyst",),
    "pancreas tumour": ("pancreas tumor", "pancreatic tumour", "pancreatic tumor", "pancreas cancer"),
    "lung tumour": ("lung tumor", "lung cancer", "lung nodule"),
    "left lung": ("lung left", "lung l"),
    "right lung": ("lung right", "lung r"),
    "heart": (),
    "trachea": (),
    "spinal cord": ("spinal canal",),
    "brainstem": ("brain stem",),
    "left eye": ("eye left", "eye l"),
    "right eye": ("eye right", "eye r"),
    "left parotid": ("parotid left", "parotid l", "left parotid gland"),
    "right parotid": ("parotid right", "parotid r", "right parotid gland"),
    "mandible": ("mandible bone",),
    "white matter": ("wm", "cerebral white matter"),
    "grey matter": ("gray matter", "gm", "cortical grey matter", "cortical gray matter"),
    "cerebrospinal fluid": ("csf",),
    "left ventricle": ("lv", "left ventricular blood pool", "left ventricle cavity"),
    "right ventricle": ("rv", "right ventricular blood pool", "right ventricle cavity"),
    "myocardium": ("myo", "left ventricular myocardium", "lv myocardium"),
    "primary tumour": ("gtvp", "primary gross tumour volume", "primary gross tumor volume", "primary tumor"),
    "lymph node": (
        "gtvn",
        "nodal gross tumour volume",
        "nodal gross tumor volume",
        "lymph nodes",
        "metastatic lymph node",
    ),
    "lesion": ("fdg avid lesion", "tumour lesion", "tumor lesion"),
    "hippocampus": (),
    "brain tumour": ("brain tumor", "glioma"),
}


# Names in German, French and Spanish and the Latin anatomical names (Terminologia Anatomica) of
# common targets: the default text encoder (all-MiniLM-L6-v2) reads English only, and maps none of
# them (docs/EXPERIMENTS.md, "Unseen wordings"). Accents are folded by normalise_name.
OTHER_LANGUAGES: dict[str, tuple[str, ...]] = {
    "liver": ("leber", "foie", "higado", "iecur", "jecur"),
    "spleen": ("milz", "rate", "bazo", "splen"),
    "left kidney": ("linke niere", "rein gauche", "rinon izquierdo", "ren sinister"),
    "right kidney": ("rechte niere", "rein droit", "rinon derecho", "ren dexter"),
    "kidney": ("niere", "nieren", "rein", "reins", "rinon", "rinones", "ren", "renes"),
    "gallbladder": ("gallenblase", "vesicule biliaire", "vesicula biliar", "vesica biliaris"),
    "stomach": ("magen", "estomac", "estomago", "gaster", "ventriculus"),
    "aorta": ("aorte",),
    "pancreas": ("bauchspeicheldruse", "bauchspeicheldruese"),
    "bladder": ("harnblase", "vessie", "vejiga", "vesica urinaria"),
    "heart": ("herz", "coeur", "corazon", "cor"),
    "white matter": ("weisse substanz", "substance blanche", "sustancia blanca", "substantia alba"),
    "grey matter": ("graue substanz", "substance grise", "sustancia gris", "substantia grisea"),
    "cerebrospinal fluid": ("liquor", "liquide cephalorachidien", "liquido cefalorraquideo",
                            "liquor cerebrospinalis"),
    "liver tumour": ("lebertumor", "tumeur du foie", "tumeur hepatique", "tumor hepatico"),
}  # fmt: skip


def normalise_name(name: str) -> str:
    """Lower-case, fold accents, turn ``_``/``-``/brackets into spaces, collapse whitespace;
    ``(L)`` -> ``l``; ``"Weiße"`` -> ``"weisse"``."""
    text = unicodedata.normalize("NFKD", str(name).strip().lower().replace("ß", "ss"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[_\-/(),.]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _build_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for canonical, syns in SYNONYMS.items():
        for s in (canonical, *syns, *OTHER_LANGUAGES.get(canonical, ())):
            lookup[normalise_name(s)] = canonical
            lookup[normalise_name(s).replace(" ", "")] = canonical
    return lookup


_LOOKUP = _build_lookup()


def canonical_target(name: str) -> str:
    """Map a class name from any dataset to its canonical target name (or its normalised form)."""
    norm = normalise_name(name)
    if norm in _LOOKUP:
        return _LOOKUP[norm]
    if norm.replace(" ", "") in _LOOKUP:
        return _LOOKUP[norm.replace(" ", "")]
    return norm


def synonyms(target: str, *, other_languages: bool = False) -> tuple[str, ...]:
    """All known English names of ``target`` (canonical first), with its names in other languages
    when asked (:data:`OTHER_LANGUAGES`); ``(target,)`` for free-text targets."""
    canonical = canonical_target(target)
    extra = OTHER_LANGUAGES.get(canonical, ()) if other_languages else ()
    return (canonical, *SYNONYMS.get(canonical, ()), *extra)


LESION_WORDS: tuple[str, ...] = (
    "tumour",
    "tumor",
    "lesion",
    "lymph node",
    "cancer",
    "metasta",
    "nodule",
    "glioma",
)
"""Words that mark a target as a lesion rather than an organ or tissue (see :func:`is_lesion`)."""


def is_lesion(target: str) -> bool:
    """Whether ``target`` is a lesion (tumour, lymph node, ...) rather than an organ or tissue.

    Metrics are summarised separately for the two: lesions are small, often absent and far harder,
    and averaging them with organs hides both numbers.
    """
    name = canonical_target(target)
    return any(w in name for w in LESION_WORDS)


def is_known_target(name: str) -> bool:
    return canonical_target(name) in SYNONYMS


def nearest_known_target(name: str) -> tuple[str, float]:
    """The closest known canonical target by string similarity, and the similarity in [0, 1]."""
    norm = normalise_name(name)
    best, score = "", 0.0
    for key, canonical in _LOOKUP.items():
        s = difflib.SequenceMatcher(None, norm, key).ratio()
        if s > score:
            best, score = canonical, s
    return best, score


@dataclass
class LabelSpace:
    """An ordered set of canonical target names: the targets a model was trained to segment.

    It is stored in checkpoints, so a predictor knows which targets it has seen.
    """

    targets: list[str] = field(default_factory=list)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LabelSpace:
        space = cls()
        space.extend(names)
        return space

    def extend(self, names: Iterable[str]) -> None:
        for n in names:
            c = canonical_target(n)
            if c not in self.targets:
                self.targets.append(c)

    def index(self, name: str) -> int:
        return self.targets.index(canonical_target(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_target(name) in self.targets

    def __len__(self) -> int:
        return len(self.targets)

    def to_dict(self) -> dict:
        return {"targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpace:
        return cls(targets=list(d.get("targets", [])))


def canonical_label_map(labels: dict[int, str] | Sequence[tuple[int, str]]) -> dict[int, str]:
    """Canonicalise a ``{label value: class name}`` map, dropping the background (value 0)."""
    items = labels.items() if isinstance(labels, dict) else labels
    return {int(v): canonical_target(n) for v, n in items if int(v) != 0}
