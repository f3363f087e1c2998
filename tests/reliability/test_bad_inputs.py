"""The bad-input matrix: every case gives one clear error line, a non-zero exit, no data loss.

Each case builds a small input tree in its own folder, runs one ``duplus`` command in-process
(``duplus.cli.main``) and checks the promise of docs/RELIABILITY.md:

* exactly one line on stderr, ``duplus: error: <file or option>: <problem>``, naming the culprit;
* a non-zero exit status (2 for bad input or configuration, 1 for a failing environment);
* every file of the case folder (and the shared checkpoint) byte-identical afterwards;
* no new file or folder anywhere in the case folder: no partial outputs, no temporary files.

A handful of cases also run through the real console script in a subprocess, to prove the exit
status and the single stderr line without pytest's capture in between.
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from duplus.cli import main
from duplus.fileio import MANIFEST_NAME

SHAPE = (16, 16, 16)
LABELS = {
    1: "liver",
    2: "spleen",
    3: "left kidney",
    4: "right kidney",
    5: "aorta",
    6: "pancreas",
    7: "liver tumour",
}


# ---------------------------------------------------------------------------------------- inputs
@cache
def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from duplus.data.phantoms import make_phantom_case

    case = make_phantom_case(3, "abdomen", "CT", shape=SHAPE, with_tumour=True)
    return np.rint(case.image).astype(np.int16), case.label.astype(np.int16), case.affine


def write_image(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    """A NIfTI image (the phantom CT unless ``data`` is given), qform and sform set."""
    image, _, aff = _phantom()
    arr = image if data is None else data
    aff = aff if affine is None else affine
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, str(path))
    return path


def write_label(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    return write_image(path, _phantom()[1] if data is None else data, affine)


def write_raw_nifti(path: Path, data: np.ndarray, pixdim: tuple[float, float, float]) -> Path:
    """A NIfTI file written field by field, so nibabel neither checks nor fixes ``pixdim``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    hdr["pixdim"] = [1.0, *pixdim, 1.0, 1.0, 1.0, 1.0]
    hdr["qform_code"] = 0
    hdr["sform_code"] = 0
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + np.asfortranarray(data).tobytes(order="F")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_msd(root: Path, *, meta: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A one-case MSD dataset ``root/ds`` (valid unless the caller spoils it); returns the folder."""
    ds = root / "ds"
    write_image(ds / "imagesTr" / "c0.nii.gz")
    write_label(ds / "labelsTr" / "c0.nii.gz")
    content: dict[str, Any] = {
        "name": "Bad",
        "modality": {"0": "CT"},
        "region": "abdomen",
        "labels": {"0": "background", **{str(k): v for k, v in LABELS.items()}},
        "training": [{"image": "./imagesTr/c0.nii.gz", "label": "./labelsTr/c0.nii.gz"}],
        "test": [],
    }
    content.update(meta or {})
    for key in drop:
        content.pop(key)
    (ds / "dataset.json").write_text(json.dumps(content, indent=2))
    return ds


def write_dicom_series(folder: Path, series_uid: str, n: int, z0: float) -> None:
    """``n`` 4x4 axial CT slices of one series."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")  # CT image storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = f"{series_uid.rsplit('.', 1)[-1]}_{k}.dcm"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "1.2.3", series_uid
        ds.Rows = ds.Columns = 4
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, z0 + 2.0 * k]
        ds.PixelSpacing = [1.0, 1.0]
        ds.PixelData = np.full((4, 4), k, dtype=np.int16).tobytes()
        ds.save_as(str(folder / name), enforce_file_format=True)


class PickledCode:
    """Unpickling this object would create ``marker``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


# ------------------------------------------------------------------------------------- the cases
@dataclass
class Env:
    """What a case builder gets: its folder (everything in it counts as input) and helpers."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    checkpoint: Path | None = None
    extra_inputs: list[Path] = field(default_factory=list)
    may_change: set[str] = field(default_factory=set)
    must_not_exist: list[Path] = field(default_factory=list)

    def segment(self, image: Path, *extra: str, checkpoint: Path | None = None) -> list[str]:
        ckpt = checkpoint or self.checkpoint
        assert ckpt is not None
        return [
            "segment",
            *("-i", str(image), "-o", str(self.root / "seg"), "-c", str(ckpt)),
            *("--modality", "CT", "--region", "abdomen", "--targets", "liver", "spleen"),
            *extra,
            "-q",
        ]

    def prepare(self, ds: Path, *extra: str) -> list[str]:
        return ["prepare", str(ds / "dataset.json"), "--out", str(self.root / "cache"), *extra, "-q"]

    def train(self, dataset_json: Path, *, out: Path | None = None, extra_yaml: str = "") -> list[str]:
        cfg = self.root / "train.yaml"
        cfg.write_text(f"datasets:\n  - {{spec: {dataset_json}}}\nmodel: {{preset: tiny}}\n{extra_yaml}")
        return ["train", "--config", str(cfg), "--out", str(out or self.root / "run"), "-q"]

    def evaluate(self, pred: Path, ref: Path, labels: Path) -> list[str]:
        return [
            "evaluate",
            *("--pred", str(pred), "--ref", str(ref), "--labels", str(labels)),
            *("--out", str(self.root / "eval")),
            "-q",
        ]


@dataclass(frozen=True)
class Call:
    """The command line of a case and the file or option its error line must name."""

    argv: list[str]
    culprit: Path | str


@dataclass(frozen=True)
class BadInput:
    """One case: ``build`` makes the inputs and returns the call; ``problem`` words must appear."""

    id: str
    build: Callable[[Env], Call]
    problem: tuple[str, ...]
    needs_checkpoint: bool = False
    exit_code: int = 2


def emulate_permissions(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, ``os.access`` ignores the mode bits (root may write anywhere). Make it honour the
    owner's write bit, as for an ordinary user, so a read-only folder really reads as read-only."""
    if os.geteuid() != 0:
        return
    real = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK:
            try:
                if not os.stat(path).st_mode & stat.S_IWUSR:
                    return False
            except OSError:
                pass
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


# -- image files -----------------------------------------------------------------------------
def _prepare_with_image(spoil: Callable[[Path], Path]) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        ds = write_msd(env.root)
        image = spoil(ds / "imagesTr" / "c0.nii.gz")
        return Call(env.prepare(ds), image)

    return build


def _segment_with_image(spoil: Callable[[Path], Path]) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        image = spoil(write_image(env.root / "in" / "ct.nii.gz"))
        return Call(env.segment(image), image)

    return build


def _corrupt_gzip(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:10] + bytes((b * 7 + 13) % 256 for b in data[10:]))  # header kept, stream garbled
    return path


def _not_nifti(path: Path) -> Path:
    path.write_text("PatientID,Age\nP1,63\n")
    return path


def _two_d(path: Path) -> Path:
    return write_image(path, np.zeros((16, 16), np.int16))


def _four_d(path: Path) -> Path:
    return write_image(path, np.zeros((*SHAPE, 3), np.int16))


def _with_value(value: float) -> Callable[[Path], Path]:
    def spoil(path: Path) -> Path:
        data = _phantom()[0].astype(np.float32)
        data[3, 4, 5] = value
        return write_image(path, data)

    return spoil


def _spacing(pixdim: tuple[float, float, float]) -> Callable[[Path], Path]:
    def spoil(path: Path) -> Path:
        return write_raw_nifti(path, _phantom()[0], pixdim)

    return spoil


# -- image and label together ---------------------------------------------------------------------
def _prepare_with_label(spoil: Callable[[Path], Path]) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        ds = write_msd(env.root)
        label = spoil(ds / "labelsTr" / "c0.nii.gz")
        return Call(env.prepare(ds), label)

    return build


def _label_shape(path: Path) -> Path:
    return write_label(path, _phantom()[1][:, :, :-2])


def _label_affine(path: Path) -> Path:
    affine = _phantom()[2].copy()
    affine[:3, 3] += 5.0
    return write_label(path, affine=affine)


def _label_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _label_value(path: Path) -> Path:
    data = _phantom()[1].copy()
    data[0, 0, 0] = 9
    return write_label(path, data)


# -- dataset.json -----------------------------------------------------------------------------------
def _prepare_with_meta(
    meta: dict[str, Any] | None = None, drop: tuple[str, ...] = ()
) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        ds = write_msd(env.root, meta=meta, drop=drop)
        return Call(env.prepare(ds), ds / "dataset.json")

    return build


def _invalid_json(env: Env) -> Call:
    ds = write_msd(env.root)
    (ds / "dataset.json").write_text('{"name": "Bad", "labels": {"1": "liver"')
    return Call(env.prepare(ds), ds / "dataset.json")


def _outside_root(env: Env) -> Call:
    ds = write_msd(
        env.root, meta={"training": [{"image": "../secret.nii.gz", "label": "./labelsTr/c0.nii.gz"}]}
    )
    write_image(env.root / "secret.nii.gz")
    return Call(env.prepare(ds), ds / "dataset.json")


# -- folders and disk --------------------------------------------------------------------------
def _prepare_out_is_input(env: Env) -> Call:
    ds = write_msd(env.root)
    return Call(["prepare", str(ds / "dataset.json"), "--out", str(ds), "-q"], ds)


def _read_only(env: Env) -> Path:
    folder = env.root / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    emulate_permissions(env.monkeypatch)
    return folder


def _prepare_read_only(env: Env) -> Call:
    ds = write_msd(env.root)
    folder = _read_only(env)
    return Call(["prepare", str(ds / "dataset.json"), "--out", str(folder), "-q"], folder)


def _prepare_out_is_file(env: Env) -> Call:
    ds = write_msd(env.root)
    (env.root / "notes.txt").write_text("my notes\n")
    return Call(
        ["prepare", str(ds / "dataset.json"), "--out", str(env.root / "notes.txt"), "-q"], "notes.txt"
    )


def _prepare_config_unknown_key(env: Env) -> Call:
    ds = write_msd(env.root)
    cfg = env.root / "pre.yaml"
    cfg.write_text("spacing: [2, 2, 2]\nspacng: [1, 1, 1]\n")
    return Call(env.prepare(ds, "--config", str(cfg)), cfg)


def _segment_dicom_mixed(env: Env) -> Call:
    folder = env.root / "dicom"
    write_dicom_series(folder, "1.2.3.100", 2, 0.0)
    write_dicom_series(folder, "1.2.3.200", 2, 10.0)
    return Call(env.segment(folder), folder)


def _segment_out_is_input(env: Env) -> Call:
    write_image(env.root / "in" / "ct.nii.gz")
    argv = env.segment(env.root / "in")
    argv[argv.index("-o") + 1] = str(env.root / "in")
    return Call(argv, env.root / "in")


def _segment_out_replaces_input(env: Env) -> Call:
    """``-o work`` for the input folder ``work/ct1`` holding ``ct1.nii.gz``: the case ``ct1``'s
    output folder ``work/ct1`` would replace the input folder (it used to be deleted)."""
    write_image(env.root / "work" / "ct1" / "ct1.nii.gz")
    argv = env.segment(env.root / "work" / "ct1")
    argv[argv.index("-o") + 1] = str(env.root / "work")
    return Call(argv, env.root / "work")


def _segment_read_only(env: Env) -> Call:
    image = write_image(env.root / "in" / "ct.nii.gz")
    folder = _read_only(env)
    argv = env.segment(image)
    argv[argv.index("-o") + 1] = str(folder / "seg")
    return Call(argv, folder)


def _train_disk_full(env: Env) -> Call:
    """Resume the shared run; the checkpoint write at the end of its next epoch hits a full disk."""
    import torch

    assert env.checkpoint is not None
    run = env.root / "run"
    shutil.copytree(env.checkpoint.parent, run)
    env.may_change.add("run/metrics.csv")  # written (atomically) just before the checkpoint

    def full_disk(obj: object, f: Any, *args: Any, **kwargs: Any) -> None:
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    env.monkeypatch.setattr(torch, "save", full_disk)
    return Call(["train", "--resume", str(run), "-q"], run / "checkpoint_last.pt")


# -- checkpoints and config -------------------------------------------------------------------
def _segment_with_checkpoint(make: Callable[[Env, Path], None]) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        image = write_image(env.root / "in" / "ct.nii.gz")
        ckpt = env.root / "model.pt"
        make(env, ckpt)
        return Call(env.segment(image, checkpoint=ckpt), ckpt)

    return build


def _pickled_code(env: Env, path: Path) -> None:
    import torch

    marker = env.root / "code_ran.txt"
    env.must_not_exist.append(marker)
    torch.save({"format": "duplus-checkpoint", "format_version": 1, "model": PickledCode(marker)}, path)


def _plain_state_dict(env: Env, path: Path) -> None:
    import torch

    assert env.checkpoint is not None
    torch.save(torch.load(env.checkpoint, weights_only=True)["model"], path)


def _other_preset(env: Env, path: Path) -> None:
    import torch

    assert env.checkpoint is not None
    ckpt = torch.load(env.checkpoint, weights_only=True)
    ckpt["model_config"]["preset"] = "small"  # the weights are the tiny preset's
    torch.save(ckpt, path)


def _truncated_checkpoint(env: Env, path: Path) -> None:
    assert env.checkpoint is not None
    path.write_bytes(env.checkpoint.read_bytes()[:4096])


def _segment_option(option: str, value: str | list[str]) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        image = write_image(env.root / "in" / "ct.nii.gz")
        argv = env.segment(image)
        if option == "--targets":
            i = argv.index("--targets")
            argv[i + 1 : i + 3] = list(value)
        elif option in argv:
            argv[argv.index(option) + 1] = str(value)
        else:
            argv += [option, str(value)]
        return Call(argv, option)

    return build


def _train_unknown_key(env: Env) -> Call:
    ds = write_msd(env.root)
    argv = env.train(ds / "dataset.json", extra_yaml="iterations: 2\nlearning_rate: 0.1\n")
    return Call(argv, env.root / "train.yaml")


def _train_missing_dataset(env: Env) -> Call:
    argv = env.train(env.root / "nowhere" / "dataset.json")
    return Call(argv, env.root / "nowhere" / "dataset.json")


def _train_bad_dataset_json(env: Env) -> Call:
    ds = write_msd(env.root, drop=("labels",))
    return Call(env.train(ds / "dataset.json"), ds / "dataset.json")


def _train_nan_image(env: Env) -> Call:
    ds = write_msd(env.root)
    image = _with_value(float("nan"))(ds / "imagesTr" / "c0.nii.gz")
    return Call(env.train(ds / "dataset.json"), image)


def _train_out_is_input(env: Env) -> Call:
    ds = write_msd(env.root)
    return Call(env.train(ds / "dataset.json", out=ds), ds)


# -- clinical data ------------------------------------------------------------------------------
HECKTOR_COLUMNS = ["PatientID", "CenterID", "Gender", "Age", "Weight", "Tobacco", "Alcohol", "Performance status", "HPV status (0=-, 1=+)", "Surgery", "Chemotherapy"]  # fmt: skip


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_cohort(
    root: Path,
    *,
    ages: tuple[str, ...] = (),
    times: tuple[str, ...] = (),
    events: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
    drop: str | None = None,
) -> Path:
    """A six-patient HECKTOR 2022 folder (clinical and endpoint CSVs, no images needed for EHR)."""
    folder = root / "hecktor"
    folder.mkdir(parents=True)
    ages = ages or ("63", "55", "71", "48", "66", "59")
    times = times or ("400", "1200", "800", "300", "1500", "950")
    events = events or ("1", "0", "1", "1", "0", "0")
    header = HECKTOR_COLUMNS + list(extra or {})
    rows = [
        [f"P{i:03d}", "1", "M", a, "80", "1", "0", "0", "1", "0", "1", *(extra or {}).values()]
        for i, a in enumerate(ages)
    ]
    if drop is not None:
        k = header.index(drop)
        header, rows = header[:k] + header[k + 1 :], [r[:k] + r[k + 1 :] for r in rows]
    _write_csv(folder / "hecktor2022_clinical_info_training.csv", header, rows)
    endpoint = [[f"P{i:03d}", e, t] for i, (e, t) in enumerate(zip(events, times, strict=True))]
    _write_csv(folder / "hecktor2022_endpoint_training.csv", ["PatientID", "Relapse", "RFS"], endpoint)
    return folder


def _prognosis(env: Env, *data: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "prognosis",
        "cv",
        *data,
        "--mode",
        "ehr",
        "--modes",
        "ehr",
        "--out",
        str(env.root / "prog"),
        *extra,
        "-q",
    ]


def _cohort_case(
    culprit: str, *, ages: tuple[str, ...] = (), times: tuple[str, ...] = (), events: tuple[str, ...] = ()
) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        folder = write_cohort(env.root, ages=ages, times=times, events=events)
        return Call(_prognosis(env, "--hecktor", str(folder)), folder / culprit)

    return build


def _clinical_csv_without_time(env: Env) -> Call:
    table = env.root / "clinical.csv"
    _write_csv(
        table, ["PatientID", "Age", "Relapse"], [["P1", "63", "1"], ["P2", "55", "0"], ["P3", "70", "1"]]
    )
    return Call(_prognosis(env, "--clinical", str(table)), table)


def _prognosis_config_unknown_key(env: Env) -> Call:
    folder = write_cohort(env.root)
    cfg = env.root / "prognosis.yaml"
    cfg.write_text("epochs: 2\nlora_rank: 8\n")
    return Call(_prognosis(env, "--hecktor", str(folder), extra=("--config", str(cfg))), cfg)


# -- evaluate -----------------------------------------------------------------------------------------
def _evaluate_with(
    spoil_pred: Callable[[Path], Path] | None, spoil_ref: Callable[[Path], Path] | None
) -> Callable[[Env], Call]:
    def build(env: Env) -> Call:
        _, label, _ = _phantom()
        pred = write_label(env.root / "pred" / "case0" / "liver.nii.gz", (label == 1).astype(np.uint8))
        ref = write_label(env.root / "ref" / "case0.nii.gz")
        labels = env.root / "labels.json"
        labels.write_text(json.dumps({"labels": {str(k): v for k, v in LABELS.items()}}))
        culprit = spoil_pred(pred) if spoil_pred else spoil_ref(ref) if spoil_ref else pred
        return Call(env.evaluate(env.root / "pred", env.root / "ref", labels), culprit)

    return build


def _pred_shape(path: Path) -> Path:
    return write_label(path, np.zeros((16, 16, 12), np.uint8))


def _pred_affine(path: Path) -> Path:
    affine = _phantom()[2].copy()
    affine[:3, :3] *= 1.5
    return write_label(path, (_phantom()[1] == 1).astype(np.uint8), affine)


# -- the matrix ---------------------------------------------------------------------------------------
CASES: list[BadInput] = [
    # image files
    BadInput("prepare-truncated-image", _prepare_with_image(truncate), ("corrupt or truncated",)),
    BadInput("prepare-corrupt-gzip-image", _prepare_with_image(_corrupt_gzip), ("cannot read NIfTI",)),
    BadInput("prepare-not-nifti-named-nii-gz", _prepare_with_image(_not_nifti), ("cannot read NIfTI",)),
    BadInput("prepare-2d-image", _prepare_with_image(_two_d), ("2D", "expected 3D")),
    BadInput("prepare-4d-image", _prepare_with_image(_four_d), ("3 channels", "CT needs 1")),
    BadInput("prepare-nan-voxels", _prepare_with_image(_with_value(float("nan"))), ("NaN or Inf",)),
    BadInput("prepare-inf-voxels", _prepare_with_image(_with_value(float("inf"))), ("NaN or Inf",)),
    BadInput("prepare-zero-spacing", _prepare_with_image(_spacing((0.0, 1.0, 1.0))), ("zero or negative voxel spacing",)),
    BadInput("prepare-negative-spacing", _prepare_with_image(_spacing((1.0, -2.0, 1.0))), ("zero or negative voxel spacing",)),
    BadInput("segment-truncated-image", _segment_with_image(truncate), ("corrupt or truncated",), needs_checkpoint=True),
    BadInput("segment-not-nifti-named-nii-gz", _segment_with_image(_not_nifti), ("cannot read NIfTI",), needs_checkpoint=True),
    BadInput("segment-2d-image", _segment_with_image(_two_d), ("2D", "expected 3D"), needs_checkpoint=True),
    BadInput("segment-4d-image", _segment_with_image(_four_d), ("4D", "expected 3D"), needs_checkpoint=True),
    BadInput("segment-nan-voxels", _segment_with_image(_with_value(float("nan"))), ("NaN or Inf",), needs_checkpoint=True),
    BadInput("segment-zero-spacing", _segment_with_image(_spacing((1.0, 1.0, 0.0))), ("zero or negative voxel spacing",), needs_checkpoint=True),
    # image and label together
    BadInput("prepare-label-shape-mismatch", _prepare_with_label(_label_shape), ("shape", "does not match")),
    BadInput("prepare-label-affine-mismatch", _prepare_with_label(_label_affine), ("affine does not match",)),
    BadInput("prepare-empty-label-file", _prepare_with_label(_label_empty_file), ("cannot read NIfTI",)),
    BadInput("prepare-label-values-outside-map", _prepare_with_label(_label_value), ("label values [9]", "label map")),
    BadInput("evaluate-shape-mismatch", _evaluate_with(_pred_shape, None), ("shape", "does not match")),
    BadInput("evaluate-affine-mismatch", _evaluate_with(_pred_affine, None), ("affine does not match",)),
    BadInput("evaluate-corrupt-prediction", _evaluate_with(truncate, None), ("corrupt or truncated",)),
    BadInput("evaluate-empty-reference-file", _evaluate_with(None, _label_empty_file), ("cannot read NIfTI",)),
    BadInput("evaluate-label-values-outside-map", _evaluate_with(None, _label_value), ("label values [9]",)),
    # prompts
    BadInput("prepare-unknown-modality", _prepare_with_meta({"modality": {"0": "XRAY"}}), ("unknown modality 'XRAY'",)),
    BadInput("segment-unknown-modality", _segment_option("--modality", "XRAY"), ("unknown modality 'XRAY'",), needs_checkpoint=True),
    BadInput("segment-empty-target", _segment_option("--targets", ["liver", ""]), ("empty or whitespace-only",), needs_checkpoint=True),
    BadInput("segment-whitespace-target", _segment_option("--targets", ["  \t ", "liver"]), ("empty or whitespace-only",), needs_checkpoint=True),
    BadInput("segment-very-long-target", _segment_option("--targets", ["liver", "spleen " * 300]), ("characters; at most",), needs_checkpoint=True),
    BadInput("segment-duplicate-targets", _segment_option("--targets", ["liver", "Liver "]), ("duplicate target",), needs_checkpoint=True),
    BadInput("segment-empty-region", _segment_option("--region", "   "), ("empty or whitespace-only region",), needs_checkpoint=True),
    BadInput("segment-overlap-out-of-range", _segment_option("--overlap", "1.5"), ("must be in [0, 1)",), needs_checkpoint=True),
    # dataset.json
    BadInput("prepare-json-missing-labels", _prepare_with_meta(drop=("labels",)), ("missing required field 'labels'",)),
    BadInput("prepare-json-missing-training", _prepare_with_meta(drop=("training",)), ("missing required field 'training'",)),
    BadInput("prepare-json-invalid", _invalid_json, ("invalid JSON",)),
    BadInput("prepare-path-outside-root", _outside_root, ("outside the dataset folder",)),
    BadInput("train-missing-dataset", _train_missing_dataset, ("not found",)),
    BadInput("train-json-missing-labels", _train_bad_dataset_json, ("missing required field 'labels'",)),
    BadInput("train-nan-voxels", _train_nan_image, ("NaN or Inf",)),
    # clinical data
    BadInput("prognosis-missing-endpoint-column", _clinical_csv_without_time, ("missing required column(s) 'RFS'",)),
    BadInput("prognosis-non-numeric-age", _cohort_case("hecktor2022_clinical_info_training.csv", ages=("63", "sixty", "71", "48", "66", "59")), ("column 'Age'", "expected a number")),
    BadInput("prognosis-negative-survival-time", _cohort_case("hecktor2022_endpoint_training.csv", times=("400", "-5", "800", "300", "1500", "950")), ("negative",)),
    BadInput("prognosis-all-censored", _cohort_case("hecktor2022_endpoint_training.csv", events=("0",) * 6), ("every patient is censored",)),
    BadInput("prognosis-config-unknown-key", _prognosis_config_unknown_key, ("unknown key(s) lora_rank",)),
    # folders and disk
    BadInput("segment-dicom-mixed-series", _segment_dicom_mixed, ("mixes 2 DICOM series",), needs_checkpoint=True),
    BadInput("prepare-output-is-input", _prepare_out_is_input, ("must not be the input folder",)),
    BadInput("segment-output-is-input", _segment_out_is_input, ("must not be the input folder",), needs_checkpoint=True),
    BadInput("segment-output-replaces-input", _segment_out_replaces_input, ("would replace the input",), needs_checkpoint=True),
    BadInput("train-output-is-input", _train_out_is_input, ("must not be the input folder",)),
    BadInput("prepare-output-read-only", _prepare_read_only, ("not writable",)),
    BadInput("segment-output-read-only", _segment_read_only, ("not writable",), needs_checkpoint=True),
    BadInput("prepare-output-is-a-file", _prepare_out_is_file, ("is a file",)),
    BadInput("train-disk-full-checkpoint", _train_disk_full, ("No space left on device",), needs_checkpoint=True, exit_code=1),
    # checkpoints and config
    BadInput("segment-checkpoint-pickled-code", _segment_with_checkpoint(_pickled_code), ("refused", "pickled")),
    BadInput("segment-checkpoint-plain-state-dict", _segment_with_checkpoint(_plain_state_dict), ("not a DuPLUS checkpoint",), needs_checkpoint=True),
    BadInput("segment-checkpoint-other-preset", _segment_with_checkpoint(_other_preset), ("'small'",), needs_checkpoint=True),
    BadInput("segment-checkpoint-truncated", _segment_with_checkpoint(_truncated_checkpoint), ("not a readable checkpoint",), needs_checkpoint=True),
    BadInput("train-config-unknown-key", _train_unknown_key, ("unknown key(s) learning_rate",)),
    BadInput("prepare-config-unknown-key", _prepare_config_unknown_key, ("unknown key(s) spacng",)),
]  # fmt: skip

NUM_CASES = len(CASES)
"""How many bad inputs the matrix tries (docs/RELIABILITY.md quotes it)."""

SUBPROCESS_CASES = (
    "prepare-truncated-image",
    "prepare-output-is-input",
    "train-config-unknown-key",
    "segment-checkpoint-pickled-code",
)
"""Cases also run through the console script (no monkeypatching there)."""


# ------------------------------------------------------------------------------------- the checks
def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file and ``"<dir>"`` of every folder under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def file_hashes(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def assert_nothing_lost_or_left(env: Env, before: dict[str, str], before_extra: dict[str, str]) -> None:
    after = snapshot(env.root)
    new = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k] and k not in env.may_change)
    assert not gone, f"input files removed: {gone}"
    assert not changed, f"input files modified: {changed}"
    assert not new, f"partial outputs or temporary files left: {new}"
    assert file_hashes(env.extra_inputs) == before_extra, "the shared checkpoint was modified"
    for path in env.must_not_exist:
        assert not path.exists(), f"{path} exists: code ran"


def assert_one_error_line(err: str, call: Call, case: BadInput) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("duplus: error: "), line
    assert str(call.culprit) in line, f"the error does not name {call.culprit}: {line}"
    for word in case.problem:
        assert word in line, f"{word!r} missing from: {line}"
    return line


def _make_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, case: BadInput
) -> Env:
    root = tmp_path / "case"
    root.mkdir()
    env = Env(root=root, monkeypatch=monkeypatch)
    if case.needs_checkpoint:
        env.checkpoint = request.getfixturevalue("trained_run").checkpoint
        env.extra_inputs.append(env.checkpoint)
    return env


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """``main`` quietens nibabel's logger; give it back afterwards."""
    logger = logging.getLogger("nibabel")
    level = logger.level
    yield
    logger.setLevel(level)


def test_the_matrix_is_large_enough() -> None:
    assert NUM_CASES >= 30
    assert len({c.id for c in CASES}) == NUM_CASES
    commands = {c.id.split("-", 1)[0] for c in CASES}
    assert {"prepare", "train", "segment", "evaluate", "prognosis"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: BadInput,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = _make_env(tmp_path, monkeypatch, request, case)
    call = case.build(env)
    before, before_extra = snapshot(env.root), file_hashes(env.extra_inputs)
    capsys.readouterr()
    rc = main(call.argv)
    err = capsys.readouterr().err
    assert rc == case.exit_code, f"exit status {rc}; stderr: {err}"
    print(assert_one_error_line(err, call, case))
    assert_nothing_lost_or_left(env, before, before_extra)


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_through_the_console_script(
    case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    case = next(c for c in CASES if c.id == case_id)
    env = _make_env(tmp_path, monkeypatch, request, case)
    call = case.build(env)
    before, before_extra = snapshot(env.root), file_hashes(env.extra_inputs)
    script = Path(sys.executable).parent / "duplus"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "duplus.cli"]
    proc = subprocess.run(
        [*command, *call.argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == case.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr  # exactly one line, nothing else
    assert_one_error_line(proc.stderr, call, case)
    assert_nothing_lost_or_left(env, before, before_extra)


# ---------------------------------------------------------------------- what is allowed, on purpose
def test_prepare_accepts_an_all_zero_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An all-background label is a valid case (a scan without any labelled organ: every target is
    supervised as absent); only an empty (0-byte) label *file* is an error."""
    ds = write_msd(tmp_path)
    write_label(ds / "labelsTr" / "c0.nii.gz", np.zeros(SHAPE, np.int16))
    before = snapshot(ds)
    assert main(["prepare", str(ds / "dataset.json"), "--out", str(tmp_path / "cache"), "-q"]) == 0
    manifest = json.loads((tmp_path / "cache" / "Bad" / "manifest.json").read_text())
    assert set(manifest["cases"][0]["voxel_counts"].values()) == {0}
    assert snapshot(ds) == before
    assert capsys.readouterr().err == ""


def test_failed_prepare_keeps_the_cases_before_the_bad_one(tmp_path: Path) -> None:
    """A bad second case fails the command; the first case stays cached (complete, validated) and
    a rerun after fixing the bad file reuses it."""
    ds = write_msd(tmp_path)
    write_image(ds / "imagesTr" / "c1.nii.gz")
    truncate(write_label(ds / "labelsTr" / "c1.nii.gz"))
    meta = json.loads((ds / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"})
    (ds / "dataset.json").write_text(json.dumps(meta))
    argv = ["prepare", str(ds / "dataset.json"), "--out", str(tmp_path / "cache"), "-q"]
    assert main(argv) == 2
    cache_dir = tmp_path / "cache" / "Bad"
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert [c["case_id"] for c in manifest["cases"]] == ["c0"]
    assert sorted(p.name for p in cache_dir.iterdir()) == [
        MANIFEST_NAME,
        "c0_img.npy",
        "c0_seg.npy",
        "manifest.json",
    ]
    first = (cache_dir / "c0_img.npy").stat().st_mtime_ns
    write_label(ds / "labelsTr" / "c1.nii.gz")
    assert main(argv) == 0
    assert (cache_dir / "c0_img.npy").stat().st_mtime_ns == first  # reused, not rebuilt
    assert (cache_dir / "c1_img.npy").is_file()


def test_extra_clinical_columns_are_only_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Columns beyond the HECKTOR 2022 set are kept and logged, never an error."""
    from duplus.data.hecktor import read_hecktor_clinical

    folder = write_cohort(tmp_path, extra={"Favourite colour": "blue"})
    with caplog.at_level(logging.INFO, logger="duplus"):
        df = read_hecktor_clinical(folder)
    assert len(df) == 6 and "Favourite colour" in df.columns
    assert any("Favourite colour" in r.getMessage() for r in caplog.records)


def test_missing_clinical_column_is_an_error(tmp_path: Path) -> None:
    from duplus.data.hecktor import read_hecktor_clinical
    from duplus.errors import InputError
    from duplus.prognosis.ehr import hecktor_template, records_to_texts

    folder = write_cohort(tmp_path, drop="Age")
    with pytest.raises(InputError, match="Age"):
        records_to_texts(read_hecktor_clinical(folder), hecktor_template())


@pytest.mark.parametrize(
    ("exc", "rc", "expected"),
    [
        (
            OSError(errno.EACCES, "Permission denied", "/data/out/x.nii.gz"),
            1,
            "/data/out/x.nii.gz: Permission denied",
        ),
        (
            RuntimeError("something\nbroke"),
            1,
            "internal error (RuntimeError: something broke); rerun with --verbose",
        ),
    ],
    ids=["os-error", "bug"],
)
def test_unexpected_failures_are_one_line_too(
    exc: Exception,
    rc: int,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failing disk or a bug still ends in one stderr line (the traceback needs ``--verbose``)."""
    import duplus.cli.commands as cli

    def fail(args: Any) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_evaluate", fail)
    argv = ["evaluate", "--pred", "p", "--ref", "r", "--out", "o"]
    assert main(argv) == rc
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"duplus: error: {expected}")
    with pytest.raises(type(exc)):
        main(["-v", *argv])
