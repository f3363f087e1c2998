"""Shared fixtures of the reliability tests: a tiny phantom dataset and one tiny trained run.

The run (``tiny`` preset, 32^3 patches, 2 of 4 steps) gives ``segment`` a real checkpoint, the
determinism test its first run, and the full-disk case a run to resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TRAIN_STEPS = 2
"""Steps of the shared run (``max_steps``); the config allows 4, so the run can be resumed."""


def write_tiny_dataset(root: Path, cases: int = 2, shape: tuple[int, int, int] = (32, 32, 32)) -> Path:
    """An MSD-layout CT dataset of phantom cases labelling liver (1) and spleen (2).

    Returns:
        The ``dataset.json`` path.
    """
    from duplus.data.io import save_nifti
    from duplus.data.phantoms import build_dataset_label, make_phantom_case

    labels = {1: "liver", 2: "spleen"}
    training = []
    for i in range(cases):
        case = make_phantom_case(i, "abdomen", "CT", shape=shape)
        name = f"case{i}.nii.gz"
        save_nifti(np.rint(case.image), case.affine, root / "imagesTr" / name, dtype=np.int16)
        label = build_dataset_label(case.label, case.label_names, labels)
        save_nifti(label, case.affine, root / "labelsTr" / name, dtype=np.int16)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "TinyPhantom",
        "modality": {"0": "CT"},
        "region": "abdomen",
        "labels": {"0": "background", **{str(k): v for k, v in labels.items()}},
        "numTraining": cases,
        "training": training,
        "test": [],
    }
    path = root / "dataset.json"
    path.write_text(json.dumps(meta, indent=2))
    return path


def write_tiny_config(path: Path, dataset_json: Path, seed: int = 0) -> Path:
    """A training YAML for a few CPU steps of the ``tiny`` preset on ``dataset_json``."""
    path.write_text(
        f"""datasets:
  - {{spec: {dataset_json}}}
model: {{preset: tiny}}
patch_size: [32, 32, 32]
batch_size: 1
iterations: {2 * TRAIN_STEPS}
steps_per_epoch: {TRAIN_STEPS}
warmup_steps: 1
val_fraction: 0
augment: none
paraphrase_t2: true
threads: 2
seed: {seed}
"""
    )
    return path


@dataclass(frozen=True)
class TrainedRun:
    """The shared tiny run: its dataset, config and run folder."""

    dataset_json: Path
    config: Path
    run_dir: Path

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A tiny run trained for :data:`TRAIN_STEPS` steps (about 10-20 s on 2 CPU cores)."""
    from duplus.training.api import train

    root = tmp_path_factory.mktemp("trained")
    dataset_json = write_tiny_dataset(root / "data")
    config = write_tiny_config(root / "train.yaml", dataset_json)
    run_dir = root / "run"
    train(config=config, out=run_dir, progress=False, max_steps=TRAIN_STEPS)
    assert (run_dir / "checkpoint_last.pt").is_file()
    return TrainedRun(dataset_json=dataset_json, config=config, run_dir=run_dir)
