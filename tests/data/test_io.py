"""Image I/O: NIfTI round trips keep the affine, bad files give one-line errors naming the file,
DICOM series read into RAS+ geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from duplus.data.dicom import load_dicom_series
from duplus.data.io import (
    Volume,
    check_same_grid,
    load_channels,
    load_image,
    load_nifti,
    save_nifti,
)
from duplus.errors import InputError


def _oblique_affine() -> np.ndarray:
    th = 0.4
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    aff[:3, 3] = [-100.0, 20.5, 33.0]
    return aff


AFFINES = {
    "identity": np.eye(4),
    "lps": np.diag([-0.7, -0.7, 3.0, 1.0])
    + np.array([[0, 0, 0, 120.0], [0, 0, 0, 90.0], [0, 0, 0, -50.0], [0] * 4]),
    "oblique": _oblique_affine(),
    "permuted": np.array([[0, 0, 2.0, 5], [1.5, 0, 0, -3], [0, -1.0, 0, 7], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_affine(tmp_path: Path, name: str, suffix: str) -> None:
    affine = AFFINES[name]
    data = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
    path = save_nifti(data, affine, tmp_path / f"img{suffix}")
    vol = load_nifti(path)
    assert vol.array.shape == (1, 6, 7, 5)
    np.testing.assert_allclose(vol.array[0], data, atol=1e-6)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    # qform and sform agree, so every reader sees the same geometry
    img = nib.load(str(path))
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-4)
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-4)
    assert np.allclose(vol.spacing, np.sqrt((affine[:3, :3] ** 2).sum(0)))


def test_label_round_trip_dtypes(tmp_path: Path) -> None:
    lab = np.zeros((4, 4, 4), dtype=np.int64)
    lab[1:3, 1:3, 1:3] = 2
    save_nifti(lab, np.eye(4), tmp_path / "lab.nii.gz")
    vol = load_nifti(tmp_path / "lab.nii.gz", is_label=True)
    assert vol.array.dtype == np.int16 and int(vol.array.max()) == 2
    save_nifti(lab > 0, np.eye(4), tmp_path / "mask.nii.gz")
    assert load_nifti(tmp_path / "mask.nii.gz", is_label=True).array.sum() == 8


def test_save_nifti_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.nii.gz"
    save_nifti(np.ones((3, 3, 3), np.float32), np.eye(4), target)
    before = target.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError):
        save_nifti(np.zeros((3, 3, 3), np.float32), np.eye(4), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]  # no temp file left


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _assert_error_names(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.nii.gz", np.ones((8, 8, 8), np.float32))
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = tmp_path / "text.nii.gz"
    text.write_text("this is not an image\n")
    plain_text = tmp_path / "text.nii"
    plain_text.write_text("this is not an image either\n" * 20)
    gz_garbage = tmp_path / "garbage.nii.gz"
    gz_garbage.write_bytes(gzip.compress(b"\x00" * 100))
    for bad in (truncated, text, plain_text, gz_garbage):
        with pytest.raises(InputError) as exc:
            load_nifti(bad)
        _assert_error_names(exc, bad)
    with pytest.raises(InputError, match="not found"):
        load_nifti(tmp_path / "missing.nii.gz")


def test_wrong_dimensions(tmp_path: Path) -> None:
    two_d = _write(tmp_path / "2d.nii.gz", np.ones((8, 8), np.float32))
    four_d = _write(tmp_path / "4d.nii.gz", np.ones((8, 8, 8, 3), np.float32))
    flat = _write(tmp_path / "flat.nii.gz", np.ones((8, 8, 1), np.float32))
    for bad, word in ((two_d, "2D"), (four_d, "4D"), (flat, "degenerate")):
        with pytest.raises(InputError, match=word) as exc:
            load_nifti(bad)
        _assert_error_names(exc, bad)
    # a 4D file is fine as channels, and a trailing singleton axis is squeezed
    assert load_nifti(four_d, allow_channels=True).array.shape == (3, 8, 8, 8)
    single = _write(tmp_path / "single.nii.gz", np.ones((8, 8, 8, 1), np.float32))
    assert load_nifti(single).array.shape == (1, 8, 8, 8)


def test_nan_inf_and_bad_labels(tmp_path: Path) -> None:
    data = np.ones((6, 6, 6), np.float32)
    data[2, 2, 2] = np.nan
    data[3, 3, 3] = np.inf
    nan = _write(tmp_path / "nan.nii.gz", data)
    with pytest.raises(InputError, match="NaN") as exc:
        load_nifti(nan)
    _assert_error_names(exc, nan)
    with pytest.raises(InputError, match="NaN"):
        load_nifti(nan, is_label=True)
    frac = _write(tmp_path / "frac.nii.gz", np.full((6, 6, 6), 0.5, np.float32))
    with pytest.raises(InputError, match="non-integer"):
        load_nifti(frac, is_label=True)
    neg = _write(tmp_path / "neg.nii.gz", np.full((6, 6, 6), -1, np.int16))
    with pytest.raises(InputError, match="negative"):
        load_nifti(neg, is_label=True)


def test_zero_spacing(tmp_path: Path) -> None:
    # nibabel refuses to write a zero spacing, so patch a valid file's header: pixdim[2] and the
    # sform's y column become 0 (NIfTI-1: pixdim at byte 76, srow_y at byte 296)
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4)), str(good))
    raw = bytearray(good.read_bytes())
    raw[84:88] = np.float32(0).tobytes()
    raw[300:304] = np.float32(0).tobytes()
    path = tmp_path / "zero.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(InputError, match="spacing") as exc:
        load_nifti(path)
    _assert_error_names(exc, path)


def test_unsupported_type_and_folder_label(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unsupported"):
        load_image(png)
    with pytest.raises(InputError, match="labels must be NIfTI"):
        load_image(tmp_path, is_label=True)


def test_grid_mismatch_names_the_label(tmp_path: Path) -> None:
    img = Volume(np.zeros((1, 4, 4, 4), np.float32), np.eye(4), tmp_path / "img.nii.gz")
    shape_bad = Volume(np.zeros((1, 4, 4, 5), np.int16), np.eye(4), tmp_path / "lab_shape.nii.gz")
    aff = np.eye(4)
    aff[0, 3] = 2.0
    affine_bad = Volume(np.zeros((1, 4, 4, 4), np.int16), aff, tmp_path / "lab_affine.nii.gz")
    for other in (shape_bad, affine_bad):
        with pytest.raises(InputError) as exc:
            check_same_grid(img, other)
        assert str(exc.value).startswith(str(other.path))
    check_same_grid(img, Volume(np.zeros((1, 4, 4, 4)), np.eye(4) + 1e-6, tmp_path / "ok.nii.gz"))


def test_load_channels(tmp_path: Path) -> None:
    a = _write(tmp_path / "c_0000.nii.gz", np.zeros((5, 5, 5), np.float32))
    b = _write(tmp_path / "c_0001.nii.gz", np.ones((5, 5, 5), np.float32))
    vol = load_channels([a, b])
    assert vol.array.shape == (2, 5, 5, 5) and vol.array[1].min() == 1
    four = _write(
        tmp_path / "four.nii.gz", np.stack([np.zeros((5, 5, 5)), np.ones((5, 5, 5))], -1).astype(np.float32)
    )
    swapped = load_channels([four], channel_order=[1, 0])
    assert swapped.array[0].min() == 1 and swapped.array[1].max() == 0
    off = _write(tmp_path / "off.nii.gz", np.ones((5, 5, 5), np.float32), np.diag([2.0, 1, 1, 1]))
    with pytest.raises(InputError) as exc:
        load_channels([a, off])
    assert str(exc.value).startswith(str(off))


# ------------------------------------------------------------------------------------------------
# DICOM


def _write_dicom_series(
    folder: Path, *, series_uid: str, n: int = 3, z0: float = -10.0, dz: float = 2.5, start: int = 0
) -> np.ndarray:
    """A tiny axial series: rows along +y (posterior), columns along +x (left), in LPS."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = 4, 5
    volume = np.zeros((n, rows, cols), dtype=np.uint16)
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        sop_uid = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"s{start + k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = "1.2.3"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-20.0, 30.0, z0 + dz * k]
        ds.PixelSpacing = [0.5, 0.75]  # row spacing (along y), column spacing (along x)
        ds.SliceThickness = 2.5
        ds.RescaleSlope = 2
        ds.RescaleIntercept = -1024
        pix = (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) + 100 * k).astype(np.uint16)
        volume[k] = pix
        ds.PixelData = pix.tobytes()
        ds.save_as(str(folder / f"s{start + k}.dcm"), enforce_file_format=True)
    return volume


def test_dicom_series_geometry_and_values(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    raw = _write_dicom_series(folder, series_uid="1.2.3.4")
    (folder / "notes.txt").write_text("not dicom")  # passed over (a .txt file)
    vol = load_dicom_series(folder)
    # array (cols, rows, slices): i runs along x (column direction), j along y, k along z
    assert vol.array.shape == (1, 5, 4, 3)
    expected = np.transpose(raw, (2, 1, 0)).astype(np.float32) * 2 - 1024
    np.testing.assert_allclose(vol.array[0], expected)
    lps = np.array([[0.75, 0, 0, -20.0], [0, 0.5, 0, 30.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, np.diag([-1, -1, 1, 1]) @ lps)
    # voxel (i=4, j=3, k=2) sits at LPS (-20 + 3, 30 + 1.5, -5) -> RAS (17, -31.5, -5)
    np.testing.assert_allclose(vol.affine @ [4, 3, 2, 1], [17.0, -31.5, -5.0, 1.0])
    assert load_image(folder).array.shape == vol.array.shape


def test_dicom_mixed_series_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    _write_dicom_series(folder, series_uid="1.2.3.4", n=2)
    _write_dicom_series(folder, series_uid="1.2.3.5", n=2, start=10)
    with pytest.raises(InputError, match="2 DICOM series") as exc:
        load_dicom_series(folder)
    _assert_error_names(exc, folder)


def test_dicom_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM"):
        load_dicom_series(tmp_path)


def test_dicom_duplicate_slices_refused(tmp_path: Path) -> None:
    _write_dicom_series(tmp_path / "dup", series_uid="1.2.3.4", n=3, dz=0.0)
    with pytest.raises(InputError, match="same position"):
        load_dicom_series(tmp_path / "dup")
