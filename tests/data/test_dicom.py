"""DICOM series in through pydicom/highdicom: grouping, geometry rules, damaged files, compressed
transfer syntaxes, zip archives and PET SUV, on small synthetic series written in the tests."""

from __future__ import annotations

import importlib.util
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from duplus.data.dicom import list_dicom_series, load_dicom_series
from duplus.data.io import load_image
from duplus.errors import InputError

_spec = importlib.util.spec_from_file_location("dicom_series", Path(__file__).with_name("dicom_series.py"))
assert _spec is not None and _spec.loader is not None
dicom_series = sys.modules.setdefault("dicom_series", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(dicom_series)
write_series = dicom_series.write_series


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------ geometry
def test_axial_series_values_and_affine_by_hand(tmp_path: Path) -> None:
    depths = [5.0, 0.0, 2.5, 10.0, 7.5, 12.5, 17.5, 15.0]  # files out of slice order
    s = write_series(tmp_path / "ct", depths=depths, slopes=[1.0, 2.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0])
    vol = load_dicom_series(tmp_path / "ct")
    assert vol.array.shape == (1, 16, 16, 8)  # (columns, rows, slices)
    order = np.argsort(depths)
    for k, f in enumerate(order):  # slice k of the volume is file f
        expected = s.stored[f].astype(np.float32) * s.slopes[f] - 1024.0
        np.testing.assert_allclose(vol.array[0, :, :, k], expected.T)
    # by hand: columns step 0.7 mm along +x (L), rows 0.8 mm along +y (P), slices 2.5 mm along +z,
    # from LPS (-20, 30, -10); RAS flips x and y
    expected_affine = np.array([[-0.7, 0, 0, 20.0], [0, -0.8, 0, -30.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, expected_affine, atol=1e-9)
    # voxel (column 3, row 5, slice 2) sits at LPS (-20 + 2.1, 30 + 4.0, -10 + 5) = RAS (17.9, -34, -5)
    np.testing.assert_allclose(vol.affine @ [3, 5, 2, 1], [17.9, -34.0, -5.0, 1.0], atol=1e-9)
    assert vol.meta["modality"] == "CT" and vol.meta["units"] == "HU"
    assert [d.SOPInstanceUID for d in vol.meta["dicom"].datasets] == [s.sop_uids[f] for f in order]


def test_coronal_series_affine_by_hand(tmp_path: Path) -> None:
    # rows along +x (L), columns along -z (towards the feet): normal = row x col = (0, 1, 0) (P)
    write_series(tmp_path / "cor", orientation=(1, 0, 0, 0, 0, -1), origin=(0.0, 0.0, 0.0), depths=[0, 3, 6])
    vol = load_dicom_series(tmp_path / "cor")
    lps = np.array([[0.7, 0, 0, 0], [0, 0, 3.0, 0], [0, -0.8, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, np.diag([-1, -1, 1, 1]) @ lps, atol=1e-9)


def test_two_series_listed_and_one_picked(tmp_path: Path) -> None:
    a = write_series(tmp_path / "mixed", uid="1.2.3.100", prefix="a", depths=[0, 2, 4])
    b = write_series(tmp_path / "mixed", uid="1.2.3.200", prefix="b", depths=[0, 3, 6, 9])
    with pytest.raises(InputError, match="mixes 2 DICOM series") as exc:
        load_dicom_series(tmp_path / "mixed")
    text = _one_line(exc)
    assert "1.2.3.100" in text and "1.2.3.200" in text and "--series-uid" in text
    vol = load_dicom_series(tmp_path / "mixed", series_uid=b.uid)
    assert vol.array.shape[-1] == 4 and vol.meta["dicom"].series_uid == b.uid
    assert load_dicom_series(tmp_path / "mixed", series_uid=a.uid).array.shape[-1] == 3
    with pytest.raises(InputError, match="has no series 9.9"):
        load_dicom_series(tmp_path / "mixed", series_uid="9.9")
    assert {i.uid for i in list_dicom_series(tmp_path / "mixed")} == {a.uid, b.uid}


def test_missing_slice_refused_then_resampled(tmp_path: Path) -> None:
    depths = [0.0, 2.5, 5.0, 10.0, 12.5]  # the slice at 7.5 mm is missing
    s = write_series(tmp_path / "gap", depths=depths)
    with pytest.raises(InputError, match="1 missing slice") as exc:
        load_dicom_series(tmp_path / "gap")
    assert "allow-uneven" in _one_line(exc)
    vol = load_dicom_series(tmp_path / "gap", allow_uneven=True)
    assert vol.array.shape[-1] == 6 and vol.meta["dicom"].resampled
    np.testing.assert_allclose(vol.affine[2, 2], 2.5)
    hu = s.stored.astype(np.float32) - 1024.0
    np.testing.assert_allclose(vol.array[0, :, :, 3], ((hu[2] + hu[3]) / 2).T, atol=1e-3)
    np.testing.assert_allclose(vol.array[0, :, :, 4], hu[3].T, atol=1e-3)


def test_uneven_spacing_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "uneven", depths=[0.0, 2.5, 5.0, 6.0, 8.5])
    with pytest.raises(InputError, match="uneven slice spacing"):
        load_dicom_series(tmp_path / "uneven")
    assert load_dicom_series(tmp_path / "uneven", allow_uneven=True).array.shape[-1] >= 4


def test_gantry_tilt_refused_then_resampled(tmp_path: Path) -> None:
    # each slice's origin moves 0.28 mm along the column direction (-> 0.35 rows) per mm of depth
    s = write_series(
        tmp_path / "tilt", depths=[0.0, 2.5, 5.0, 7.5], tilt_mm=(0.0, 0.28), pixel_spacing=(0.8, 0.7)
    )
    with pytest.raises(InputError, match="gantry tilt"):
        load_dicom_series(tmp_path / "tilt")
    vol = load_dicom_series(tmp_path / "tilt", allow_uneven=True)
    assert vol.array.shape == (1, 16, 16, 4)
    # slice 2 lies 5 * 0.28 = 1.4 mm = 1.75 rows further along the columns: grid row j + 1.75 of
    # the slice is grid row j... so grid row 4 of slice 2 is the slice's row 4 - 1.75 = 2.25
    hu = s.stored[2].astype(np.float32) - 1024.0
    expected = 0.75 * hu[2] + 0.25 * hu[3]
    np.testing.assert_allclose(vol.array[0, :, 4, 2], expected, atol=1e-2)


def test_duplicate_slices_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "dup", depths=[0.0, 2.5, 2.5, 5.0])
    with pytest.raises(InputError, match="same position"):
        load_dicom_series(tmp_path / "dup", allow_uneven=True)


# ------------------------------------------------------------------------------- damaged files
def test_truncated_file_refused_naming_it(tmp_path: Path) -> None:
    s = write_series(tmp_path / "cut", depths=[0.0, 2.5, 5.0, 7.5, 10.0])
    damaged = s.files[2]
    damaged.write_bytes(damaged.read_bytes()[:-200])
    with pytest.raises(InputError) as exc:
        load_dicom_series(tmp_path / "cut")
    assert _one_line(exc).startswith(str(damaged))


def test_file_cut_anywhere_refused_naming_it(tmp_path: Path) -> None:
    """pydicom reads a file cut short without complaint; wherever the cut, the file is refused."""
    s = write_series(tmp_path / "src", depths=[0.0, 2.5, 5.0, 7.5, 10.0])
    full = s.files[4].read_bytes()  # the last slice: its loss would leave a regular 4-slice stack
    for cut in range(0, len(full), len(full) // 12):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        for f in s.files:
            (folder / f.name).write_bytes(full[:cut] if f == s.files[4] else f.read_bytes())
        with pytest.raises(InputError) as exc:
            load_dicom_series(folder)
        assert _one_line(exc).startswith(str(folder / s.files[4].name)), cut


@pytest.mark.parametrize("syntax", [None, "RLELossless"])
def test_corrupted_bytes_read_or_refused_in_one_line(tmp_path: Path, syntax: str | None) -> None:
    """Random byte flips: the series is read (a flip inside the pixel values is undetectable:
    DICOM has no checksum) or refused with one InputError line naming it; nothing else escapes."""
    import random

    import pydicom.uid

    uid = getattr(pydicom.uid, syntax) if syntax else None
    s = write_series(tmp_path / "ct", depths=[0.0, 2.5, 5.0], transfer_syntax=uid)
    full, rng, refused = s.files[1].read_bytes(), random.Random(0), 0
    for _ in range(60):
        data = bytearray(full)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(128, len(data))] = rng.randrange(256)
        s.files[1].write_bytes(bytes(data))
        try:
            load_dicom_series(tmp_path / "ct")
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(tmp_path / "ct"))
            refused += 1
    assert refused > 10


def test_non_image_objects_passed_over(tmp_path: Path) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    write_series(tmp_path / "ct", depths=[0.0, 2.5, 5.0])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = FileDataset("report", {}, file_meta=meta, preamble=b"\0" * 128)
    report.SOPClassUID, report.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    report.Modality, report.SeriesInstanceUID = "SR", generate_uid()
    report.save_as(str(tmp_path / "ct" / "report"), enforce_file_format=True)
    assert load_dicom_series(tmp_path / "ct").array.shape[-1] == 3


def test_garbage_file_refused_naming_it_but_notes_passed_over(tmp_path: Path) -> None:
    write_series(tmp_path / "junk", depths=[0.0, 2.5, 5.0])
    (tmp_path / "junk" / "notes.txt").write_text("not DICOM")
    assert load_dicom_series(tmp_path / "junk").array.shape[-1] == 3
    bad = tmp_path / "junk" / "s099.dcm"
    bad.write_bytes(b"\x00" * 50)
    with pytest.raises(InputError, match="not a DICOM file") as exc:
        load_dicom_series(tmp_path / "junk")
    assert _one_line(exc).startswith(str(bad))


def test_corrupt_jpeg2000_refused_naming_it(tmp_path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless

    # openjpeg's default 6 resolution levels need at least 32 x 32 pixels
    s = write_series(
        tmp_path / "j2k", rows=32, cols=32, depths=[0.0, 2.5, 5.0], transfer_syntax=JPEG2000Lossless
    )
    data = bytearray(s.files[1].read_bytes())
    soc = data.index(b"\xff\x4f\xff\x51")  # start of codestream, image size marker
    data[soc + 4 : soc + 40] = b"\xff" * 36
    s.files[1].write_bytes(bytes(data))
    with pytest.raises(InputError) as exc:
        load_dicom_series(tmp_path / "j2k")
    assert _one_line(exc).startswith(str(s.files[1]))


def test_damaged_jpeg_lossless_refused_and_stderr_kept_clean(tmp_path: Path, capfd) -> None:  # type: ignore[no-untyped-def]
    """GDCM's JPEG codec prints "Corrupt JPEG data" to the process's stderr and returns pixels
    anyway; the slice is refused instead, and nothing reaches the terminal."""
    s = write_series(
        tmp_path / "jpeg",
        rows=32,
        cols=32,
        depths=[0.0, 2.5, 5.0],
        transfer_syntax=dicom_series.JPEG_LOSSLESS_SV1,
    )
    data = s.files[1].read_bytes()
    end = data.rindex(b"\xff\xd9")  # end of image: zero the last entropy-coded bytes before it
    s.files[1].write_bytes(data[: end - 40] + b"\0" * 40 + data[end:])
    with pytest.raises(InputError, match="Corrupt JPEG data") as exc:
        load_dicom_series(tmp_path / "jpeg")
    assert _one_line(exc).startswith(str(s.files[1]))
    assert capfd.readouterr().err == ""


def test_empty_folder_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM images"):
        load_dicom_series(tmp_path)


# --------------------------------------------------------------------- compression and archives
@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless", "JPEGLSLossless", "JPEGLosslessSV1"])
def test_compressed_series_read(tmp_path: Path, syntax: str) -> None:
    import pydicom.uid

    uid = getattr(pydicom.uid, syntax)
    s = write_series(tmp_path / "c", rows=32, cols=32, depths=[0.0, 2.5, 5.0], transfer_syntax=uid)
    import pydicom

    assert pydicom.dcmread(s.files[0]).file_meta.TransferSyntaxUID == uid
    vol = load_dicom_series(tmp_path / "c")
    np.testing.assert_array_equal(vol.array[0], np.transpose(s.stored, (2, 1, 0)).astype(np.float32) - 1024)


def test_zip_archive_reads_like_the_folder(tmp_path: Path) -> None:
    write_series(tmp_path / "series", depths=[0.0, 2.5, 5.0, 7.5])
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "series").iterdir()):
            zf.write(f, f"patient/series/{f.name}")
        zf.writestr("patient/README.txt", "hello")
    folder, zipped = load_dicom_series(tmp_path / "series"), load_image(archive)
    np.testing.assert_array_equal(folder.array, zipped.array)
    np.testing.assert_array_equal(folder.affine, zipped.affine)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("patient/series/s999.dcm", b"DICM broken")
    with pytest.raises(InputError) as exc:
        load_image(archive)
    assert _one_line(exc).startswith(str(archive / "patient/series/s999.dcm"))


def test_not_a_zip_refused(tmp_path: Path) -> None:
    bad = tmp_path / "scan.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable zip archive"):
        load_image(bad)
    with pytest.raises(InputError, match="labels must be NIfTI"):
        load_image(tmp_path, is_label=True)


# ------------------------------------------------------------------------------------------ PET
HALF_LIFE_F18 = 6586.2  # s (109.77 min)


def _pet_tags(**drug_overrides: object) -> dict:
    from pydicom.dataset import Dataset

    drug = Dataset()
    drug.RadiopharmaceuticalStartDateTime = "20240101110000"
    drug.RadionuclideTotalDose = 370e6  # Bq
    drug.RadionuclideHalfLife = HALF_LIFE_F18
    for key, value in drug_overrides.items():
        setattr(drug, key, value)
    return {
        "Units": "BQML",
        "DecayCorrection": "START",
        "PatientWeight": 75.0,
        "SeriesDate": "20240101",
        "SeriesTime": "120000",
        "AcquisitionDate": "20240101",
        "AcquisitionTime": "120500",
        "RadiopharmaceuticalInformationSequence": [drug],
    }


def test_pet_bqml_to_suv_by_hand(tmp_path: Path) -> None:
    slopes = [2.0, 0.5, 1.0, 3.0]
    s = write_series(
        tmp_path / "pet", modality="PT", depths=[0, 3, 6, 9], slopes=slopes, intercept=0.0, extra=_pet_tags()
    )
    vol = load_dicom_series(tmp_path / "pet")
    assert vol.meta["units"] == "SUVbw"
    # by hand: 3600 s from injection (11:00) to series start (12:00), so the dose has decayed to
    # 370 MBq * 2^(-3600 / 6586.2); SUV = Bq/mL * 75000 g / that
    decayed = 370e6 * math.pow(2.0, -3600.0 / HALF_LIFE_F18)
    for k in range(4):
        bqml = s.stored[k].astype(np.float64) * slopes[k]
        np.testing.assert_allclose(vol.array[0, :, :, k], (bqml * 75000.0 / decayed).T, rtol=0.01)


def test_pet_injection_time_without_date_and_admin_correction(tmp_path: Path) -> None:
    tags = _pet_tags()
    drug = tags["RadiopharmaceuticalInformationSequence"][0]
    del drug.RadiopharmaceuticalStartDateTime
    drug.RadiopharmaceuticalStartTime = "110000"
    s = write_series(tmp_path / "t", modality="PT", depths=[0, 3], intercept=0.0, extra=tags)
    decayed = 370e6 * math.pow(2.0, -3600.0 / HALF_LIFE_F18)
    got = load_dicom_series(tmp_path / "t").array[0, :, :, 0]
    np.testing.assert_allclose(got, (s.stored[0] * 75000.0 / decayed).T, rtol=0.01)
    admin = {**_pet_tags(), "DecayCorrection": "ADMIN"}
    s = write_series(tmp_path / "a", modality="PT", depths=[0, 3], intercept=0.0, extra=admin)
    got = load_dicom_series(tmp_path / "a").array[0, :, :, 0]
    np.testing.assert_allclose(got, (s.stored[0] * 75000.0 / 370e6).T, rtol=0.01)


def test_pet_missing_tags_refused_unless_already_suv(tmp_path: Path) -> None:
    tags = _pet_tags()
    del tags["PatientWeight"]
    write_series(tmp_path / "noweight", modality="PT", depths=[0, 3], intercept=0.0, extra=tags)
    with pytest.raises(InputError, match="missing or zero PatientWeight") as exc:
        load_dicom_series(tmp_path / "noweight")
    _one_line(exc)
    write_series(tmp_path / "counts", modality="PT", depths=[0, 3], intercept=0.0, extra={"Units": "CNTS"})
    with pytest.raises(InputError, match="PET Units CNTS"):
        load_dicom_series(tmp_path / "counts")
    s = write_series(
        tmp_path / "suv",
        modality="PT",
        depths=[0, 3],
        intercept=0.0,
        slopes=[0.01, 0.01],
        extra={"Units": "GML"},
    )
    vol = load_dicom_series(tmp_path / "suv")
    assert vol.meta["units"] == "SUVbw"
    np.testing.assert_allclose(vol.array[0, :, :, 1], (s.stored[1] * 0.01).T, rtol=1e-6)


def test_voxel_bound_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path / "ct", depths=[0.0, 2.5, 5.0, 10.0])  # 16 x 16 x 4, one slice missing
    monkeypatch.setenv("DUPLUS_MAX_VOXELS", "1000")
    with pytest.raises(InputError, match="exceeds the limit of 1,000"):
        load_dicom_series(tmp_path / "ct")
    monkeypatch.setenv("DUPLUS_MAX_VOXELS", "1200")  # the 4 slices pass, the 5 resampled ones do not
    with pytest.raises(InputError, match="resampled to even slices"):
        load_dicom_series(tmp_path / "ct", allow_uneven=True)
