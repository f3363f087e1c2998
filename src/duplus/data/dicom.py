"""DICOM series in: a folder or a zip archive of single-frame slices -> one :class:`Volume`.

Built on pydicom (parsing, the modality LUT, pixel decoding) and highdicom (the slice-to-patient
affine, and the DICOM-SEG writer in :mod:`duplus.inference.dicom_seg`, which takes the same pydicom
datasets): one stack for reading and writing. Compressed transfer syntaxes decode through pydicom's
plugins, all pip wheels with permissive licences: GDCM (JPEG baseline/extended/lossless, the
syntaxes of most archives), pylibjpeg-openjpeg (JPEG 2000), pyjpegls (JPEG-LS) and pydicom itself
(RLE). The GPL-licensed pylibjpeg-libjpeg is left out on purpose. Every rule below is an explicit,
one-line error:

* Files are grouped by SeriesInstanceUID. A folder holding several series is refused with the
  list of their UIDs unless ``series_uid`` picks one.
* A file that is not readable DICOM is refused, naming it; never skipped. Only hidden files and
  files with an obviously non-DICOM extension (``.txt``, ``.json``, ``.png``, ...) are passed over,
  and non-image objects (DICOMDIR, SR, SEG, RTSTRUCT, ...) are left out, both with a log line.
* A stack with a missing slice, uneven spacing or a gantry tilt is refused unless
  ``allow_uneven``, which resamples it onto a regular orthogonal grid (see
  :mod:`duplus.data.dicom_geometry`). Duplicate positions are always refused.
* PET in Bq/mL is converted to SUVbw from its tags (:mod:`duplus.data.suv`); a PET that is
  neither in Bq/mL with the needed tags nor already in SUV is refused.

The volume's array is ``(1, columns, rows, slices)``: the first axis runs along a row (DICOM's
column index), the second down a column, the third along the slice normal ``row x column``, as a
NIfTI file converted by dcm2niix would be; its affine maps those indices to RAS+ millimetres.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import struct
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import numpy as np
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException

from duplus.data.dicom_geometry import StackGeometry, analyse_stack, regrid_stack
from duplus.data.volume import Volume, check_affine
from duplus.errors import InputError
from duplus.limits import check_voxels

logger = logging.getLogger(__name__)

NON_VOLUME_MODALITIES = frozenset({"SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTRECORD", "REG", "DOC"})
"""Objects that can sit in an image series' folder but are not slices of a volume."""

NON_DICOM_SUFFIXES = (
    ".txt", ".md", ".json", ".csv", ".tsv", ".xml", ".html", ".htm", ".pdf", ".jpg", ".jpeg",
    ".png", ".gif", ".bmp", ".ini", ".log", ".yaml", ".yml", ".nii", ".nii.gz", ".zip", ".py",
)  # fmt: skip
"""Files with these endings are passed over (with a log line) instead of refused as damaged."""

MAX_ARCHIVE_BYTES = 8 << 30
"""A zip input whose members unpack to more than this is refused before reading (8 GiB)."""

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_READ_ERRORS = (
    OSError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error,
    BytesLengthException, NotImplementedError, AttributeError, UnicodeError, RuntimeError,
)  # fmt: skip
"""What pydicom and the decoders raise on a damaged file; each becomes one InputError naming it."""


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a DICOM folder or archive."""

    uid: str
    modality: str
    description: str
    images: int

    def describe(self) -> str:
        text = f"{_printable(self.uid) or '(no SeriesInstanceUID)'} ({_printable(self.modality) or '?'}, {self.images} images"
        return text + (f", {_printable(self.description)!r})" if self.description else ")")


def _printable(text: str) -> str:
    """``text`` with control characters replaced (a damaged tag must not break the error line)."""
    return "".join(c if c.isprintable() else "?" for c in text)


@dataclass
class DicomSource:
    """What outputs that refer back to a DICOM series (DICOM-SEG) need of it.

    Attributes:
        path: the folder or archive read.
        series_uid: its SeriesInstanceUID.
        modality: its Modality (CT, MR, PT, ...).
        units: the volume's intensity units (``HU``, ``SUVbw``, or ``""``).
        datasets: the slices' headers, sorted along the normal, pixel data dropped.
        resampled: whether the volume was resampled (``allow_uneven``), so its slices are not
            the source slices.
    """

    path: Path
    series_uid: str
    modality: str
    units: str
    datasets: list[Dataset] = field(repr=False)
    resampled: bool = False


def is_dicom_input(path: str | Path) -> bool:
    """Whether ``path`` is read as DICOM: a folder, or a ``.zip`` archive."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and path.name.lower().endswith(".zip"))


# ---------------------------------------------------------------------- reading files
def _iter_files(path: Path) -> Iterator[tuple[Path, Callable[[], IO[bytes]]]]:
    """``(display path, opener)`` for every file in a folder (recursively) or a zip archive."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                yield p, cast(Callable[[], IO[bytes]], functools.partial(p.open, "rb"))
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            total = sum(m.file_size for m in members)
            if total > MAX_ARCHIVE_BYTES:
                raise InputError(path, f"archive unpacks to {total / 2**30:.1f} GiB; at most 8 GiB is read")
            for m in sorted(members, key=lambda m: m.filename):
                yield path / m.filename, (lambda m=m: io.BytesIO(archive.read(m)))  # type: ignore[misc]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise InputError(path, f"not a readable zip archive ({exc})") from exc


def _is_ignorable(name: Path) -> bool:
    lower = name.name.lower()
    return lower.startswith(".") or lower.endswith(NON_DICOM_SUFFIXES)


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception (pydicom heads a decoder failure with a line that
    says only that all plugins failed; the plugins' reasons follow)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith("plugins:"):
        lines = lines[1:]
    return (lines[0] if lines else type(exc).__name__)[:200]


@contextlib.contextmanager
def _quiet_codecs() -> Iterator[None]:
    """Silence pydicom's and the codecs' own logging while reading: they log a traceback for
    every failed decoder, while the failure reaches the user as one InputError line."""
    loggers = [logging.getLogger(n) for n in ("pydicom", "openjpeg", "libjpeg", "pylibjpeg", "jpeg_ls")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _sop_class_names(ds: Dataset) -> list[str]:
    """The names of the SOP classes the file meta and the dataset give (``""`` for an unknown UID)."""
    meta = getattr(ds, "file_meta", None)
    uids = [ds.get("SOPClassUID"), meta.get("MediaStorageSOPClassUID") if meta is not None else None]
    names = []
    for uid in uids:
        if uid:
            name = str(getattr(uid, "name", ""))
            names.append("" if name == str(uid) else name)  # pydicom names an unknown UID by itself
    return names


def _kind(ds: Dataset) -> str:
    """``"image"``, ``"other"`` (a non-image object: DICOMDIR, SR, SEG, RTSTRUCT, ...) or
    ``"damaged"``: pydicom reads a file cut short without complaint, so an object without pixel
    data counts as a non-image one only when every SOP class it names is a known non-image class."""
    if str(ds.get("Modality", "")).upper() in NON_VOLUME_MODALITIES:
        return "other"
    if "PixelData" in ds:
        return "image"
    names = _sop_class_names(ds)
    return "other" if names and all(n and "Image Storage" not in n for n in names) else "damaged"


def read_dicom_images(path: str | Path) -> list[tuple[Path, Dataset]]:
    """Read every DICOM image in a folder or zip archive (headers and pixel bytes, not decoded).

    Returns:
        ``(file, dataset)`` pairs of the image objects, in file-name order.

    Raises:
        InputError: a file that is not readable DICOM (naming it), or no DICOM image at all.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    images: list[tuple[Path, Dataset]] = []
    passed_over: list[str] = []
    for name, opener in _iter_files(path):
        try:
            with opener() as fh, _quiet_codecs():
                ds = pydicom.dcmread(fh)
                for _ in (*ds.file_meta.iterall(), *ds.iterall()):  # parse every value now, so a
                    pass  # damaged one fails here, naming this file, not later in a tag lookup
        except InvalidDicomError as exc:
            if _is_ignorable(name):
                passed_over.append(name.name)
                continue
            raise InputError(name, f"not a DICOM file ({_first_line(exc)})") from exc
        except _READ_ERRORS as exc:
            raise InputError(name, f"damaged DICOM file ({_first_line(exc)})") from exc
        kind = _kind(ds)
        if kind == "damaged":
            raise InputError(name, "DICOM image without pixel data: a truncated or damaged file")
        if kind == "other":
            passed_over.append(name.name)
            continue
        images.append((name, ds))
    if passed_over:
        logger.info(
            "%s: passed over %d non-image file(s): %s", path, len(passed_over), ", ".join(passed_over[:5])
        )
    if not images:
        raise InputError(path, "no DICOM images found")
    return images


def _group_series(images: list[tuple[Path, Dataset]]) -> dict[str, list[tuple[Path, Dataset]]]:
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for name, ds in images:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((name, ds))
    return groups


def _info(uid: str, items: list[tuple[Path, Dataset]]) -> SeriesInfo:
    ds = items[0][1]
    return SeriesInfo(uid, str(ds.get("Modality", "")), str(ds.get("SeriesDescription", "")), len(items))


def list_dicom_series(path: str | Path) -> list[SeriesInfo]:
    """The image series in a DICOM folder or zip archive."""
    return [_info(uid, items) for uid, items in _group_series(read_dicom_images(path)).items()]


# ---------------------------------------------------------------------- building the volume
@dataclass(frozen=True)
class _SliceGeometry:
    position: np.ndarray  # (3,) ImagePositionPatient
    orientation: np.ndarray  # (6,) ImageOrientationPatient
    spacing: tuple[float, float]  # PixelSpacing (row, column)
    size: tuple[int, int]  # (Rows, Columns)


def _slice_geometry(name: Path, ds: Dataset) -> _SliceGeometry:
    """One slice's geometry tags as numbers; a missing or unreadable one is refused naming the file."""
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(name, "multi-frame (enhanced) DICOM is not supported; use single-frame slices")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(name, "colour DICOM image; expected a greyscale CT, MR or PET slice")
    try:
        geometry = _SliceGeometry(
            position=np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64),
            orientation=np.array([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64),
            spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
            size=(int(ds.Rows), int(ds.Columns)),
        )
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            name,
            f"missing or unreadable geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing): {_first_line(exc)}",
        ) from exc
    finite = np.isfinite([*geometry.position, *geometry.orientation, *geometry.spacing]).all()
    if geometry.position.shape != (3,) or geometry.orientation.shape != (6,) or not finite:
        raise InputError(name, "ImagePositionPatient or ImageOrientationPatient is not 3 or 6 finite numbers")
    if min(geometry.spacing) <= 0 or min(np.linalg.norm(geometry.orientation.reshape(2, 3), axis=1)) < 0.5:
        raise InputError(name, "zero pixel spacing or a degenerate ImageOrientationPatient")
    return geometry


def _check_slices(datasets: list[tuple[Path, Dataset]]) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """The shared orientation, pixel spacing and each slice's position ``(N, 3)``; refuse slices
    that are not one stack's."""
    slices = [_slice_geometry(name, ds) for name, ds in datasets]
    first_name, first = datasets[0][0], slices[0]
    for (name, _), g in zip(datasets, slices, strict=True):
        if g.size != first.size:
            raise InputError(name, f"slice size {g.size} differs from {first.size} of {first_name.name}")
        if not np.allclose(g.orientation, first.orientation, atol=1e-4):
            raise InputError(name, f"slice orientation differs from that of {first_name.name}")
        if not np.allclose(g.spacing, first.spacing, atol=1e-4):
            raise InputError(name, f"pixel spacing differs from that of {first_name.name}")
    if len(datasets) < 2:
        raise InputError(first_name, "the series has a single slice; expected a 3D volume")
    return first.orientation, first.spacing, np.stack([g.position for g in slices])


@contextlib.contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Collect what native decoders print to the process's stderr (GDCM's JPEG codec reports
    damaged data there, not as an exception) into ``lines`` instead of the user's terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def _pixels(name: Path, ds: Dataset) -> np.ndarray:
    """Decode one slice and apply its modality LUT (RescaleSlope/Intercept): ``(rows, cols)``.

    A compressed slice whose decoder reports damaged data (even when it returns pixels) is refused.
    """
    from pydicom.pixels import apply_modality_lut

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    what = f"{syntax.name}: " if syntax is not None else ""
    complaints: list[str] = []
    try:
        with _quiet_codecs():
            if syntax is not None and syntax.is_compressed:
                with _native_stderr(complaints):
                    raw = ds.pixel_array
            else:
                raw = ds.pixel_array
            values = apply_modality_lut(raw, ds)
    except _READ_ERRORS as exc:
        raise InputError(name, f"cannot decode the pixel data ({what}{_first_line(exc)})") from exc
    if complaints:
        raise InputError(
            name, f"damaged compressed pixel data ({what}the decoder reports: {complaints[0][:200]})"
        )
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise InputError(name, f"pixel data of shape {values.shape}; expected one 2D slice")
    if not np.all(np.isfinite(values)):
        raise InputError(name, "pixel data contains NaN or Inf values")
    return values


def _units(modality: str, datasets: list[Dataset], source: Path) -> tuple[float, str]:
    if modality == "PT":
        from duplus.data.suv import compute_suv_factor

        return compute_suv_factor(datasets, source)
    return 1.0, "HU" if modality == "CT" else ""


def _affine(geometry: StackGeometry, orientation: np.ndarray) -> np.ndarray:
    """RAS+ affine of the ``(column, row, slice)`` array, from highdicom's DICOM affine (LPS)."""
    from highdicom.spatial import create_affine_matrix_from_attributes

    lps = create_affine_matrix_from_attributes(
        image_position=[float(v) for v in geometry.positions[0]],
        image_orientation=[float(v) for v in orientation],
        pixel_spacing=list(geometry.pixel_spacing),
        spacing_between_slices=geometry.step,
        index_convention="RD",
    )
    return LPS_TO_RAS @ lps


def _build_volume(path: Path, uid: str, items: list[tuple[Path, Dataset]], allow_uneven: bool) -> Volume:
    orientation, spacing, positions = _check_slices(items)
    rows, cols = int(items[0][1].Rows), int(items[0][1].Columns)
    check_voxels((cols, rows, len(items)), path, f"DICOM series {uid}")  # before decoding anything
    geometry = analyse_stack(orientation, positions, spacing)
    if geometry.problem is not None and not geometry.resamplable:
        raise InputError(path, f"series {uid}: {geometry.problem}")
    if geometry.problem is not None and not allow_uneven:
        raise InputError(
            path,
            f"series {uid}: {geometry.problem}; allow_uneven (--allow-uneven) resamples it onto a regular grid",
        )
    if geometry.problem is not None:
        count = round((geometry.depths[-1] - geometry.depths[0]) / geometry.step) + 1
        check_voxels((cols, rows, count), path, "DICOM series resampled to even slices")
    ordered = [items[i] for i in geometry.order]
    modality = str(ordered[0][1].get("Modality", "")).upper()
    factor, units = _units(modality, [ds for _, ds in ordered], path)
    stack = np.stack([_pixels(name, ds) for name, ds in ordered], axis=-1)  # (rows, cols, N)
    stack = np.transpose(stack, (1, 0, 2)) * np.float32(factor)  # (cols, rows, N)
    if geometry.problem is not None:
        stack = regrid_stack(stack, geometry, fill=float(stack.min()))
        logger.warning(
            "%s: %s; resampled onto a regular %.3g mm grid (%d slices)",
            path, geometry.problem, geometry.step, stack.shape[-1],
        )  # fmt: skip
    affine = _affine(geometry, orientation)
    check_affine(path, affine)
    headers = []
    for _, ds in ordered:
        for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if tag in ds:
                delattr(ds, tag)
        headers.append(ds)
    source = DicomSource(path, uid, modality, units, headers, resampled=geometry.problem is not None)
    meta = {"modality": modality, "units": units, "dicom": source}
    return Volume(array=stack[None].astype(np.float32), affine=affine, path=path, meta=meta)


def load_dicom_series(
    path: str | Path, *, series_uid: str | None = None, allow_uneven: bool = False
) -> Volume:
    """Read one DICOM series (a folder, searched recursively, or a zip archive) into a :class:`Volume`.

    Args:
        path: folder or ``.zip`` archive.
        series_uid: the SeriesInstanceUID to read when the input holds several series.
        allow_uneven: resample a stack with missing slices, uneven spacing or a gantry tilt onto
            a regular grid instead of refusing it.

    Returns:
        ``Volume`` with ``array (1, columns, rows, slices)`` float32 (HU for CT, SUVbw for PET),
        its RAS+ affine, and ``meta`` ``{"modality", "units", "dicom": DicomSource}``.

    Raises:
        InputError: one line naming the file or series: an unreadable or damaged file, several
            series without ``series_uid`` (listing them), an unknown ``series_uid``, slices that
            are not one regular stack, undecodable pixel data, or PET that cannot be put in SUV.
    """
    path = Path(path)
    groups = _group_series(read_dicom_images(path))
    listing = "; ".join(_info(uid, items).describe() for uid, items in groups.items())
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(path, f"has no series {series_uid}; it holds {listing}")
        uid = series_uid
    elif len(groups) > 1:
        raise InputError(
            path, f"folder mixes {len(groups)} DICOM series; choose one with --series-uid: {listing}"
        )
    else:
        uid = next(iter(groups))
    return _build_volume(path, uid, groups[uid], allow_uneven)
