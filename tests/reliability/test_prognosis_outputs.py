"""`duplus prognosis` under the write rule, literal patient ids, and survival data that cannot be scored.

The hostile user's cases 2, 3 and 12 of the reliability issue: `predict --out` equal to the clinical
CSV overwrote it; patient ids were used as glob patterns; all-tied survival times exited 0 with a
meaningless C-index.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from duplus.cli import main
from duplus.errors import InputError
from duplus.prognosis.api import folder_cases

_spec = importlib.util.spec_from_file_location(
    "prognosis_cohort", Path(__file__).parents[1] / "prognosis" / "cohort.py"
)
assert _spec is not None and _spec.loader is not None
_cohort = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cohort)


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A clinical CSV, a prognosis config and an EHR model trained on the CSV."""
    root = tmp_path_factory.mktemp("prognosis")
    (root / "data").mkdir()
    csv = _cohort.write_cohort_csv(root / "data" / "clinical.csv", n=40)
    cfg = root / "data" / "p.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 2, "lora_r": 0, "folds": 2}))
    argv = ["prognosis", "train", "--clinical", str(csv), "--mode", "ehr", "--config", str(cfg)]
    assert main([*argv, "--out", str(root / "run"), "-q"]) == 0
    return csv, cfg, root / "run" / "model"


def _predict(csv: Path, model: Path, out: Path) -> list[str]:
    return ["prognosis", "predict", "--clinical", str(csv), "--model", str(model), "--out", str(out), "-q"]


def test_predict_never_overwrites_the_clinical_csv(trained, capsys: pytest.CaptureFixture[str]) -> None:
    csv, _, model = trained
    before = snapshot(csv.parent)
    assert main(_predict(csv, model, csv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clinical.csv" in err[0] and "must differ from the input" in err[0]
    assert snapshot(csv.parent) == before


def test_predict_never_replaces_a_user_file(trained, capsys: pytest.CaptureFixture[str]) -> None:
    csv, cfg, model = trained
    before = snapshot(csv.parent)
    assert main(_predict(csv, model, cfg)) == 2  # an existing file duplus did not write
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p.yaml" in err[0] and "never replaced" in err[0]
    assert snapshot(csv.parent) == before


def test_predict_replaces_its_own_predictions(trained, tmp_path: Path) -> None:
    csv, _, model = trained
    out = tmp_path / "pred.csv"
    assert main(_predict(csv, model, out)) == 0
    first = out.read_bytes()
    assert main(_predict(csv, model, out)) == 0  # a rerun redoes its own output
    assert out.read_bytes() == first
    assert pd.read_csv(out)["PatientID"].tolist() == pd.read_csv(csv)["PatientID"].tolist()


def test_predict_keeps_the_clinical_csv_through_the_console_script(trained) -> None:
    csv, _, model = trained
    before = snapshot(csv.parent)
    script = Path(sys.executable).with_name("duplus")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "duplus.cli"]
    proc = subprocess.run([*cmd, *_predict(csv, model, csv)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "clinical.csv" in proc.stderr
    assert snapshot(csv.parent) == before


@pytest.mark.parametrize("relation", ["equals", "inside"])
def test_cv_output_in_an_input_folder_is_refused(
    trained, tmp_path: Path, relation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, cfg, _ = trained
    data = tmp_path / "hecktor"
    (data / "imagesTr").mkdir(parents=True)
    csv = _cohort.write_cohort_csv(tmp_path / "c.csv", n=30)
    before = snapshot(tmp_path)
    out = data if relation == "equals" else data / "cv"
    argv = ["prognosis", "cv", "--clinical", str(csv), "--images", str(data), "--config", str(cfg)]
    assert main([*argv, "--modes", "ehr", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must not be the input folder" in err[0]
    assert snapshot(tmp_path) == before and not (data / "cv").exists()


def test_cv_output_containing_the_inputs_changes_none_of_them(trained, tmp_path: Path) -> None:
    _, cfg, _ = trained
    csv = _cohort.write_cohort_csv(tmp_path / "c.csv", n=30)
    before = snapshot(tmp_path)
    assert (
        main(["prognosis", "cv", "--clinical", str(csv), "--config", str(cfg), "--out", str(tmp_path), "-q"])
        == 0
    )
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before
    assert (tmp_path / "cv_summary.md").is_file()


@pytest.mark.parametrize("pid", ["*", "P0000[1-2]", "../other/P00001", "P?"])
def test_patient_ids_are_never_patterns(tmp_path: Path, pid: str) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("P00001", "P00002"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(images / f"{name}.nii.gz"))
    with pytest.raises(InputError, match="id"):
        folder_cases(images, [pid])


def test_patient_ids_match_exact_file_names(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("P1__PT", "P1__CT", "P10", "P1x"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(images / f"{name}.nii.gz"))
    cases = dict((pid, files) for pid, files, _ in folder_cases(images, ["P1", "P10"]))
    assert [p.name for p in cases["P1"]] == ["P1__PT.nii.gz", "P1__CT.nii.gz"]
    assert [p.name for p in cases["P10"]] == ["P10.nii.gz"]
    with pytest.raises(InputError, match="no image for patient P1y"):
        folder_cases(images, ["P1y"])


@pytest.mark.parametrize("time", [100.0, 0.0])
def test_all_tied_survival_times_are_refused(
    trained, tmp_path: Path, time: float, capsys: pytest.CaptureFixture[str]
) -> None:
    _, cfg, _ = trained
    csv = _cohort.write_cohort_csv(tmp_path / "c.csv", n=30)
    df = pd.read_csv(csv)
    df["RFS"] = time
    df.to_csv(csv, index=False)
    before = snapshot(tmp_path)
    argv = [
        "prognosis",
        "cv",
        "--clinical",
        str(csv),
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "cv"),
        "-q",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c.csv" in err[0] and f"every survival time is {time:g}" in err[0]
    assert snapshot(tmp_path) == before and not (tmp_path / "cv").exists()
