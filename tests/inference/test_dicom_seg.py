"""DICOM-SEG writing without a model: codes, a resampled series, a series without a frame of reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from duplus.data.dicom import load_dicom_series
from duplus.errors import InputError
from duplus.inference.dicom_seg import read_dicom_seg, segment_codes, write_dicom_seg

_spec = importlib.util.spec_from_file_location(
    "dicom_series", Path(__file__).parents[1] / "data" / "dicom_series.py"
)
assert _spec is not None and _spec.loader is not None
dicom_series = sys.modules.setdefault("dicom_series", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(dicom_series)


def test_segment_codes() -> None:
    category, kind, region = segment_codes("Left Kidney")
    assert (category.value, kind.value, region) == ("91772007", "64033007", None)  # organ, kidney
    category, kind, region = segment_codes("liver tumor")
    assert (category.meaning, kind.meaning, region.meaning) == (
        "Morphologically Abnormal Structure",
        "Neoplasm",
        "Liver",
    )
    assert segment_codes("my odd structure")[1].meaning == "Anatomical Structure"


def test_round_trip_with_shuffled_files_and_empty_slices(tmp_path: Path) -> None:
    depths = [5.0, 0.0, 2.5, 7.5, 10.0]
    s = dicom_series.write_series(tmp_path / "ct", depths=depths)
    volume = load_dicom_series(tmp_path / "ct")
    masks = (np.random.default_rng(1).random((2, *volume.spatial_shape)) > 0.7).astype(np.uint8)
    masks[1, :, :, 2] = 0
    path = write_dicom_seg(
        tmp_path / "out" / "ct.seg.dcm", volume.meta["dicom"], masks, ["liver", "x"], volume.affine
    )
    labels, back = read_dicom_seg(path, volume.meta["dicom"])
    assert labels == ["liver", "x"]
    np.testing.assert_array_equal(back, masks)
    assert len(s.files) == 5


def test_resampled_series_written_on_its_own_grid(tmp_path: Path) -> None:
    import highdicom as hd

    from duplus.data.resample import resample_to_grid

    dicom_series.write_series(tmp_path / "gap", depths=[0.0, 2.5, 7.5, 10.0])
    volume = load_dicom_series(tmp_path / "gap", allow_uneven=True)
    masks = (np.random.default_rng(2).random((1, *volume.spatial_shape)) > 0.6).astype(np.uint8)
    path = write_dicom_seg(tmp_path / "gap.seg.dcm", volume.meta["dicom"], masks, ["spleen"], volume.affine)
    seg = hd.seg.segread(str(path)).get_volume(combine_segments=False)
    # highdicom's volume: (slice, row, column) indices -> LPS; ours: (column, row, slice) -> RAS
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ seg.affine @ np.eye(4)[[2, 1, 0, 3]]
    back = resample_to_grid(np.transpose(seg.array[..., 0], (2, 1, 0))[None].astype(np.float32), affine,
                            volume.spatial_shape, volume.affine, mode="nearest")  # fmt: skip
    np.testing.assert_array_equal(back[0], masks[0])


def test_series_without_frame_of_reference_refused(tmp_path: Path) -> None:
    import pydicom

    s = dicom_series.write_series(tmp_path / "nofor", depths=[0.0, 2.5, 5.0])
    for f in s.files:
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    volume = load_dicom_series(tmp_path / "nofor")
    with pytest.raises(InputError, match="FrameOfReferenceUID"):
        write_dicom_seg(
            tmp_path / "x.seg.dcm",
            volume.meta["dicom"],
            np.zeros((1, *volume.spatial_shape)),
            ["liver"],
            volume.affine,
        )
    assert not (tmp_path / "x.seg.dcm").exists()
