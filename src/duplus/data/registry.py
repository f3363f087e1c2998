"""The public datasets DuPLUS knows: modality, region, label map, citation and role in the paper.

The registry fills in what a dataset's own files do not say (most ``dataset.json`` files have no
body region) and documents the class order of each public set, so that nothing depends on a list
hidden in a training script. Label names are canonical target names
(:func:`duplus.data.label_space.canonical_target` maps each to itself).

Label maps follow each dataset's publication. Where a set ships labels in another form (CHAOS
stores grey levels 63/126/189/252 in PNG masks), the values here are the usual 1..K conversion in
the published order.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from duplus.errors import ConfigError

ROLE_SEGMENTATION = "segmentation training"
ROLE_PROGNOSIS = "prognosis (recurrence-free survival) and PET/CT tumour segmentation"
ROLE_EXTRA = "extra segmentation data (not in the paper's training set)"

_MSD = (
    "Antonelli M, Reinke A, Bakas S, et al. The Medical Segmentation Decathlon. "
    "Nature Communications 13:4128, 2022."
)
_STRUCTSEG = (
    "Automatic Structure Segmentation for Radiotherapy Planning Challenge (StructSeg), MICCAI 2019. "
    "https://structseg2019.grand-challenge.org"
)


@dataclass(frozen=True)
class RegisteredDataset:
    """A public dataset's identity.

    Attributes:
        name: registry key, e.g. ``"BTCV"``.
        modality: one of :data:`duplus.data.specs.MODALITIES`.
        region: body region used in the T1 prompt.
        labels: ``{label value: canonical target name}`` as published, background excluded.
        num_classes: number of foreground classes (``len(labels)``).
        citation: the reference to cite.
        role: what the DuPLUS paper uses it for.
        aliases: other names the dataset goes by (matched case- and punctuation-insensitively).
    """

    name: str
    modality: str
    region: str
    labels: dict[int, str]
    num_classes: int
    citation: str
    role: str
    aliases: tuple[str, ...] = field(default=())


def _entry(
    name: str,
    modality: str,
    region: str,
    names: list[str],
    citation: str,
    role: str,
    aliases: tuple[str, ...] = (),
) -> RegisteredDataset:
    labels = {i + 1: n for i, n in enumerate(names)}
    return RegisteredDataset(name, modality, region, labels, len(labels), citation, role, aliases)


_ABDOMEN_COMMON = [
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
]
_AMOS_15 = [
    *_ABDOMEN_COMMON,
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
    "duodenum",
    "bladder",
    "prostate uterus",
]

_STRUCTSEG_HAN_22 = [
    "brainstem",
    "left eye",
    "right eye",
    "left lens",
    "right lens",
    "left optic nerve",
    "right optic nerve",
    "optic chiasm",
    "left temporal lobe",
    "right temporal lobe",
    "pituitary",
    "left parotid",
    "right parotid",
    "left inner ear",
    "right inner ear",
    "left middle ear",
    "right middle ear",
    "left temporomandibular joint",
    "right temporomandibular joint",
    "spinal cord",
    "left mandible",
    "right mandible",
]

_ENTRIES: list[RegisteredDataset] = [
    _entry(
        "BTCV",
        "CT",
        "abdomen",
        [
            *_ABDOMEN_COMMON,
            "portal vein and splenic vein",
            "pancreas",
            "right adrenal gland",
            "left adrenal gland",
        ],
        "Landman B, Xu Z, Iglesias JE, Styner M, Langerak TR, Klein A. MICCAI Multi-Atlas Labeling "
        "Beyond the Cranial Vault - Workshop and Challenge, 2015. doi:10.7303/syn3193805",
        ROLE_SEGMENTATION,
        ("BCV", "Synapse", "Multi-Atlas Labeling Beyond the Cranial Vault", "BTCV abdomen"),
    ),
    _entry(
        "AMOS-CT",
        "CT",
        "abdomen",
        _AMOS_15,
        "Ji Y, Bai H, Ge C, et al. AMOS: A Large-Scale Abdominal Multi-Organ Benchmark for Versatile "
        "Medical Image Segmentation. NeurIPS 2022 Datasets and Benchmarks.",
        ROLE_SEGMENTATION,
        ("AMOS", "AMOS22", "AMOS CT", "AMOS22 CT"),
    ),
    _entry(
        "AMOS-MRI",
        "MRI",
        "abdomen",
        _AMOS_15[:13],
        "Ji Y, Bai H, Ge C, et al. AMOS: A Large-Scale Abdominal Multi-Organ Benchmark for Versatile "
        "Medical Image Segmentation. NeurIPS 2022 Datasets and Benchmarks. (MRI cases: bladder and "
        "prostate/uterus are not annotated.)",
        ROLE_SEGMENTATION,
        ("AMOS MR", "AMOS MRI", "AMOS22 MR", "AMOS22 MRI"),
    ),
    _entry(
        "LiTS",
        "CT",
        "abdomen",
        ["liver", "liver tumour"],
        "Bilic P, Christ P, Li HB, et al. The Liver Tumor Segmentation Benchmark (LiTS). "
        "Medical Image Analysis 84:102680, 2023.",
        ROLE_SEGMENTATION,
        ("LiTS17", "Liver Tumor Segmentation"),
    ),
    _entry(
        "KiTS19",
        "CT",
        "abdomen",
        ["kidney", "kidney tumour"],
        "Heller N, Isensee F, Maier-Hein KH, et al. The state of the art in kidney and kidney tumor "
        "segmentation in contrast-enhanced CT imaging: Results of the KiTS19 challenge. "
        "Medical Image Analysis 67:101821, 2021.",
        ROLE_SEGMENTATION,
        ("KiTS", "Kidney Tumor Segmentation"),
    ),
    _entry(
        "CHAOS-MRI",
        "MRI",
        "abdomen",
        ["liver", "right kidney", "left kidney", "spleen"],
        "Kavur AE, Gezer NS, Baris M, et al. CHAOS Challenge - combined (CT-MR) healthy abdominal organ "
        "segmentation. Medical Image Analysis 69:101950, 2021. (PNG grey levels 63/126/189/252 -> 1..4.)",
        ROLE_SEGMENTATION,
        ("CHAOS", "CHAOS MR", "CHAOS MRI"),
    ),
    _entry(
        "StructSeg-HaN",
        "CT",
        "head and neck",
        _STRUCTSEG_HAN_22,
        _STRUCTSEG + " Task 1: head-and-neck organs at risk.",
        ROLE_SEGMENTATION,
        ("StructSeg head and neck", "StructSeg HN", "StructSeg2019 Task1", "StructSeg HaN OAR"),
    ),
    _entry(
        "StructSeg-Thorax",
        "CT",
        "thorax",
        ["left lung", "right lung", "heart", "esophagus", "trachea", "spinal cord"],
        _STRUCTSEG + " Task 3: thoracic organs at risk.",
        ROLE_SEGMENTATION,
        ("StructSeg thorax", "StructSeg2019 Task3", "StructSeg thoracic OAR"),
    ),
    _entry(
        "M&Ms",
        "MRI",
        "heart",
        ["left ventricle", "myocardium", "right ventricle"],
        "Campello VM, Gkontra P, Izquierdo C, et al. Multi-Centre, Multi-Vendor and Multi-Disease Cardiac "
        "Segmentation: The M&Ms Challenge. IEEE Transactions on Medical Imaging 40(12):3543-3554, 2021.",
        ROLE_SEGMENTATION,
        ("MnMs", "MMs", "M and Ms", "MnM"),
    ),
    _entry(
        "BrainStructure-T1",
        "MRI",
        "brain",
        ["cerebrospinal fluid", "grey matter", "white matter"],
        "Brain-tissue T1 MRI set (CSF, grey matter, white matter) as used by Hermes: Gao Y, et al. Training "
        "Like a Medical Resident: Context-Prior Learning Toward Universal Medical Image Segmentation. "
        "CVPR 2024. Check the class order against your copy (tissue maps commonly use 1 CSF, 2 GM, 3 WM).",
        ROLE_SEGMENTATION,
        ("Brain structure", "Brain T1", "BrainStructure"),
    ),
    _entry(
        "AutoPET",
        "PETCT",
        "whole body",
        ["lesion"],
        "Gatidis S, Hepp T, Frueh M, et al. A whole-body FDG-PET/CT dataset with manually annotated tumor "
        "lesions. Scientific Data 9:601, 2022.",
        ROLE_SEGMENTATION,
        ("AutoPET2022", "AutoPET II", "FDG-PET-CT-Lesions"),
    ),
    _entry(
        "HECKTOR2022",
        "PETCT",
        "head and neck",
        ["primary tumour", "lymph node"],
        "Andrearczyk V, Oreiller V, Hatt M, Depeursinge A. Overview of the HECKTOR Challenge at MICCAI 2022: "
        "Automatic Head and Neck Tumor Segmentation and Outcome Prediction in PET/CT. Head and Neck Tumor "
        "Segmentation and Outcome Prediction (HECKTOR 2022), LNCS 13626, 2023.",
        ROLE_PROGNOSIS,
        ("HECKTOR", "HECKTOR 2022"),
    ),
    _entry(
        "MSD-Task02-Heart",
        "MRI",
        "heart",
        ["left atrium"],
        _MSD,
        ROLE_EXTRA,
        ("Task02_Heart", "Dataset002_Heart", "Heart", "Left Atrial"),
    ),
    _entry(
        "MSD-Task03-Liver",
        "CT",
        "abdomen",
        ["liver", "liver tumour"],
        _MSD,
        ROLE_EXTRA,
        ("Task03_Liver", "Dataset003_Liver", "Liver"),
    ),
    _entry(
        "MSD-Task04-Hippocampus",
        "MRI",
        "brain",
        ["anterior hippocampus", "posterior hippocampus"],
        _MSD,
        ROLE_EXTRA,
        ("Task04_Hippocampus", "Dataset004_Hippocampus", "Hippocampus"),
    ),
    _entry(
        "MSD-Task06-Lung",
        "CT",
        "thorax",
        ["lung tumour"],
        _MSD,
        ROLE_EXTRA,
        ("Task06_Lung", "Dataset006_Lung", "Lung"),
    ),
    _entry(
        "MSD-Task07-Pancreas",
        "CT",
        "abdomen",
        ["pancreas", "pancreas tumour"],
        _MSD,
        ROLE_EXTRA,
        ("Task07_Pancreas", "Dataset007_Pancreas", "Pancreas"),
    ),
    _entry(
        "MSD-Task08-HepaticVessel",
        "CT",
        "abdomen",
        ["hepatic vessel", "liver tumour"],
        _MSD,
        ROLE_EXTRA,
        ("Task08_HepaticVessel", "Dataset008_HepaticVessel", "HepaticVessel", "Hepatic Vessel"),
    ),
    _entry(
        "MSD-Task09-Spleen",
        "CT",
        "abdomen",
        ["spleen"],
        _MSD,
        ROLE_EXTRA,
        ("Task09_Spleen", "Dataset009_Spleen", "Spleen"),
    ),
    _entry(
        "MSD-Task10-Colon",
        "CT",
        "abdomen",
        ["colon tumour"],
        _MSD,
        ROLE_EXTRA,
        ("Task10_Colon", "Dataset010_Colon", "Colon"),
    ),
]

DATASET_REGISTRY: dict[str, RegisteredDataset] = {d.name: d for d in _ENTRIES}
"""Registered public datasets by name."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9&]", "", str(name).lower()).replace("&", "and")


def _build_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for d in _ENTRIES:
        for n in (d.name, *d.aliases):
            index[_key(n)] = d.name
    return index


_INDEX = _build_index()


def find_registered(name: str) -> RegisteredDataset | None:
    """The registered dataset called ``name`` (case/punctuation-insensitive, aliases and
    ``TaskNN_``/``DatasetNNN_`` prefixes understood), or ``None``."""
    key = _key(name)
    if key in _INDEX:
        return DATASET_REGISTRY[_INDEX[key]]
    stripped = re.sub(r"^(task|dataset)\d+", "", key)
    if stripped and stripped in _INDEX:
        return DATASET_REGISTRY[_INDEX[stripped]]
    return None


def get_registered(name: str) -> RegisteredDataset:
    """Like :func:`find_registered`, but an unknown name is an error suggesting close names.

    Raises:
        ConfigError: no registered dataset of that name.
    """
    found = find_registered(name)
    if found is not None:
        return found
    close = difflib.get_close_matches(_key(name), list(_INDEX), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(sorted({_INDEX[c] for c in close}))}?" if close else ""
    raise ConfigError(f"unknown dataset '{name}'{hint} (registered: {', '.join(DATASET_REGISTRY)})")
