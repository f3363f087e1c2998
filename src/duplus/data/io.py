"""Image I/O that never loses the affine.

Every image in DuPLUS is a :class:`~duplus.data.volume.Volume`: a channel-first float array
``(C, I, J, K)`` in the file's voxel order plus the 4x4 voxel-to-world (RAS+ mm) affine. NIfTI files and DICOM series
(:mod:`duplus.data.dicom`) read into the same form; outputs are written as NIfTI with the affine
they came with.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from duplus.data.volume import Volume, check_affine
from duplus.errors import InputError
from duplus.fileio import atomic_path
from duplus.limits import check_voxels

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _raw_pixdim(path: Path, img: nib.Nifti1Image | nib.Nifti2Image) -> np.ndarray:
    """``pixdim[1:4]`` as stored in the file. ``nib.load`` silently "fixes" zero voxel sizes to 1
    and negative ones to their absolute value, so the header is read again without that fix."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            raw = type(img.header).from_fileobj(fh, check=False)
        return np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except (OSError, EOFError, zlib.error, ValueError, nib.spatialimages.HeaderDataError) as exc:
        raise InputError(path, f"cannot read the NIfTI header ({type(exc).__name__})") from exc


def _check_pixdim(path: Path, img: nib.Nifti1Image | nib.Nifti2Image) -> None:
    zooms = _raw_pixdim(path, img)
    if any((not np.isfinite(z)) or z <= 0 for z in zooms):
        raise InputError(
            path, f"zero or negative voxel spacing in header pixdim {tuple(float(z) for z in zooms)}"
        )


def load_nifti(path: str | Path, *, is_label: bool = False, allow_channels: bool = False) -> Volume:
    """Read a NIfTI file into a :class:`Volume`, validating it.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        is_label: read as integer labels (values must be whole numbers, no NaN).
        allow_channels: accept a 4D file as channels (``I, J, K, C``); otherwise 4D is an error.

    Raises:
        InputError: missing, corrupt or truncated file, not 3D, NaN/Inf voxels, bad spacing.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a NIfTI file")
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise InputError(path, f"not a NIfTI image ({type(img).__name__})")
        check_voxels(img.shape, path, "image")  # from the header, before decompressing anything
        data = np.asanyarray(img.dataobj)
    except InputError:
        raise
    except (
        OSError,
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        ValueError,
        TypeError,
        OverflowError,
        MemoryError,
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
    ) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"cannot read NIfTI (corrupt or truncated file: {msg[:200]})") from exc
    if data.dtype.kind not in "biuf":
        raise InputError(path, f"unsupported voxel type {data.dtype} (expected real numbers)")
    data = (
        np.squeeze(data, axis=tuple(range(3, data.ndim)))
        if data.ndim > 3 and all(s == 1 for s in data.shape[3:])
        else data
    )
    if data.ndim < 3:
        raise InputError(path, f"image is {data.ndim}D with shape {tuple(data.shape)}, expected 3D")
    if data.ndim == 4 and allow_channels:
        array = np.moveaxis(data, -1, 0)
    elif data.ndim == 3:
        array = data[None]
    else:
        raise InputError(path, f"image is {data.ndim}D with shape {tuple(data.shape)}, expected 3D")
    if min(array.shape[1:]) < 2:
        raise InputError(
            path, f"image has a degenerate axis, shape {tuple(array.shape[1:])}; expected a 3D volume"
        )
    _check_pixdim(path, img)
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(path, affine)
    if is_label:
        if not np.issubdtype(array.dtype, np.integer):
            arr_f = np.asarray(array, dtype=np.float64)
            if not np.all(np.isfinite(arr_f)):
                raise InputError(path, "label contains NaN or Inf voxels")
            if not np.all(arr_f == np.round(arr_f)):
                raise InputError(path, "label contains non-integer values")
        lo, hi = float(np.min(array)), float(np.max(array))
        if lo < 0:
            raise InputError(path, f"label contains negative values (min {int(lo)})")
        if hi > np.iinfo(np.int16).max:
            raise InputError(path, f"label value {int(hi)} is too large (max {np.iinfo(np.int16).max})")
        array = np.asarray(array).astype(np.int16)
    else:
        array = np.asarray(array, dtype=np.float32)
        bad = ~np.isfinite(array)
        if bad.any():
            raise InputError(path, f"image contains {int(bad.sum())} NaN or Inf voxels")
    return Volume(array=array, affine=affine, path=path)


def load_image(
    path: str | Path, *, is_label: bool = False, series_uid: str | None = None, allow_uneven: bool = False
) -> Volume:
    """Read a NIfTI file, or a DICOM series (a folder or a ``.zip`` archive; see
    :func:`duplus.data.dicom.load_dicom_series` for ``series_uid`` and ``allow_uneven``)."""
    from duplus.data.dicom import is_dicom_input, load_dicom_series

    path = Path(path)
    if is_dicom_input(path):
        if is_label:
            raise InputError(path, "labels must be NIfTI files, got a DICOM folder or archive")
        return load_dicom_series(path, series_uid=series_uid, allow_uneven=allow_uneven)
    if not is_nifti(path):
        raise InputError(
            path, "unsupported file type; expected .nii, .nii.gz, a DICOM series folder or a .zip of one"
        )
    return load_nifti(path, is_label=is_label)


def volume_from_image(image: nib.Nifti1Image | nib.Nifti2Image, source: str | Path | None = None) -> Volume:
    """An in-memory nibabel image as a :class:`Volume`, validated like a file (3D or 4D as channels,
    finite voxels, a finite non-singular affine).

    Args:
        image: a nibabel NIfTI image.
        source: what to call it in errors (default ``"<nibabel image>"``).
    """
    name = source if source is not None else "<nibabel image>"
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(name, f"expected a nibabel NIfTI image, got {type(image).__name__}")
    check_voxels(image.shape, name, "image")
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    else:
        raise InputError(name, f"image is {data.ndim}D with shape {tuple(data.shape)}, expected 3D")
    affine = np.asarray(image.affine, dtype=np.float64)
    check_affine(Path(str(name)), affine)
    if not np.all(np.isfinite(data)):
        raise InputError(name, "image contains NaN or Inf voxels")
    return Volume(array=data, affine=affine, path=Path(str(name)))


def load_channels(paths: list[Path], channel_order: list[int] | None = None) -> Volume:
    """Read the image(s) of one case as channels.

    Args:
        paths: several single-channel images (e.g. nnU-Net ``_0000``, ``_0001``), or one file
            (a 4D NIfTI file is read as channels, like MSD's multi-sequence images).
        channel_order: for one 4D file, the file's channels to take, in order.
    """
    if not paths:
        raise InputError(None, "no image files given")
    if len(paths) == 1 and is_nifti(paths[0]):
        vol = load_nifti(paths[0], allow_channels=True)
        if channel_order is not None:
            if sorted(channel_order) != list(range(vol.num_channels)):
                raise InputError(
                    paths[0], f"has {vol.num_channels} channels; cannot reorder as {channel_order}"
                )
            vol.array = vol.array[channel_order]
        return vol
    vols = [load_image(p) for p in paths]
    first = vols[0]
    for v in vols[1:]:
        check_same_grid(first, v)
    return Volume(array=np.concatenate([v.array for v in vols], axis=0), affine=first.affine, path=first.path)


def check_same_grid(reference: Volume, other: Volume, atol: float = 1e-3) -> None:
    """Raise :class:`InputError` naming ``other``'s file when the two volumes differ in grid."""
    if reference.spatial_shape != other.spatial_shape:
        raise InputError(
            other.path,
            f"shape {other.spatial_shape} does not match {reference.spatial_shape} of {reference.path}",
        )
    if not np.allclose(reference.affine, other.affine, atol=atol):
        raise InputError(other.path, f"affine does not match that of {reference.path}")


def save_nifti(
    array: np.ndarray, affine: np.ndarray, path: str | Path, *, dtype: np.dtype | type | None = None
) -> Path:
    """Write a 3D (``I, J, K``) or channel-first 4D array as NIfTI, atomically, keeping ``affine``.

    The qform and sform both carry the affine, so every reader sees the same geometry.
    """
    path = Path(path)
    data = np.asarray(array)
    if data.ndim == 4:
        data = np.moveaxis(data, 0, -1)
    if dtype is not None:
        data = data.astype(dtype)
    elif data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.int64 or data.dtype == np.uint64:
        # nibabel refuses 64-bit integers without an explicit dtype; labels fit in 32 bits
        if data.size and (data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{path}: integer values do not fit in int32")
        data = data.astype(np.int32)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
    img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
