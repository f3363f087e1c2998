"""Writing the synthetic head MRI dataset (MSD layout) from the MNI152 anatomy, over a worker pool.

``out/Task07_SynthHeadMRI/`` holds ``dataset.json``, ``imagesTr``/``labelsTr`` and held-out
``imagesTs``/``labelsTs``; ``out/synth.json`` records every case's seed and drawn facts (contrast,
slice thickness, shell thicknesses, transform). Labels: :data:`.head_maps.HEAD_LABELS`; modality
MRI, region head, so ``duplus train`` reads it like any MSD dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from duplus.data.io import save_nifti
from duplus.data.phantoms.collection import run_jobs
from duplus.data.phantoms.datasets import PhantomDataset, case_file, dataset_case_seed, dataset_meta
from duplus.data.phantoms.head_maps import HEAD_LABELS, HeadMaps
from duplus.data.phantoms.synth_head import HEAD_FOV_MM, make_synth_head_case
from duplus.errors import ConfigError
from duplus.fileio import OutputFolder, write_json_atomic

logger = logging.getLogger(__name__)

SYNTH_VERSION = "1.0"  # bump whenever the same arguments give other images or labels
SYNTH_HEAD_DATASET = PhantomDataset(
    "Task07_SynthHeadMRI",
    "synthhead",
    "mni152",
    "MRI",
    "head",
    dict(HEAD_LABELS),
    "Synthetic head MRI of random contrast (SynthSeg-style) from the deformed MNI152 2009 tissue maps"
    " with drawn skull, diploe, scalp and fat layers.",
)
_TASK_INDEX = 7  # this dataset's place in the seed streams, after the six phantom datasets


def make_synth_head(
    out: str | Path,
    cases: int = 8,
    seed: int = 0,
    *,
    test_seed: int | None = None,
    test_cases: int = 2,
    spacing: float = 2.0,
    fov_mm: tuple[float, float, float] = HEAD_FOV_MM,
    resolution: int = 2,
    maps: HeadMaps | None = None,
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic head MRI dataset into ``out`` (steps in :mod:`.synth_head`).

    Training cases come from ``seed``, held-out cases from the separate test stream of
    ``test_seed`` (as in :func:`.collection.make_phantoms`); files are identical for any ``workers``.

    Args:
        out: output folder (created).
        cases: training cases.
        seed: seed of the training cases.
        test_seed: seed of the held-out cases (default: ``seed``; their stream is apart either way).
        test_cases: held-out cases.
        spacing: isotropic output voxel size in mm (2 -> 96 x 112 x 96 voxels over the default FOV).
        fov_mm: output field of view per world axis in mm.
        resolution: voxel size in mm of the MNI152 maps the labels are drawn on.
        maps: the anatomy instead of MNI152 (tests use small drawn maps).
        progress: show a tqdm progress bar.
        workers: cases rendered in parallel processes.
        overwrite: replace the dataset an earlier call wrote in ``out``.

    Returns:
        The dataset folder.
    """
    if cases < 1 or test_cases < 0 or workers < 1:
        raise ConfigError(
            f"need cases >= 1, test_cases >= 0, workers >= 1; got {cases}, {test_cases}, {workers}"
        )
    out = Path(out)
    test_seed = seed if test_seed is None else int(test_seed)
    spec = SYNTH_HEAD_DATASET
    root = out / spec.task
    with OutputFolder(out, replace_owned=overwrite) as folder:
        folder.check_new_folder(root)
        folder.check_write(out / "synth.json")
        if root.exists():
            folder.remove(root)
        facts = _write_cases(
            root,
            (seed, test_seed),
            (cases, test_cases),
            (spacing, fov_mm, resolution),
            maps,
            progress,
            workers,
        )
        folder.record(root)  # workers write in their own processes
        meta = dataset_meta(spec, seed, test_seed, cases, test_cases)
        meta["reference"] = f"Synthetic head MRI made by duplus.data.phantoms.synth_dataset {SYNTH_VERSION}"
        meta["release"] = SYNTH_VERSION
        write_json_atomic(root / "dataset.json", meta)
        index = {"name": "duplus synthetic head MRI", "version": SYNTH_VERSION, "seed": seed}
        index.update(test_seed=test_seed, spacing=spacing, fov_mm=list(fov_mm), resolution=resolution)
        index.update(dataset=spec.task, labels=meta["labels"], cases=facts)
        write_json_atomic(out / "synth.json", index)
    logger.info("synthetic head dataset written to %s", root)
    return root


def _write_cases(
    root: Path,
    seeds: tuple[int, int],
    counts: tuple[int, int],
    grid: tuple[float, tuple[float, float, float], int],
    maps: HeadMaps | None,
    progress: bool,
    workers: int,
) -> dict[str, dict[str, Any]]:
    """Render every case (``seeds``: training and test seed; ``counts``: training and held-out
    cases; ``grid``: spacing, FOV, map resolution); return ``{file name: facts}``."""
    from tqdm.auto import tqdm

    cases = counts[0]
    jobs = [
        (root, dataset_case_seed(*seeds, _TASK_INDEX, i, cases), i, cases, grid, maps)
        for i in range(sum(counts))
    ]
    with tqdm(total=len(jobs), desc="synthetic heads", unit="case", disable=not progress) as bar:
        facts = run_jobs(write_synth_head_case, jobs, workers, bar)
    return {case_file(SYNTH_HEAD_DATASET, i): f for i, f in enumerate(facts)}


def write_synth_head_case(
    root: Path,
    seed: int,
    i: int,
    cases: int,
    grid: tuple[float, tuple[float, float, float], int],
    maps: HeadMaps | None,
) -> dict[str, Any]:
    """Render and write case ``i`` (training when ``i < cases``); return its facts for ``synth.json``."""
    spacing, fov_mm, resolution = grid
    case = make_synth_head_case(seed, maps, spacing=spacing, fov_mm=fov_mm, resolution=resolution)
    name = case_file(SYNTH_HEAD_DATASET, i)
    images, labels = ("imagesTr", "labelsTr") if i < cases else ("imagesTs", "labelsTs")
    save_nifti(case.image, case.affine, root / images / name, dtype=np.float32)
    save_nifti(case.label, case.affine, root / labels / name, dtype=np.int16)
    return {"split": "train" if i < cases else "test", "seed": seed, **case.info}
