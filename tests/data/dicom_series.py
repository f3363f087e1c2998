"""Synthetic DICOM series for the tests, written with pydicom: small (e.g. 16x16x8) single-frame
stacks with any orientation, slice positions, transfer syntax, per-slice rescale and PET tags.

Load it from a test with ``importlib`` (tests are not a package)::

    _spec = importlib.util.spec_from_file_location("dicom_series", Path(__file__).parents[1] / "data" / "dicom_series.py")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
"""The JPEG lossless syntax of most clinical archives; pydicom cannot encode it, GDCM can."""


def _transcode_jpeg_lossless(path: Path) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read(), path
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change(), path
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), path


@dataclass
class WrittenSeries:
    """What :func:`write_series` wrote: files in slice order, their SOP UIDs and stored values."""

    uid: str
    files: list[Path]
    sop_uids: list[str]
    stored: np.ndarray  # (N, rows, cols) stored pixel values, slice order as written
    slopes: list[float]
    intercepts: list[float]
    positions: np.ndarray  # (N, 3) LPS


def write_series(
    folder: Path,
    *,
    uid: str | None = None,
    rows: int = 16,
    cols: int = 16,
    depths: Sequence[float] = tuple(2.5 * k for k in range(8)),
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-20.0, 30.0, -10.0),
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    tilt_mm: tuple[float, float] = (0.0, 0.0),
    modality: str = "CT",
    slopes: Sequence[float] | None = None,
    intercept: float = -1024.0,
    transfer_syntax: str | None = None,
    prefix: str = "s",
    extra: dict[str, Any] | None = None,
    values: np.ndarray | None = None,
    seed: int = 0,
) -> WrittenSeries:
    """Write one series, one file per slice.

    Args:
        depths: position of each slice along the normal (mm from ``origin``).
        tilt_mm: in-plane drift of each slice's origin per mm of depth along (row, column) cosines.
        slopes: RescaleSlope per slice (default 1).
        transfer_syntax: a compressed transfer syntax UID to encode with (RLE, JPEG 2000, JPEG-LS).
        extra: more tags for every slice (e.g. PET Units and radiopharmaceutical information).
        values: ``(N, rows, cols)`` stored values (default: a reproducible random pattern).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    n = len(depths)
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    rng = np.random.default_rng(seed)
    stored = values if values is not None else rng.integers(0, 2000, size=(n, rows, cols)).astype(np.uint16)
    slopes = list(slopes) if slopes is not None else [1.0] * n
    sop_class = {"CT": CT_IMAGE_STORAGE, "PT": PET_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}[modality]
    study, frame_of_reference = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    files, sops, positions = [], [], []
    for k, depth in enumerate(depths):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{prefix}{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study, uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientID, ds.PatientName, ds.PatientSex, ds.PatientBirthDate = "P001", "Test^Patient", "O", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "duplus-tests"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        pos = np.asarray(origin, float) + depth * normal + depth * (tilt_mm[0] * row + tilt_mm[1] * col)
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = 2.5
        ds.RescaleSlope, ds.RescaleIntercept = slopes[k], intercept
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored[k].astype(np.uint16)).tobytes()
        if transfer_syntax is not None and transfer_syntax != JPEG_LOSSLESS_SV1:
            ds.compress(transfer_syntax, np.ascontiguousarray(stored[k].astype(np.uint16)))
        ds.save_as(str(path), enforce_file_format=True)
        if transfer_syntax == JPEG_LOSSLESS_SV1:
            _transcode_jpeg_lossless(path)
        files.append(path)
        sops.append(sop)
        positions.append(pos)
    return WrittenSeries(uid, files, sops, stored, slopes, [intercept] * n, np.asarray(positions))
