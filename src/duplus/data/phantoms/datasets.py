"""The phantom collection's MSD-layout datasets: the table, their cases' files and ``dataset.json``.

Each dataset labels a different subset of the organs with its own label values (partial labels),
so the T2 prompt has to pick the target; two share organs in different modalities, so T1 matters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duplus.data.io import save_nifti
from duplus.data.phantoms.case import TEST_STREAM, PhantomCase, case_seed, make_phantom_case
from duplus.data.phantoms.geometry import case_geometry
from duplus.data.phantoms.labels import build_dataset_label
from duplus.errors import ConfigError

PHANTOM_VERSION = "1.2"  # bump whenever the same arguments give other images, labels or clinical tables


@dataclass(frozen=True)
class PhantomDataset:
    """One MSD-layout dataset of the phantom collection (a different label subset each)."""

    task: str
    prefix: str
    kind: str
    modality: str
    region: str
    labels: dict[int, str]
    description: str
    with_tumour: bool | None = None


PHANTOM_DATASETS: tuple[PhantomDataset, ...] = (
    PhantomDataset(
        "Task01_PhantomAbdomenCT", "abdomenct", "abdomen", "CT", "abdomen",
        {1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney"},
        "Synthetic abdominal CT: liver (including any tumour), spleen and kidneys.",
    ),
    PhantomDataset(
        "Task02_PhantomPancreasCT", "pancreasct", "abdomen", "CT", "abdomen",
        {1: "pancreas", 2: "aorta"},
        "Synthetic abdominal CT: pancreas and aorta (the only dataset labelling the pancreas).",
    ),
    PhantomDataset(
        "Task03_PhantomAbdomenMRI", "abdomenmri", "abdomen", "MRI", "abdomen",
        {1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney"},
        "Synthetic T1-weighted abdominal MRI: liver, spleen and kidneys.",
    ),
    PhantomDataset(
        "Task04_PhantomBrainMRI", "brainmri", "head", "MRI", "head",
        {1: "white matter", 2: "grey matter", 3: "cerebrospinal fluid"},
        "Synthetic T1-weighted brain MRI: white matter, grey matter and CSF.",
    ),
    PhantomDataset(
        "Task05_PhantomLiverTumourCT", "livertumourct", "abdomen", "CT", "abdomen",
        {1: "liver", 2: "liver tumour"},
        "Synthetic abdominal CT with a liver tumour in every case (LiTS convention).",
        with_tumour=True,
    ),
    PhantomDataset(
        "Task06_PhantomHeadNeckPET", "headneckpet", "headneck", "PET", "head and neck",
        {1: "primary tumour", 2: "lymph node"},
        "Synthetic FDG-PET of the neck: primary tumour (GTVp) and lymph nodes (GTVn).",
    ),
)  # fmt: skip


def dataset_sizes(
    cases: int, test_cases: int, dataset_cases: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """``{dataset folder name: (training cases, held-out cases)}``, checked."""
    known = [spec.task for spec in PHANTOM_DATASETS]
    unknown = sorted(set(dataset_cases) - set(known))
    if unknown:
        raise ConfigError(f"dataset_cases: unknown phantom dataset(s) {unknown}; known: {known}")
    sizes = {task: (cases, test_cases) for task in known}
    sizes.update({task: (int(n), int(m)) for task, (n, m) in dataset_cases.items()})
    for task, (n, m) in sizes.items():
        if n < 1 or m < 0:
            raise ConfigError(f"{task}: need >= 1 training and >= 0 held-out cases; got {n} and {m}")
    return sizes


def case_file(spec: PhantomDataset, i: int) -> str:
    """File name of case ``i`` of a phantom dataset (images and labels alike)."""
    return f"{spec.prefix}_{i + 1:03d}.nii.gz"


def dataset_case_seed(seed: int, test_seed: int, task_index: int, i: int, cases: int) -> int:
    """The generator seed of case ``i`` of the dataset at ``task_index`` (1-based).

    Training cases (``i < cases``) come from the collection ``seed``; held-out cases from the
    separate test stream of ``test_seed`` (:data:`.case.TEST_STREAM`), which no training case of
    any collection seed shares.
    """
    if i < cases:
        return case_seed(seed, task_index, i)
    return case_seed(test_seed, TEST_STREAM, task_index, i - cases)


def write_dataset_case(
    root: Path, spec: PhantomDataset, task_index: int, seed: int, test_seed: int, i: int, cases: int,
    shape: tuple[int, int, int], mri_appearance: str = "fixed",
) -> None:  # fmt: skip
    """Render and write case ``i`` of dataset ``spec`` (training when ``i < cases``, else held out)."""
    style, grid, spacing = case_geometry(i, task_index, shape)
    case = make_phantom_case(
        dataset_case_seed(seed, test_seed, task_index, i, cases), spec.kind, spec.modality,
        shape=grid, spacing=tuple(spacing), affine_style=style, with_tumour=spec.with_tumour,
        mri_appearance=mri_appearance,
    )  # fmt: skip
    name = case_file(spec, i)
    split = ("imagesTr", "labelsTr") if i < cases else ("imagesTs", "labelsTs")
    _save_case(case, spec.modality, root / split[0] / name, root / split[1] / name, spec.labels)


def _save_case(
    case: PhantomCase, modality: str, image_path: Path, label_path: Path, labels: dict[int, str]
) -> None:
    dtype = np.int16 if modality == "CT" else np.float32
    image = np.rint(case.image) if dtype is np.int16 else case.image
    save_nifti(image, case.affine, image_path, dtype=dtype)
    save_nifti(
        build_dataset_label(case.label, case.label_names, labels), case.affine, label_path, dtype=np.int16
    )


def dataset_meta(
    spec: PhantomDataset, seed: int, test_seed: int, cases: int, test_cases: int
) -> dict[str, Any]:
    """The ``dataset.json`` of a phantom dataset with ``cases`` training and ``test_cases`` held-out cases."""
    names = [case_file(spec, i) for i in range(cases + test_cases)]
    training = [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names[:cases]]
    test = [f"./imagesTs/{n}" for n in names[cases:]]
    return {
        "name": spec.task.split("_", 1)[1],
        "description": spec.description,
        "reference": (
            f"Synthetic phantom made by duplus.data.phantoms {PHANTOM_VERSION}"
            f" (seed {seed}; held-out cases from test seed {test_seed})"
        ),
        "licence": "CC0-1.0 (synthetic data)",
        "release": PHANTOM_VERSION,
        "tensorImageSize": "3D",
        "region": spec.region,
        "modality": {"0": spec.modality},
        "labels": {"0": "background", **{str(v): n for v, n in spec.labels.items()}},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }


def case_seeds(spec: PhantomDataset, task_index: int, seed: int, test_seed: int, cases: int, test_cases: int
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``{file name: {"split": "train" | "test", "seed": generator seed}}`` of a dataset's cases,
    for ``phantoms.json`` (so anyone can check that test cases were drawn apart from training)."""
    return {
        case_file(spec, i): {
            "split": "train" if i < cases else "test",
            "seed": dataset_case_seed(seed, test_seed, task_index, i, cases),
        }
        for i in range(cases + test_cases)
    }
