"""HECKTOR 2022 layout reader and clinical CSV validation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from duplus.data.hecktor import check_survival_cohort, read_clinical_csv, read_hecktor_clinical
from duplus.data.specs.hecktor import read_hecktor_spec
from duplus.errors import InputError

CLINICAL = (
    "PatientID,Task 1,Task 2,CenterID,Gender,Age,Weight,Tobacco,Alcohol,Performance status,"
    "HPV status (0=-, 1=+),Surgery,Chemotherapy\n"
    "CHUM-001,1,1,1,M,63,80,1,,0,1,0,1\n"
    "CHUM-002,1,1,1,F,55,,0,0,1,,1,0\n"
    "CHUP-003,1,1,2,M,71,92.5,,,,0,,1\n"
    "CHUP-004,1,0,2,F,48,61,0,1,0,1,0,0\n"
)
ENDPOINT = "PatientID,Relapse,RFS\nCHUM-001,1,350\nCHUM-002,0,1200.5\nCHUP-003,1,90\n"


def _write_nifti(path: Path, value: float) -> None:
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), value, dtype=np.float32), np.eye(4)), str(path))


def _hecktor(root: Path, clinical: str = CLINICAL, endpoint: str = ENDPOINT) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for pid in ("CHUM-001", "CHUM-002", "CHUP-003", "CHUP-004"):
        _write_nifti(root / "imagesTr" / f"{pid}__CT.nii.gz", -100.0)
        _write_nifti(root / "imagesTr" / f"{pid}__PT.nii.gz", 2.0)
        if pid != "CHUP-004":
            _write_nifti(root / "labelsTr" / f"{pid}.nii.gz", 1.0)
    (root / "hecktor2022_clinical_info_training.csv").write_text(clinical)
    (root / "hecktor2022_endpoint_training.csv").write_text(endpoint)
    return root


def test_spec_in_hecktor_layout(tmp_path: Path) -> None:
    root = _hecktor(tmp_path / "HECKTOR_Phantom")
    spec = read_hecktor_spec(tmp_path)  # the parent folder holding one HECKTOR folder also works
    assert spec.root == root
    assert (spec.modality, spec.region) == ("PETCT", "head and neck")
    assert spec.labels == {1: "primary tumour", 2: "lymph node"}
    assert [c.case_id for c in spec.training] == ["CHUM-001", "CHUM-002", "CHUP-003", "CHUP-004"]
    first = spec.training[0]
    assert [p.name for p in first.images] == ["CHUM-001__PT.nii.gz", "CHUM-001__CT.nii.gz"]  # PET first
    assert first.label == root / "labelsTr" / "CHUM-001.nii.gz"
    assert spec.training[3].label is None
    assert spec.citation


def test_missing_pet_names_the_ct(tmp_path: Path) -> None:
    root = _hecktor(tmp_path)
    (root / "imagesTr" / "CHUM-002__PT.nii.gz").unlink()
    with pytest.raises(InputError, match=r"CHUM-002__CT\.nii\.gz.*CHUM-002__PT"):
        read_hecktor_spec(root)


def test_clinical_join(tmp_path: Path) -> None:
    df = read_hecktor_clinical(_hecktor(tmp_path))
    assert list(df.columns[:3]) == ["id", "time", "event"]
    assert df["id"].tolist() == ["CHUM-001", "CHUM-002", "CHUP-003"]  # CHUP-004 has no endpoint
    assert df["time"].tolist() == [350.0, 1200.5, 90.0]
    assert df["event"].tolist() == [1, 0, 1]
    assert pd.isna(df.loc[1, "Weight"]) and df.loc[0, "Gender"] == "M"
    assert df.attrs["source"].endswith("hecktor2022_clinical_info_training.csv")
    check_survival_cohort(df)


@pytest.mark.parametrize(
    "endpoint, match",
    [
        ("PatientID,RFS\nCHUM-001,350\n", r"missing required column\(s\) 'Relapse'"),
        ("PatientID,Relapse,RFS\nCHUM-001,1,-3\n", "negative"),
        ("PatientID,Relapse,RFS\nCHUM-001,1,soon\n", "non-numeric survival time in row 1 \\(CHUM-001\\)"),
        ("PatientID,Relapse,RFS\nCHUM-001,2,30\n", "event must be 0 or 1"),
        ("PatientID,Relapse,RFS\nCHUM-001,1,30\nCHUM-001,0,40\n", "duplicate 'PatientID' values: CHUM-001"),
    ],
)
def test_bad_endpoint_csv_names_the_file(tmp_path: Path, endpoint: str, match: str) -> None:
    root = _hecktor(tmp_path, endpoint=endpoint)
    with pytest.raises(InputError, match=match) as info:
        read_hecktor_clinical(root)
    assert "hecktor2022_endpoint_training.csv" in str(info.value)


def test_all_censored_cohort_is_refused_at_training_time(tmp_path: Path) -> None:
    endpoint = "PatientID,Relapse,RFS\nCHUM-001,0,350\nCHUM-002,0,1200\nCHUP-003,0,90\n"
    df = read_hecktor_clinical(_hecktor(tmp_path, endpoint=endpoint))  # reading is fine
    with pytest.raises(InputError, match="censored") as info:
        check_survival_cohort(df)
    assert "hecktor2022_endpoint_training.csv" in str(info.value)


def test_generic_csv_keeps_ids_as_text_and_logs_extras(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = tmp_path / "cohort.csv"
    csv.write_text("pid,months,dead,stage\n007,12,1,II\n008,30,0,\n")
    with caplog.at_level("INFO", logger="duplus.data.hecktor"):
        df = read_clinical_csv(csv, "pid", "months", "dead")
    assert df["id"].tolist() == ["007", "008"]
    assert list(df.columns) == ["id", "time", "event", "stage"]
    assert "stage" in caplog.text
    with pytest.raises(InputError, match=r"missing required column\(s\) 'time', 'event'"):
        read_clinical_csv(csv, "pid", "time", "event")


def test_not_a_hecktor_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a HECKTOR"):
        read_hecktor_spec(tmp_path)
