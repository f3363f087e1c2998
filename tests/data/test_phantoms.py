"""Tests of the synthetic phantom generator (in-memory cases, MSD collection, HECKTOR cohort)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from duplus.data.phantoms import (
    AFFINE_STYLES,
    COHORT_COEFFICIENTS,
    COHORT_STANDARDISATION,
    FULL_LABELS,
    PHANTOM_DATASETS,
    build_dataset_label,
    compute_linear_predictor,
    make_phantom_case,
    make_phantoms,
    target_mask,
)
from duplus.errors import ConfigError

HECKTOR_COLUMNS = [
    "PatientID",
    "Task 1",
    "Task 2",
    "CenterID",
    "Gender",
    "Age",
    "Weight",
    "Tobacco",
    "Alcohol",
    "Performance status",
    "HPV status (0=-, 1=+)",
    "Surgery",
    "Chemotherapy",
]


def _world_centroid(affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).astype(float)
    return (affine[:3, :3] @ ijk.T).T.mean(axis=0) + affine[:3, 3]


def _mean_in(image: np.ndarray, label: np.ndarray, names: dict[int, str], target: str) -> float:
    return float(image[target_mask(label, names, target)].mean())


# --------------------------------------------------------------------------------- in-memory cases
@pytest.mark.parametrize(
    ("kind", "modality", "channels"),
    [
        ("abdomen", "CT", 0),
        ("abdomen", "MRI", 0),
        ("abdomen", "PETCT", 2),
        ("head", "MRI", 0),
        ("head", "CT", 0),
        ("headneck", "PET", 0),
        ("headneck", "PETCT", 2),
    ],
)
def test_case_shapes_and_labels(kind: str, modality: str, channels: int) -> None:
    case = make_phantom_case(1, kind, modality, shape=(32, 28, 24))
    expected = (channels, 32, 28, 24) if channels else (32, 28, 24)
    assert case.image.shape == expected and case.image.dtype == np.float32
    assert np.all(np.isfinite(case.image))
    assert case.label.shape == (32, 28, 24) and case.label.dtype == np.int16
    assert set(np.unique(case.label)) - {0} <= set(case.label_names)
    assert all(FULL_LABELS[v] == n for v, n in case.label_names.items())
    assert case.affine.shape == (4, 4)
    np.testing.assert_allclose(np.linalg.norm(case.affine[:3, :3], axis=0), [3.0, 96 / 28, 4.0])
    json.dumps(case.info)  # the facts are JSON-serialisable


def test_determinism() -> None:
    a = make_phantom_case(5, "abdomen", "CT", shape=32)
    b = make_phantom_case(5, "abdomen", "CT", shape=32)
    c = make_phantom_case(6, "abdomen", "CT", shape=32)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.label, c.label)
    assert not np.array_equal(a.image, c.image)


def test_same_patient_across_modalities() -> None:
    ct = make_phantom_case(2, "headneck", "CT", shape=32)
    petct = make_phantom_case(2, "headneck", "PETCT", shape=32)
    np.testing.assert_array_equal(ct.label, petct.label)
    np.testing.assert_array_equal(ct.image, petct.image[1])  # channel 1 is CT, channel 0 PET


def test_intensities_follow_labels_per_modality() -> None:
    ct = make_phantom_case(3, "abdomen", "CT", shape=48, with_tumour=True)
    mri = make_phantom_case(3, "abdomen", "MRI", shape=48, with_tumour=True)
    np.testing.assert_array_equal(ct.label, mri.label)
    names = ct.label_names
    parenchyma = {1: "liver"}  # liver without its tumour
    ct_liver = _mean_in(ct.image, ct.label, parenchyma, "liver")
    ct_spleen = _mean_in(ct.image, ct.label, names, "spleen")
    assert 40.0 < ct_liver < 80.0
    assert ct_spleen > ct_liver + 8.0  # portal-venous CT: spleen brighter than liver
    assert _mean_in(ct.image, ct.label, names, "aorta") > 150.0
    assert _mean_in(ct.image, ct.label, names, "liver tumour") < ct_liver - 15.0
    mri_liver = _mean_in(mri.image, mri.label, parenchyma, "liver")
    assert mri_liver > 1.2 * _mean_in(mri.image, mri.label, names, "spleen")  # the opposite order
    assert mri_liver > _mean_in(mri.image, mri.label, names, "left kidney")
    assert _mean_in(mri.image, mri.label, names, "aorta") < 0.4 * mri_liver  # flowing blood is dark


def test_brain_contrast_reverses_between_ct_and_mri() -> None:
    ct = make_phantom_case(4, "head", "CT", shape=48)
    mri = make_phantom_case(4, "head", "MRI", shape=48)
    names = ct.label_names
    wm_gm_ct = _mean_in(ct.image, ct.label, names, "white matter") - _mean_in(
        ct.image, ct.label, names, "grey matter"
    )
    wm_gm_mri = _mean_in(mri.image, mri.label, names, "white matter") - _mean_in(
        mri.image, mri.label, names, "grey matter"
    )
    assert wm_gm_ct < 0 < wm_gm_mri
    assert all(mri.info["volumes_ml"][n] > 1.0 for n in names.values())


def test_pet_tumour_is_hot() -> None:
    case = make_phantom_case(1, "headneck", "PET", shape=48)
    tumour = target_mask(case.label, case.label_names, "primary tumour")
    assert tumour.sum() > 10
    body = (case.label == 0) & (case.image > 0.3)
    background = float(np.median(case.image[body]))
    assert 0.5 < background < 1.5
    assert float(case.image[tumour].max()) > 3.0 * background
    assert case.info["suvmax"] == pytest.approx(float(case.image[tumour | (case.label == 12)].max()))
    assert 5.0 <= case.info["primary_uptake"] <= 20.0


@pytest.mark.parametrize("style", AFFINE_STYLES)
@pytest.mark.parametrize(("shape", "spacing"), [(32, None), ((36, 36, 16), (2.7, 2.7, 6.0))])
def test_world_anatomy_independent_of_grid(style: str, shape, spacing) -> None:
    ref = make_phantom_case(7, "abdomen", "CT", shape=48)
    case = make_phantom_case(7, "abdomen", "CT", shape=shape, spacing=spacing, affine_style=style)
    names = case.label_names
    liver = _world_centroid(case.affine, target_mask(case.label, names, "liver"))
    spleen = _world_centroid(case.affine, target_mask(case.label, names, "spleen"))
    right = _world_centroid(case.affine, target_mask(case.label, names, "right kidney"))
    left = _world_centroid(case.affine, target_mask(case.label, names, "left kidney"))
    assert liver[0] < spleen[0] - 20.0  # RAS +x is the patient's left: the liver is on the right
    assert right[0] < left[0]
    ref_liver = _world_centroid(ref.affine, target_mask(ref.label, ref.label_names, "liver"))
    np.testing.assert_allclose(liver, ref_liver, atol=2.0)
    for organ in ("liver", "spleen", "aorta"):
        assert case.info["volumes_ml"][organ] == pytest.approx(ref.info["volumes_ml"][organ], rel=0.15)
    direction = case.affine[:3, :3] / np.linalg.norm(case.affine[:3, :3], axis=0)
    if style == "ras":
        np.testing.assert_allclose(direction, np.eye(3), atol=1e-12)
    elif style == "lps":
        np.testing.assert_allclose(direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    elif style == "permuted":
        assert not np.allclose(np.abs(direction), np.eye(3))
    else:
        angle = np.degrees(np.arccos((np.trace(direction) - 1) / 2))
        assert 5.0 - 1e-6 <= angle <= 15.0 + 1e-6


def test_target_mask_and_dataset_labels() -> None:
    case = make_phantom_case(3, "abdomen", "CT", shape=32, with_tumour=True)
    names = case.label_names
    tumour = target_mask(case.label, names, "liver tumor")  # a synonym
    liver = target_mask(case.label, names, "liver")
    assert tumour.any() and np.all(liver[tumour])
    assert liver.sum() == np.isin(case.label, [1, 7]).sum()
    lits = build_dataset_label(case.label, names, {1: "liver", 2: "liver tumour"})
    assert set(np.unique(lits)) == {0, 1, 2} and np.array_equal(lits == 2, tumour)
    organs = build_dataset_label(case.label, names, {1: "liver", 2: "spleen"})
    assert np.array_equal(organs == 1, liver)
    with pytest.raises(ConfigError, match="not in this label map"):
        target_mask(case.label, names, "white matter")
    no_tumour = make_phantom_case(3, "abdomen", "CT", shape=32, with_tumour=False)
    assert not target_mask(no_tumour.label, names, "liver tumour").any()


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="kind"):
        make_phantom_case(0, "thorax")
    with pytest.raises(ConfigError, match="modality"):
        make_phantom_case(0, "abdomen", "US")
    with pytest.raises(ConfigError, match="affine style"):
        make_phantom_case(0, affine_style="xyz")
    with pytest.raises(ConfigError, match="3 values"):
        make_phantom_case(0, shape=(32, 32))


def test_case_timing() -> None:
    start = time.perf_counter()
    make_phantom_case(11, "abdomen", "CT", shape=96)
    elapsed = time.perf_counter() - start
    print(f"one 96^3 abdomen CT case: {elapsed:.2f} s")
    assert elapsed < 5.0


# ------------------------------------------------------------------------------------ collection
@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("phantoms")
    paths = make_phantoms(
        out, cases=2, test_cases=1, seed=3, shape=32, cohort_cases=150, cohort_shape=24, progress=False
    )
    return out, paths


def test_msd_layout_readable_by_monai(collection: tuple[Path, dict[str, Path]]) -> None:
    from monai.data import load_decathlon_datalist

    out, paths = collection
    assert set(paths) == {d.task for d in PHANTOM_DATASETS} | {"HECKTOR_Phantom"}
    label_sets = []
    for spec in PHANTOM_DATASETS:
        root = paths[spec.task]
        meta = json.loads((root / "dataset.json").read_text())
        assert meta["modality"] == {"0": spec.modality} and meta["region"] == spec.region
        assert meta["tensorImageSize"] == "3D" and meta["numTraining"] == 2 and meta["numTest"] == 1
        train = load_decathlon_datalist(root / "dataset.json", True, "training", base_dir=root)
        test = load_decathlon_datalist(root / "dataset.json", True, "test", base_dir=root)
        assert len(train) == 2 and len(test) == 1
        for item in train:
            assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
            image, label = nib.load(item["image"]), nib.load(item["label"])
            assert image.shape == label.shape and np.allclose(image.affine, label.affine)
            values = set(np.unique(np.asarray(label.dataobj)).astype(int))
            assert values - {0} <= set(spec.labels) and len(values) > 1
            if spec.with_tumour:
                assert 2 in values
        test_label = root / "labelsTs" / Path(test[0]["image"]).name
        assert test_label.is_file()
        label_sets.append(frozenset(spec.labels.values()))
    assert len(set(label_sets)) == len(label_sets) - 1  # Task01 and Task03 share organs, other modality
    with_pancreas = [d.task for d in PHANTOM_DATASETS if "pancreas" in d.labels.values()]
    assert with_pancreas == ["Task02_PhantomPancreasCT"]
    index = json.loads((out / "phantoms.json").read_text())
    assert index["seed"] == 3 and index["test_seed"] == 3 and len(index["datasets"]) == 6
    assert all((out / d["path"] / "dataset.json").is_file() for d in index["datasets"])


def test_collection_geometry_varies(collection: tuple[Path, dict[str, Path]]) -> None:
    out, _ = collection
    images = [nib.load(p) for p in sorted(out.glob("Task0*/images*/*.nii.gz"))]
    affines = [img.affine for img in images]
    spacings = [np.linalg.norm(a[:3, :3], axis=0) for a in affines]
    assert any(s.max() / s.min() > 1.5 for s in spacings)  # anisotropic cases
    assert any(not np.allclose(a[:3, :3], np.diag(np.diag(a[:3, :3]))) for a in affines)  # permuted/oblique
    assert any(np.any(np.diag(a[:3, :3]) < 0) for a in affines)  # LPS
    fov = [s * np.asarray(img.shape) for s, img in zip(spacings, images, strict=True)]
    np.testing.assert_allclose(fov, 96.0, rtol=0.05)  # the same field of view in mm for every grid


def test_collection_is_bit_identical(tmp_path: Path) -> None:
    """The same arguments give the same bytes, also when the cases render in parallel processes."""
    kwargs = {"cases": 1, "test_cases": 1, "seed": 9, "shape": 16, "cohort_cases": 3, "cohort_shape": 16}
    make_phantoms(tmp_path / "a", progress=False, **kwargs)
    make_phantoms(tmp_path / "b", progress=False, workers=2, **kwargs)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 20
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_held_out_cases_come_from_the_test_seed(tmp_path: Path) -> None:
    """Held-out cases and the cohort are drawn from the test seed's own stream: another test seed
    changes them and nothing else, and no held-out case shares a training case's seed."""
    from duplus.data.phantoms.case import TEST_STREAM, case_seed
    from duplus.data.phantoms.datasets import dataset_case_seed

    kwargs = {"cases": 2, "test_cases": 2, "seed": 4, "shape": 16, "cohort_cases": 2, "cohort_shape": 16}
    make_phantoms(tmp_path / "a", test_seed=11, progress=False, **kwargs)
    make_phantoms(tmp_path / "b", test_seed=12, progress=False, **kwargs)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.nii.gz"))
    changed = {
        str(f) for f in files if (tmp_path / "a" / f).read_bytes() != (tmp_path / "b" / f).read_bytes()
    }
    assert changed and all(("imagesTs" in f or "labelsTs" in f or "HECKTOR" in f) for f in changed)
    assert not any("imagesTr" in f and "Task0" in f for f in changed)
    assert any("HECKTOR" in f for f in changed)  # the cohort is reported: it comes from the test seed
    index = json.loads((tmp_path / "a" / "phantoms.json").read_text())
    assert (index["seed"], index["test_seed"]) == (4, 11)
    for t, entry in enumerate(index["datasets"], start=1):
        train = {c["seed"] for c in entry["cases"].values() if c["split"] == "train"}
        test = [c["seed"] for c in entry["cases"].values() if c["split"] == "test"]
        assert len(train) == 2 and len(test) == 2 and not train & set(test)
        assert test == [case_seed(11, TEST_STREAM, t, j) for j in range(2)]
    # no held-out case of any test seed is a training case of any collection seed (small grid checked)
    training = {dataset_case_seed(s, 0, t, i, 40) for s in range(20) for t in range(1, 7) for i in range(40)}
    held_out = {
        dataset_case_seed(0, s, t, 40 + j, 40) for s in range(20) for t in range(1, 7) for j in range(40)
    }
    assert not training & held_out and len(held_out) == 20 * 6 * 40


# ---------------------------------------------------------------------------------------- cohort
def test_cohort_files(collection: tuple[Path, dict[str, Path]]) -> None:
    root = collection[1]["HECKTOR_Phantom"]
    clinical = pd.read_csv(root / "hecktor2022_clinical_info_training.csv", dtype={"PatientID": str})
    endpoint = pd.read_csv(root / "hecktor2022_endpoint_training.csv", dtype={"PatientID": str})
    assert list(clinical.columns) == [*HECKTOR_COLUMNS, "Notes"]  # HECKTOR's columns + free-text notes
    assert clinical["Notes"].str.len().min() > 5 and clinical["Notes"].nunique() > 100
    smoker_words = clinical["Notes"].str.contains("smoker|cigarettes|pack-years") & ~clinical[
        "Notes"
    ].str.contains("Non-smoker")
    assert (clinical.loc[smoker_words, "Tobacco"].dropna() == 1).all()  # the notes agree with the columns
    assert list(endpoint.columns) == ["PatientID", "Relapse", "RFS"]
    assert clinical["PatientID"].iloc[0] == "PHA-001" and len(clinical) == 150
    assert list(clinical["PatientID"]) == list(endpoint["PatientID"])
    assert set(clinical["Gender"]) == {"M", "F"}
    assert clinical["HPV status (0=-, 1=+)"].isna().any() and clinical["Tobacco"].isna().any()
    assert not clinical["Age"].isna().any()
    assert set(endpoint["Relapse"]) == {0, 1} and (endpoint["RFS"] > 0).all()
    assert 0.2 <= 1.0 - endpoint["Relapse"].mean() <= 0.5
    for pid in ("PHA-001", "PHA-150"):
        ct, pt = (
            nib.load(root / "imagesTr" / f"{pid}__CT.nii.gz"),
            nib.load(root / "imagesTr" / f"{pid}__PT.nii.gz"),
        )
        label = nib.load(root / "labelsTr" / f"{pid}.nii.gz")
        assert ct.shape == pt.shape == label.shape and np.allclose(ct.affine, pt.affine)
        assert set(np.unique(np.asarray(label.dataobj)).astype(int)) <= {0, 1, 2}


def test_cohort_follows_known_hazard(collection: tuple[Path, dict[str, Path]]) -> None:
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    truth = json.loads((collection[1]["HECKTOR_Phantom"] / "cohort_truth.json").read_text())
    assert truth["coefficients"] == COHORT_COEFFICIENTS
    patients = pd.DataFrame(truth["patients"])
    df = pd.DataFrame({"RFS": patients["RFS"], "Relapse": patients["Relapse"]})
    for term in COHORT_COEFFICIENTS:
        x = patients[term].astype(float)
        mean, sd = COHORT_STANDARDISATION.get(term, (0.0, 1.0))
        df[term] = (x - mean) / sd
    lp = compute_linear_predictor({k: patients[k].to_numpy() for k in COHORT_COEFFICIENTS})
    np.testing.assert_allclose(lp, patients["linear_predictor"], rtol=1e-9)
    fit = CoxPHFitter().fit(df, duration_col="RFS", event_col="Relapse")
    assert (fit.params_ > 0).all(), fit.params_
    c_true = concordance_index(df["RFS"], -lp, df["Relapse"])
    assert c_true == pytest.approx(truth["c_index_true_linear_predictor"], abs=0.01)
    assert c_true > 0.72
    assert truth["c_index_image_terms"] < c_true and truth["c_index_ehr_terms"] < c_true
