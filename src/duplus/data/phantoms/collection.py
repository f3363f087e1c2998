"""Writing the phantom collection: its datasets and cohort, inside one output folder, over a worker pool."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from duplus.data.phantoms.appearance import MRI_APPEARANCES
from duplus.data.phantoms.cohort import COHORT_FOLDER, write_cohort_tables, write_patient
from duplus.data.phantoms.datasets import (
    PHANTOM_DATASETS,
    PHANTOM_VERSION,
    case_seeds,
    dataset_meta,
    dataset_sizes,
    write_dataset_case,
)
from duplus.data.phantoms.geometry import FOV_MM, as_triple
from duplus.errors import ConfigError
from duplus.fileio import OutputFolder, write_json_atomic

logger = logging.getLogger(__name__)


def make_phantoms(
    out: str | Path,
    cases: int = 8,
    seed: int = 0,
    *,
    test_seed: int | None = None,
    shape: int | Sequence[int] = (96, 96, 96),
    test_cases: int = 2,
    dataset_cases: Mapping[str, tuple[int, int]] | None = None,
    cohort_cases: int = 0,
    cohort_shape: int | Sequence[int] = (64, 64, 64),
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
    mri_appearance: str = "fixed",
) -> dict[str, Path]:
    """Write the phantom collection: six MSD-layout datasets and, optionally, a HECKTOR cohort.

    (Long only by this docstring: the body is 30 lines.)

    Each dataset (:data:`PHANTOM_DATASETS`) is ``out/TaskNN_Name/`` with ``dataset.json``,
    ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and ``labelsTs/`` (held-out ground truth); files are
    ``<prefix>_<NNN>.nii.gz``. Geometry varies per case (RAS, LPS, permuted, oblique; a third with
    0.9 x 0.9 x 2.0 anisotropy) over a 96 mm field of view. ``out/phantoms.json`` indexes it all.
    Files are written atomically and are bit-identical for the same arguments.

    Held-out discipline: training cases are drawn from ``seed``; the held-out cases (``imagesTs``)
    and the cohort from a separate stream of ``test_seed``, which shares no case with any training
    case of any seed. A figure reported as a test figure comes from a ``test_seed`` that no choice
    of a setting ever looked at; tuning uses validation cases split off the training cases, or
    held-out cases of another ``test_seed``. ``phantoms.json`` records every case's generator seed.

    Args:
        out: output folder (created).
        cases: training cases per dataset.
        seed: collection seed (the training cases).
        test_seed: seed of the held-out cases and the cohort (default: ``seed``; their stream is
            apart from the training cases' either way).
        shape: grid of the isotropic cases (96 -> 1 mm voxels; 48 -> 2 mm, for quick tests).
        test_cases: held-out cases per dataset.
        dataset_cases: ``{dataset folder name: (training cases, held-out cases)}`` for the datasets
            that differ from ``cases`` / ``test_cases`` (the demo gives its adaptation set more).
        cohort_cases: patients of the HECKTOR-layout prognosis cohort (``out/HECKTOR_Phantom``); 0 = none.
        cohort_shape: grid of the cohort's PET/CT (64 -> 1.5 mm voxels).
        progress: show a tqdm progress bar.
        workers: cases rendered in parallel processes (the files are the same for any number).
        overwrite: replace the dataset folders an earlier ``make_phantoms`` wrote in ``out``
            (without it, an existing one is an error; folders duplus did not write never are).
        mri_appearance: the MRI datasets' intensities: ``"fixed"`` (T1-weighted tissue table) or
            ``"random"`` (a random contrast, bias, noise, blur and slice thickness per case,
            :mod:`.contrast`).

    Returns:
        ``{dataset folder name: path}``, including ``"HECKTOR_Phantom"`` when a cohort is written.
    """
    out = Path(out)
    if cases < 1 or test_cases < 0 or cohort_cases < 0:
        raise ConfigError(
            f"need cases >= 1, test_cases >= 0, cohort_cases >= 0; got {cases}, {test_cases}, {cohort_cases}"
        )
    if workers < 1:
        raise ConfigError(f"need workers >= 1; got {workers}")
    if mri_appearance not in MRI_APPEARANCES:
        raise ConfigError(
            f"unknown MRI appearance {mri_appearance!r}; expected one of {', '.join(MRI_APPEARANCES)}"
        )
    sizes = dataset_sizes(cases, test_cases, dataset_cases or {})
    test_seed = seed if test_seed is None else int(test_seed)
    shape3 = _grid(shape, "shape")
    c_shape = _grid(cohort_shape, "cohort_shape")
    names = [spec.task for spec in PHANTOM_DATASETS] + ([COHORT_FOLDER] if cohort_cases else [])
    with OutputFolder(out, replace_owned=overwrite) as folder:
        for name in names:
            folder.check_new_folder(out / name)
        folder.check_write(out / "phantoms.json")
        for name in names:
            if (out / name).exists():
                folder.remove(out / name)
        index = _write_collection(
            out, sizes, (seed, test_seed), (shape3, mri_appearance), cohort_cases, c_shape, progress, workers
        )
        folder.record(*(out / name for name in names))  # workers write in their own processes
        write_json_atomic(out / "phantoms.json", index)
    logger.info("phantom collection written to %s", out)
    return {name: out / name for name in names}


def _grid(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    s = as_triple(value, name)
    return int(s[0]), int(s[1]), int(s[2])


def _write_collection(
    out: Path,
    sizes: dict[str, tuple[int, int]],
    seeds: tuple[int, int],
    look: tuple[tuple[int, int, int], str],
    cohort_cases: int,
    cohort_shape: tuple[int, int, int],
    progress: bool,
    workers: int,
) -> dict[str, Any]:
    """The cases, ``dataset.json`` files and the cohort of :func:`make_phantoms`; returns the index.

    ``seeds``: the collection seed (training cases) and the test seed (held-out cases, cohort);
    ``look``: the grid of the isotropic cases and the MRI appearance.
    """
    from tqdm.auto import tqdm

    seed, test_seed = seeds
    index: dict[str, Any] = {"name": "duplus phantom collection", "version": PHANTOM_VERSION}
    index.update(seed=seed, test_seed=test_seed)
    shape, mri_appearance = look
    index.update(shape=list(shape), fov_mm=FOV_MM, datasets=[], cohort=None)
    if mri_appearance != "fixed":  # the index of a default collection stays as it was
        index["mri_appearance"] = mri_appearance
    total = sum(n + m for n, m in sizes.values()) + cohort_cases
    with tqdm(total=total, desc="phantoms", unit="case", disable=not progress) as bar:
        index["datasets"] = _write_datasets(out, sizes, seeds, look, bar, workers)
        if cohort_cases:
            index["cohort"] = _write_cohort(
                out / COHORT_FOLDER, test_seed, cohort_cases, cohort_shape, bar, workers
            )
    return index


def _write_datasets(
    out: Path,
    sizes: dict[str, tuple[int, int]],
    seeds: tuple[int, int],
    look: tuple[tuple[int, int, int], str],
    bar: Any,
    workers: int,
) -> list[dict[str, Any]]:
    """Write every dataset's cases and ``dataset.json``; return their entries of the index."""
    seed, test_seed = seeds
    jobs = [
        (out / spec.task, spec, t + 1, seed, test_seed, i, sizes[spec.task][0], *look)
        for t, spec in enumerate(PHANTOM_DATASETS)
        for i in range(sum(sizes[spec.task]))
    ]
    run_jobs(write_dataset_case, jobs, workers, bar)
    entries = []
    for t, spec in enumerate(PHANTOM_DATASETS):
        n_train, n_test = sizes[spec.task]
        meta = dataset_meta(spec, seed, test_seed, n_train, n_test)
        write_json_atomic(out / spec.task / "dataset.json", meta)
        entries.append(
            {"name": spec.task, "path": spec.task, "modality": spec.modality, "region": spec.region}
            | {"kind": spec.kind, "labels": meta["labels"], "numTraining": n_train, "numTest": n_test}
            | {"cases": case_seeds(spec, t + 1, seed, test_seed, n_train, n_test)}
        )
    return entries


def _write_cohort(
    root: Path, test_seed: int, n: int, shape: tuple[int, int, int], bar: Any, workers: int
) -> dict[str, Any]:
    """Write the cohort's patients (from the test seed) and tables; return its entry of the index."""
    written = run_jobs(write_patient, [(root, test_seed, i, shape) for i in range(n)], workers, bar)
    truth = write_cohort_tables(root, written)
    return {
        "name": COHORT_FOLDER,
        "path": COHORT_FOLDER,
        "patients": n,
        "censored_fraction": truth["censored_fraction"],
        "c_index_true_linear_predictor": truth["c_index_true_linear_predictor"],
    }


def run_jobs(fn: Callable[..., Any], jobs: list[tuple], workers: int, bar: Any) -> list[Any]:
    """``[fn(*job) for job in jobs]``, over ``workers`` spawned processes when ``workers > 1``.

    Every case draws from its own seed, so the files do not depend on ``workers``. Spawned (not
    forked) workers: the parent may hold OpenMP threads (torch), which a fork would copy stuck.
    """
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for job in jobs:
            out.append(fn(*job))
            bar.update(1)
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        for f in futures:
            f.add_done_callback(lambda _: bar.update(1))
        return [f.result() for f in futures]
