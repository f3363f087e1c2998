"""Clinical outputs end to end on a small DICOM series and a tiny trained model: DICOM-SEG read back
equals the NIfTI masks, statistics.csv, previews, and a model bundle that segments byte-identically
to the checkpoint it was exported from."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from duplus.cli import main

_HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.setdefault(name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


dicom_series = _load("dicom_series", _HERE.parent / "data" / "dicom_series.py")
tiny = _load("reliability_tiny_run", _HERE.parent / "reliability" / "conftest.py")

TARGETS = ["liver", "spleen"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reliability suite's tiny run (2 training steps of the ``tiny`` preset)."""
    from duplus.training.api import train

    root = tmp_path_factory.mktemp("tiny")
    dataset = tiny.write_tiny_dataset(root / "data")
    config = tiny.write_tiny_config(root / "train.yaml", dataset)
    train(config=config, out=root / "run", progress=False, max_steps=tiny.TRAIN_STEPS)
    return root / "run" / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 16 x 16 x 8 CT series of a phantom abdomen (2 x 2 x 4 mm), written with pydicom."""
    from duplus.data.phantoms import make_phantom_case

    case = make_phantom_case(3, "abdomen", "CT", shape=(16, 16, 8), spacing=(2.0, 2.0, 4.0))
    hu = np.rint(case.image)
    # the phantom's i, j run to the right and anterior (RAS); DICOM columns and rows of an axial
    # slice run to the left and posterior (LPS): flip both so the series shows the same patient
    stored = np.stack([(hu[::-1, ::-1, k].T + 1024).clip(0, 4000) for k in range(8)]).astype(np.uint16)
    folder = tmp_path_factory.mktemp("dicom") / "ct1"
    return dicom_series.write_series(
        folder, depths=[4.0 * k for k in range(8)], pixel_spacing=(2.0, 2.0), values=stored
    )


@pytest.fixture(scope="module")
def threshold(checkpoint: Path, ct_series) -> float:  # type: ignore[no-untyped-def]
    """A threshold that gives the barely trained model masks of a few hundred voxels."""
    from duplus.data.dicom import load_dicom_series
    from duplus.inference.predictor import Predictor

    volume = load_dicom_series(ct_series.files[0].parent)
    prob = (
        Predictor.from_checkpoint(checkpoint, device="cpu")
        .predict(volume, "CT", "abdomen", TARGETS, probabilities=True)
        .probabilities
    )
    return float(np.quantile(prob, 0.7))


def _segment(series_dir: Path, out: Path, checkpoint: str, threshold: float, *extra: str) -> int:
    return main(["segment", "-q", "-i", str(series_dir), "-o", str(out), "-c", checkpoint, "--modality", "CT",
                 "--region", "abdomen", "--targets", *TARGETS, "--threshold", str(threshold), *extra])  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, checkpoint, ct_series, threshold):  # type: ignore[no-untyped-def]
    """Segment the series three ways: NIfTI from the .pt (with statistics, preview, probabilities),
    NIfTI from the imported bundle on a fresh $DUPLUS_HOME, DICOM-SEG from the bundle."""
    root = tmp_path_factory.mktemp("runs")
    series_dir = ct_series.files[0].parent
    mp = pytest.MonkeyPatch()
    mp.setenv("DUPLUS_HOME", str(root / "home"))
    try:
        assert _segment(series_dir, root / "pt", str(checkpoint), threshold,
                        "--statistics", "--preview", "--save-probabilities") == 0  # fmt: skip
        assert main(["export", "-q", "-c", str(checkpoint), "-o", str(root / "liver_model.duplus")]) == 0
        assert main(["import", "-q", str(root / "liver_model.duplus"), "--name", "tinyliver"]) == 0
        assert _segment(series_dir, root / "bundle", "tinyliver", threshold) == 0
        assert _segment(series_dir, root / "seg", "tinyliver", threshold, "--output-type", "dicom-seg") == 0
    finally:
        mp.undo()
    return root


def test_bundle_segments_byte_identically(runs: Path) -> None:
    for target in TARGETS:
        a = (runs / "pt" / "ct1" / f"{target}.nii.gz").read_bytes()
        assert a == (runs / "bundle" / "ct1" / f"{target}.nii.gz").read_bytes()
    assert (runs / "home" / "models" / "tinyliver" / "model.duplus").is_file()


def test_dicom_seg_reads_back_as_the_nifti_masks(runs: Path, ct_series) -> None:  # type: ignore[no-untyped-def]
    import pydicom

    from duplus.data.dicom import load_dicom_series
    from duplus.inference.dicom_seg import read_dicom_seg

    seg_path = runs / "seg" / "ct1.seg.dcm"
    assert sorted(p.name for p in (runs / "seg").iterdir() if not p.name.startswith(".")) == ["ct1.seg.dcm"]
    source = load_dicom_series(ct_series.files[0].parent).meta["dicom"]
    labels, masks = read_dicom_seg(seg_path, source)
    assert labels == TARGETS
    total = 0
    for k, target in enumerate(TARGETS):
        nifti = np.asarray(nib.load(str(runs / "pt" / "ct1" / f"{target}.nii.gz")).dataobj)
        np.testing.assert_array_equal(masks[k], nifti)
        total += int(nifti.sum())
    assert total > 50  # the comparison is not between two empty masks
    ds = pydicom.dcmread(seg_path)
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == ct_series.uid
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(ct_series.sop_uids)
    liver = ds.SegmentSequence[0]
    assert liver.SegmentLabel == "liver"
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT liver
    assert ds.FrameOfReferenceUID == source.datasets[0].FrameOfReferenceUID


def test_statistics_volume_intensity_probability(runs: Path, ct_series) -> None:  # type: ignore[no-untyped-def]
    from duplus.data.dicom import load_dicom_series

    volume = load_dicom_series(ct_series.files[0].parent)
    with (runs / "pt" / "statistics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["target"] for r in rows] == TARGETS and {r["case"] for r in rows} == {"ct1"}
    probabilities = np.asarray(nib.load(str(runs / "pt" / "ct1_probabilities.nii.gz")).dataobj)
    voxel_ml = 2.0 * 2.0 * 4.0 / 1000.0
    for k, row in enumerate(rows):
        mask = np.asarray(nib.load(str(runs / "pt" / "ct1" / f"{row['target']}.nii.gz")).dataobj) > 0
        assert int(row["voxels"]) == int(mask.sum())
        assert float(row["volume_ml"]) == pytest.approx(mask.sum() * voxel_ml, rel=1e-3)
        if mask.any():
            assert float(row["mean"]) == pytest.approx(volume.array[0][mask].mean(), rel=1e-4, abs=1e-3)
            assert float(row["mean_probability"]) == pytest.approx(
                probabilities[..., k][mask].mean(), rel=1e-4
            )
        assert row["unit"] == "HU" and row["suv_max"] == ""


def test_preview_png_written(runs: Path) -> None:
    png = runs / "pt" / "ct1_preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dicom_seg_refused_for_nifti_input(tmp_path: Path, checkpoint: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from duplus.data.io import save_nifti

    image = save_nifti(np.zeros((8, 8, 8), np.float32), np.eye(4), tmp_path / "ct.nii.gz")
    rc = _segment(image, tmp_path / "out", str(checkpoint), 0.5, "--output-type", "dicom-seg")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs DICOM input" in err[0]
    assert not (tmp_path / "out").exists()
