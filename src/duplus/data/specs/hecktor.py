"""Reader of the HECKTOR 2022 layout as a dataset: head-and-neck PET/CT (channel 0 PET, channel 1
CT) with GTV masks (1 = primary tumour, 2 = lymph node)::

    <root>/imagesTr/<PatientID>__CT.nii.gz
    <root>/imagesTr/<PatientID>__PT.nii.gz
    <root>/labelsTr/<PatientID>.nii.gz
    <root>/imagesTs/...                                     (optional test images)
    <root>/hecktor2022_clinical_info_training.csv           (read by :mod:`duplus.data.hecktor`)
"""

from __future__ import annotations

import logging
from pathlib import Path

from duplus.data.specs.model import CaseRecord, DatasetSpec
from duplus.errors import InputError

logger = logging.getLogger(__name__)

HECKTOR_LABELS = {1: "primary tumour", 2: "lymph node"}
HECKTOR_CITATION = (
    "Andrearczyk V, Oreiller V, Boughdad S, et al. Overview of the HECKTOR challenge at MICCAI 2022: "
    "automatic head and neck tumor segmentation and outcome prediction in PET/CT. "
    "Head and Neck Tumor Segmentation and Outcome Prediction, LNCS 13626 (2023)."
)
CLINICAL_CSV = "hecktor2022_clinical_info_{split}.csv"
_CT, _PT = "__CT.nii.gz", "__PT.nii.gz"


def _is_hecktor_root(folder: Path) -> bool:
    return (folder / "imagesTr").is_dir() or (folder / CLINICAL_CSV.format(split="training")).is_file()


def find_hecktor_root(folder: str | Path) -> Path:
    """The HECKTOR root: ``folder`` itself, or its only sub-folder in the HECKTOR layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "HECKTOR folder not found")
    if _is_hecktor_root(folder):
        return folder
    candidates = sorted(p for p in folder.iterdir() if p.is_dir() and _is_hecktor_root(p))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(p.name for p in candidates)
        raise InputError(folder, f"several HECKTOR folders inside ({names}); pass one of them")
    raise InputError(
        folder, f"not a HECKTOR 2022 folder (no imagesTr/ and no {CLINICAL_CSV.format(split='training')})"
    )


def _read_cases(images: Path, labels: Path) -> list[CaseRecord]:
    if not images.is_dir():
        return []
    ct = {p.name[: -len(_CT)]: p for p in images.glob(f"*{_CT}")}
    pt = {p.name[: -len(_PT)]: p for p in images.glob(f"*{_PT}")}
    for pid in sorted(set(ct) ^ set(pt)):
        have, need = (ct[pid], f"{pid}{_PT}") if pid in ct else (pt[pid], f"{pid}{_CT}")
        raise InputError(have, f"its partner image {need} is missing from {images}")
    cases = []
    for pid in sorted(ct):
        label = labels / f"{pid}.nii.gz"
        cases.append(
            CaseRecord(case_id=pid, images=[pt[pid], ct[pid]], label=label if label.is_file() else None)
        )
    return cases


def read_hecktor_spec(folder: str | Path, name: str = "HECKTOR") -> DatasetSpec:
    """Dataset spec of a HECKTOR 2022 folder: modality ``"PETCT"`` with channel 0 PET, channel 1 CT.

    Cases are found from ``imagesTr/*__CT.nii.gz`` (and ``imagesTs``); a CT without its PET (or
    the reverse) is an error naming the file. Training cases without a label file get ``label=None``.
    """
    root = find_hecktor_root(folder)
    training = _read_cases(root / "imagesTr", root / "labelsTr")
    test = _read_cases(root / "imagesTs", root / "labelsTs")
    if not training and not test:
        raise InputError(root, f"no '*{_CT}' images in imagesTr/ or imagesTs/")
    unlabeled = sum(c.label is None for c in training)
    if unlabeled:
        logger.info("%s: %d of %d training cases have no label file", root, unlabeled, len(training))
    return DatasetSpec(
        name=name,
        modality="PETCT",
        region="head and neck",
        labels=dict(HECKTOR_LABELS),
        root=root,
        training=training,
        test=test,
        citation=HECKTOR_CITATION,
    )


def is_hecktor_folder(folder: Path) -> bool:
    """A HECKTOR 2022 folder, or a folder holding one (its clinical CSV or ``*__CT.nii.gz`` images)."""
    csv = CLINICAL_CSV.format(split="training")
    patterns = (csv, f"*/{csv}", f"*{_CT}", f"*/*{_CT}", f"*/*/*{_CT}")
    return any(any(folder.glob(p)) for p in patterns)
