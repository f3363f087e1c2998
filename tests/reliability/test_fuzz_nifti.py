"""Fuzzing the NIfTI reader: random headers and corrupted bytes give a valid Volume or an InputError.

:func:`duplus.data.io.load_nifti` is the gate every image passes. Whatever the file holds (any
number of dimensions including zero-sized ones, zero/negative/NaN/inf voxel sizes, any data type,
any qform/sform code with singular or non-finite matrices, flipped or missing bytes), it must either
return a :class:`~duplus.data.io.Volume` that is 3D (plus channels) with a finite affine, positive
spacing and finite voxels, or raise :class:`~duplus.errors.InputError` naming the file; never
another exception type.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from duplus.data.io import Volume, load_nifti
from duplus.errors import InputError

FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("DUPLUS_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("DUPLUS_FUZZ_RANDOM") is None,
)

DTYPES = [
    "uint8",
    "int8",
    "int16",
    "uint16",
    "int32",
    "float32",
    "float64",
    "int64",
    "complex64",
    [("R", "u1"), ("G", "u1"), ("B", "u1")],  # NIfTI RGB24
]
SPECIAL = [0.0, -0.0, -1.0, -2.5, float("nan"), float("inf"), float("-inf"), 1e-12, 1e30]
# valid values are drawn more often than broken ones, so that both outcomes are exercised
floats = st.one_of(st.floats(-100.0, 100.0), st.floats(-100.0, 100.0), st.sampled_from(SPECIAL))
pixdims = st.one_of(st.floats(0.1, 5.0), st.floats(0.1, 5.0), st.floats(0.1, 5.0), st.sampled_from(SPECIAL))


def _check_result(path: Path, *, is_label: bool, allow_channels: bool) -> None:
    """Load ``path``; pass on a valid Volume or an InputError naming the file, fail otherwise."""
    try:
        vol = load_nifti(path, is_label=is_label, allow_channels=allow_channels)
    except InputError as exc:
        event(f"InputError: {exc.problem.split('(')[0][:40]}")
        assert exc.path == path, f"error names {exc.path}, not {path}"
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    event("valid Volume")
    assert isinstance(vol, Volume)
    assert vol.array.ndim == 4 and vol.array.shape[0] >= 1
    assert all(s >= 2 for s in vol.spatial_shape)
    assert vol.affine.shape == (4, 4) and np.all(np.isfinite(vol.affine))
    assert np.all(vol.spacing > 0)
    assert abs(np.linalg.det(vol.affine[:3, :3])) > 0
    if is_label:
        assert vol.array.dtype == np.int16 and int(vol.array.min()) >= 0
    else:
        assert vol.array.dtype == np.float32 and np.all(np.isfinite(vol.array))


@st.composite
def raw_headers(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A NIfTI-1 file written field by field (so nibabel's writer validates nothing)."""
    ndim = draw(st.sampled_from([0, 1, 2, 3, 3, 3, 3, 3, 4, 5]))
    shape = [draw(st.sampled_from([0, 1, 2, 3, 4, 5, 2, 3, 4])) for _ in range(ndim)]
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    dim = np.ones(8, dtype=np.int16)
    dim[0] = draw(st.sampled_from([ndim] * 6 + [-1, 0, 7, 8]))
    dim[1 : 1 + ndim] = shape
    hdr["dim"] = dim
    pix = np.ones(8, dtype=np.float32)
    pix[0] = draw(st.sampled_from([1.0, -1.0, 0.0]))
    pix[1:4] = [draw(pixdims) for _ in range(3)]
    hdr["pixdim"] = pix
    hdr["qform_code"] = draw(st.integers(0, 5))
    hdr["sform_code"] = draw(st.integers(0, 5))
    hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"] = (draw(floats) for _ in range(3))
    hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"] = (draw(floats) for _ in range(3))
    rows = draw(st.sampled_from(["random", "singular", "identity"]))
    for r, key in enumerate(("srow_x", "srow_y", "srow_z")):
        if rows == "random":
            hdr[key] = [draw(floats) for _ in range(4)]
        elif rows == "singular":
            hdr[key] = [1.0, 1.0, 1.0, 0.0]
        else:
            hdr[key] = np.eye(4)[r]
    hdr["vox_offset"] = 352
    hdr["scl_slope"] = draw(st.sampled_from([1.0, 1.0, 1.0, 0.0, float("nan"), 2.0, float("inf")]))
    hdr["scl_inter"] = draw(st.sampled_from([0.0, 0.0, 0.0, float("nan"), 3.0]))
    n_vox = int(np.prod(shape)) if ndim else 1
    values = draw(st.sampled_from(["zeros", "ramp", "ramp", "ramp", "nan", "short"]))
    if dtype.kind == "V" or values == "zeros":
        data = np.zeros(n_vox, dtype)
    else:
        data = np.arange(n_vox, dtype=np.float64).astype(dtype)
    if values == "nan" and dtype.kind in "fc" and n_vox:
        data[0] = np.nan
    blob = data.tobytes()
    if values == "short":
        blob = blob[: len(blob) // 2]
    raw = hdr.binaryblock + b"\x00" * 4 + blob
    return raw, draw(st.booleans())


@pytest.fixture(scope="module")
def valid_file_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    out = {}
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 5, 4)).astype(np.float32)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    for suffix in (".nii", ".nii.gz"):
        path = folder / f"img{suffix}"
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, str(path))
        out[suffix] = path.read_bytes()
    return out


@FUZZ_SETTINGS
@given(case=raw_headers(), is_label=st.booleans(), allow_channels=st.booleans())
def test_random_headers(
    tmp_path: Path, case: tuple[bytes, bool], is_label: bool, allow_channels: bool
) -> None:
    raw, compress = case
    path = tmp_path / ("fuzz.nii.gz" if compress else "fuzz.nii")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    _check_result(path, is_label=is_label, allow_channels=allow_channels)


@FUZZ_SETTINGS
@given(
    suffix=st.sampled_from([".nii", ".nii.gz"]),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 600)),
    is_label=st.booleans(),
)
def test_corrupted_bytes(
    tmp_path: Path,
    valid_file_bytes: dict[str, bytes],
    suffix: str,
    flips: list[tuple[int, int]],
    cut: int | None,
    is_label: bool,
) -> None:
    data = bytearray(valid_file_bytes[suffix])
    for pos, value in flips:
        # the header (first 348 bytes of the uncompressed file) is where most damage matters
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(bytes(data))
    _check_result(path, is_label=is_label, allow_channels=False)


@FUZZ_SETTINGS
@given(
    flips=st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=6),
    is_label=st.booleans(),
)
def test_corrupted_header_inside_gzip(
    tmp_path: Path, valid_file_bytes: dict[str, bytes], flips: list[tuple[int, int]], is_label: bool
) -> None:
    """Header damage behind an intact gzip stream (a bad writer, not a bad disk)."""
    data = bytearray(valid_file_bytes[".nii"])
    for pos, value in flips:
        data[pos] = value
    path = tmp_path / "header.nii.gz"
    path.write_bytes(gzip.compress(bytes(data)))
    _check_result(path, is_label=is_label, allow_channels=True)
