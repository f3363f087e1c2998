"""Preprocessing: RAS 1.5 mm grid, normalisation, crop, and the prepared-dataset cache."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import duplus.data.prepared as prepared_cache
import duplus.data.preprocess as pp
from duplus.config import PreprocessConfig
from duplus.data.io import Volume, load_nifti
from duplus.data.prepared import load_prepared, prepare_dataset
from duplus.data.preprocess import check_label_values, normalise_intensity, preprocess_case
from duplus.data.specs import load_dataset_spec
from duplus.errors import InputError
from duplus.vocab import PETCT_CHANNEL_ORDER

SHAPE = (40, 36, 12)
SPACING = (0.8, 0.9, 2.5)


def _lps_affine() -> np.ndarray:
    aff = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    aff[:3, 3] = [30.0, 25.0, -15.0]
    return aff


def _phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CT in HU: an elliptic body (40 HU) in air, a cube organ (label 1, 80 HU) holding a
    small tumour (label 2)."""
    rng = np.random.default_rng(seed)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    body = ((ii - 18) / 10.0) ** 2 + ((jj - 18) / 9.0) ** 2 <= 1.0
    body &= (kk >= 1) & (kk <= 10)
    ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 5, SHAPE)
    label = np.zeros(SHAPE, np.int16)
    label[12:22, 14:22, 4:8] = 1
    label[15:18, 16:19, 5:7] = 2
    ct[label > 0] = 80.0
    return ct.astype(np.float32), label


def _write_msd(root: Path, n: int = 2, with_test: bool = False) -> Path:
    training = []
    for i in range(n):
        ct, lab = _phantom(i)
        for sub, arr in (("imagesTr", ct), ("labelsTr", lab)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, _lps_affine()), str(root / sub / f"case_{i}.nii.gz"))
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    meta: dict = {
        "name": "Phantom",
        "modality": {"0": "CT"},
        "region": "abdomen",
        "labels": {"0": "background", "1": "liver", "2": "liver tumour"},
        "numTraining": n,
        "training": training,
        "test": [],
    }
    if with_test:
        ct, _ = _phantom(99)
        (root / "imagesTs").mkdir()
        nib.save(nib.Nifti1Image(ct, _lps_affine()), str(root / "imagesTs" / "case_t.nii.gz"))
        meta["test"] = ["./imagesTs/case_t.nii.gz"]
    (root / "dataset.json").write_text(json.dumps(meta))
    return root / "dataset.json"


def _centroid_world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask).mean(0)
    return affine[:3, :3] @ idx + affine[:3, 3]


def test_preprocess_case_gives_ras_grid_and_keeps_anatomy(tmp_path: Path) -> None:
    ct, lab = _phantom()
    aff = _lps_affine()
    image = Volume(ct[None], aff, tmp_path / "img.nii.gz")
    label = Volume(lab[None], aff, tmp_path / "lab.nii.gz")
    case = preprocess_case(image, label, "CT", PreprocessConfig())
    np.testing.assert_allclose(np.diag(case.affine)[:3], [1.5, 1.5, 1.5])
    np.testing.assert_allclose(case.affine[:3, :3], np.diag([1.5] * 3))
    assert case.image.dtype == np.float32 and case.image.ndim == 4 and case.image.shape[0] == 1
    assert case.label is not None and case.label.dtype == np.int16
    assert case.label.shape == case.image.shape[1:]
    assert set(np.unique(case.label)) == {0, 1, 2}
    assert case.image.min() >= -1.0 and case.image.max() <= 1.0
    # the organ (labels 1 and 2) and the tumour stay where they were, within a voxel
    for values in ([1, 2], [2]):
        before = _centroid_world(np.isin(lab, values), aff)
        after = _centroid_world(np.isin(case.label, values), case.affine)
        assert np.linalg.norm(before - after) < 1.5
    # the image follows the label: organ voxels have the organ's intensity
    organ_value = (80.0 + 991.0) / (500.0 + 991.0) * 2 - 1
    assert abs(float(np.median(case.image[0][case.label == 1])) - organ_value) < 0.02
    # the air around the body is cropped, with the margin kept
    meta = case.meta
    assert meta["original_shape"] == list(SHAPE)
    np.testing.assert_allclose(meta["original_affine"], aff)
    assert any(
        b - a < r
        for a, b, r in zip(meta["crop_start"], meta["crop_stop"], meta["resampled_shape"], strict=True)
    )
    body_world = _centroid_world(ct > -500, aff)
    assert np.linalg.norm(_centroid_world(case.image[0] > -0.5, case.affine) - body_world) < 3.0


def test_no_crop_keeps_the_resampled_grid(tmp_path: Path) -> None:
    ct, lab = _phantom()
    cfg = PreprocessConfig(crop_foreground=False)
    case = preprocess_case(Volume(ct[None], _lps_affine()), None, "CT", cfg)
    assert list(case.image.shape[1:]) == case.meta["resampled_shape"] and case.label is None


def test_label_grid_mismatch_names_the_label(tmp_path: Path) -> None:
    ct, lab = _phantom()
    other = _lps_affine()
    other[0, 3] += 5.0
    label_path = tmp_path / "labelsTr" / "x.nii.gz"
    with pytest.raises(InputError, match="affine does not match") as exc:
        preprocess_case(
            Volume(ct[None], _lps_affine()), Volume(lab[None], other, label_path), "CT", PreprocessConfig()
        )
    assert str(exc.value).startswith(str(label_path))


def test_normalise_intensity_rules() -> None:
    cfg = PreprocessConfig(ct_window=[-100.0, 300.0], pet_suv_max=10.0, mri_percentiles=[1.0, 99.0])
    ct = np.array([-1000.0, -100.0, 100.0, 300.0, 3000.0], np.float32).reshape(1, 5, 1, 1)
    np.testing.assert_allclose(normalise_intensity(ct, "CT", cfg).ravel(), [-1, -1, 0, 1, 1])
    pet = np.array([-1.0, 0.0, 5.0, 10.0, 50.0], np.float32).reshape(1, 5, 1, 1)
    np.testing.assert_allclose(normalise_intensity(pet, "PET", cfg).ravel(), [0, 0, 0.5, 1, 1])
    rng = np.random.default_rng(0)
    mri = np.zeros((1, 20, 20, 20), np.float32)
    mri[0, 5:15, 5:15, 5:15] = rng.normal(300.0, 40.0, (10, 10, 10))
    out = normalise_intensity(mri, "MRI", cfg)
    fg = out[0, 5:15, 5:15, 5:15]
    assert abs(float(fg.mean())) < 0.05 and abs(float(fg.std()) - 1.0) < 0.05
    # background is clipped to the low percentile of the tissue: the minimum, well below it
    assert float(out[0, 0, 0, 0]) == float(out.min()) < -2
    petct = np.concatenate([pet, ct])  # channel 0 PET, channel 1 CT
    out = normalise_intensity(petct, "PETCT", cfg)
    np.testing.assert_allclose(out[0].ravel(), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(out[1].ravel(), [-1, -1, 0, 1, 1])
    with pytest.raises(InputError, match="2 channels"):
        normalise_intensity(pet, "PETCT", cfg)
    assert PETCT_CHANNEL_ORDER == ("PET", "CT")


def test_check_label_values() -> None:
    lab = np.array([0, 1, 2, 7])
    check_label_values(lab[:3], [1, 2], "lab.nii.gz")
    with pytest.raises(InputError, match=r"^lab\.nii\.gz: label values \[7\] are not in"):
        check_label_values(lab, [1, 2], "lab.nii.gz")


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_dataset_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_dataset_spec(_write_msd(tmp_path / "Task99_Phantom"))
    inputs = _snapshot(tmp_path / "Task99_Phantom")
    calls: list[str] = []
    real = pp.preprocess_case

    def counting(image: Volume, *args: object, **kwargs: object) -> pp.PreprocessedCase:
        calls.append(str(image.path))
        return real(image, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prepared_cache, "preprocess_case", counting)
    cfg = PreprocessConfig()
    cache = prepare_dataset(spec, tmp_path / "cache", cfg, progress=False)
    assert cache == tmp_path / "cache" / "Phantom" and len(calls) == 2
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["t1_prompt"] == "A CT scan of the abdomen" and manifest["modality"] == "CT"
    assert manifest["labels"] == {"1": "liver", "2": "liver tumour"}
    assert manifest["preprocess"]["spacing"] == [1.5, 1.5, 1.5]
    entry = manifest["cases"][0]
    assert entry["voxel_counts"]["liver"] > entry["voxel_counts"]["liver tumour"] > 0
    assert len(entry["sources"]) == 2 and {"size", "mtime_ns", "head_sha1"} <= set(entry["sources"][0])
    img = np.load(cache / entry["image"])
    seg = np.load(cache / entry["label"])
    assert list(img.shape) == entry["shape"] and seg.shape == img.shape[1:]
    assert img.dtype == np.float32 and seg.dtype == np.int16

    # second call: nothing rebuilt, nothing rewritten
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    prepare_dataset(spec, tmp_path / "cache", cfg, progress=False)
    assert len(calls) == 2
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == before

    # a corrupted npy is rebuilt (and only that case)
    (cache / entry["image"]).write_bytes(b"garbage")
    prepare_dataset(spec, tmp_path / "cache", cfg, progress=False)
    assert len(calls) == 3 and np.load(cache / entry["image"]).shape == img.shape

    # a changed config rebuilds everything
    prepare_dataset(spec, tmp_path / "cache", PreprocessConfig(spacing=[2.0, 2.0, 2.0]), progress=False)
    assert len(calls) == 5

    # inputs are never touched
    assert _snapshot(tmp_path / "Task99_Phantom") == inputs

    prepared = load_prepared(cache)
    assert prepared.name == "Phantom" and prepared.region == "abdomen"
    assert prepared.t1_prompt == "A CT scan of the abdomen"
    assert prepared.labels == {1: "liver", 2: "liver tumour"} and prepared.targets == [
        "liver",
        "liver tumour",
    ]
    assert prepared.target_values == {"liver": [1, 2], "liver tumour": [2]}
    assert [c.case_id for c in prepared.cases] == ["case_0", "case_1"]
    c0 = prepared.cases[0]
    assert c0.image_path.is_file() and c0.label_path is not None and c0.label_path.is_file()
    np.testing.assert_allclose(np.diag(c0.affine)[:3], [2.0, 2.0, 2.0])


def test_changed_source_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_msd(tmp_path / "ds", n=1)
    spec = load_dataset_spec(path)
    prepare_dataset(spec, tmp_path / "cache", PreprocessConfig(), progress=False)
    label_file = tmp_path / "ds" / "labelsTr" / "case_0.nii.gz"
    lab = load_nifti(label_file, is_label=True).array[0]
    lab[lab == 2] = 1  # the annotator removed the tumour
    nib.save(nib.Nifti1Image(lab, _lps_affine()), str(label_file))
    prepare_dataset(spec, tmp_path / "cache", PreprocessConfig(), progress=False)
    prepared = load_prepared(tmp_path / "cache" / "Phantom")
    assert prepared.cases[0].voxel_counts["liver tumour"] == 0


def test_prepare_rejects_bad_labels_and_unsafe_cache(tmp_path: Path) -> None:
    path = _write_msd(tmp_path / "ds", n=1)
    label_file = tmp_path / "ds" / "labelsTr" / "case_0.nii.gz"
    lab = load_nifti(label_file, is_label=True).array[0]
    lab[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(lab, _lps_affine()), str(label_file))
    spec = load_dataset_spec(path)
    with pytest.raises(InputError, match=r"label values \[9\]") as exc:
        prepare_dataset(spec, tmp_path / "cache", PreprocessConfig(), progress=False)
    assert str(exc.value).startswith(str(label_file))
    with pytest.raises(InputError, match="must not be the input folder"):
        prepare_dataset(spec, tmp_path / "ds" / "cache", PreprocessConfig(), progress=False)


def test_load_prepared_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="run `duplus prepare`"):
        load_prepared(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a DuPLUS"):
        load_prepared(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "duplus-prepared", "labels": {}}))
    with pytest.raises(InputError, match="malformed manifest"):
        load_prepared(tmp_path)


def test_test_cases_and_label_map_changes(tmp_path: Path) -> None:
    path = _write_msd(tmp_path / "ds", n=1, with_test=True)
    spec = load_dataset_spec(path)
    cache = prepare_dataset(spec, tmp_path / "cache", PreprocessConfig(), progress=False, include_test=True)
    prepared = load_prepared(cache)
    assert [(c.case_id, c.split, c.label_path) for c in prepared.cases][1] == ("case_t", "test", None)
    assert [c.case_id for c in prepared.training] == ["case_0"]
    # a later run without test cases keeps them
    prepare_dataset(spec, tmp_path / "cache", PreprocessConfig(), progress=False)
    assert len(load_prepared(cache).cases) == 2
    # renaming a class changes the cache key: the case is rebuilt with the new counts
    meta = json.loads(path.read_text())
    meta["labels"]["2"] = "lesion"
    path.write_text(json.dumps(meta))
    prepare_dataset(load_dataset_spec(path), tmp_path / "cache", PreprocessConfig(), progress=False)
    again = load_prepared(cache)
    assert set(again.cases[0].voxel_counts) == {"liver", "lesion"} and len(again.cases) == 1
