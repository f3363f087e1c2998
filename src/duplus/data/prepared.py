"""The on-disk cache behind ``duplus prepare``: each case preprocessed once
(:func:`duplus.data.preprocess.preprocess_case`) and stored as ``<case>_img.npy`` ``(C, D, H, W)``
float32 and ``<case>_seg.npy`` ``(D, H, W)`` int16 beside a ``manifest.json`` that records the dataset
identity, the preprocessing config and, per case, the grid (affine), the crop box and fingerprints
of the source files, so a second run only redoes what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duplus.config import PreprocessConfig, to_dict
from duplus.data.io import load_channels, load_nifti
from duplus.data.preprocess import check_label_values, preprocess_case
from duplus.data.specs import CaseRecord, DatasetSpec, compute_target_values
from duplus.errors import InputError
from duplus.fileio import OutputFolder, atomic_path, read_json, write_json_atomic
from duplus.vocab import MODALITIES, normalise_modality, t1_prompt

logger = logging.getLogger(__name__)

__all__ = [
    "PREPROCESS_VERSION",
    "PreparedCase",
    "PreparedDataset",
    "config_hash",
    "load_prepared",
    "prepare_dataset",
]

PREPROCESS_VERSION = 1
"""Bumped when preprocessing changes in a way that invalidates caches."""

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "duplus-prepared"
_HEAD_BYTES = 1 << 20


# ----------------------------------------------------------------------------------------------
# the cache


@dataclass
class PreparedCase:
    """One cached case (see :func:`load_prepared`).

    Attributes:
        case_id: the case id of the spec.
        image_path: ``<case>_img.npy`` ``(C, D, H, W)`` float32.
        label_path: ``<case>_seg.npy`` ``(D, H, W)`` int16, ``None`` for test cases.
        shape: ``(C, D, H, W)``.
        split: ``"training"`` or ``"test"``.
        voxel_counts: ``{target: voxels}`` of each target's binary map.
        affine: ``(4, 4)`` voxel -> world of the cached grid.
    """

    case_id: str
    image_path: Path
    label_path: Path | None
    shape: tuple[int, int, int, int]
    split: str = "training"
    voxel_counts: dict[str, int] = field(default_factory=dict)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))


@dataclass
class PreparedDataset:
    """A prepared (cached) dataset, as :func:`load_prepared` reads it.

    Attributes:
        name, modality, region, labels, t1_prompt, citation: the dataset identity.
        cases: every cached case (``split`` says training or test).
        root: the cache folder.
        target_values: ``{target: label values}`` making each target's binary map.
    """

    name: str
    modality: str
    region: str
    labels: dict[int, str]
    t1_prompt: str
    cases: list[PreparedCase]
    root: Path
    citation: str = ""
    target_values: dict[str, list[int]] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What a checkpoint records of the dataset: name, modality, region, T1 prompt, label map."""
        labels = {str(k): v for k, v in self.labels.items()}
        return {
            "name": self.name,
            "modality": self.modality,
            "region": self.region,
            "t1": self.t1_prompt,
            "labels": labels,
        }

    @property
    def targets(self) -> list[str]:
        """Canonical target names, in label-value order."""
        return (
            list(self.target_values) if self.target_values else [self.labels[v] for v in sorted(self.labels)]
        )

    @property
    def training(self) -> list[PreparedCase]:
        """Cases with a label."""
        return [c for c in self.cases if c.label_path is not None]

    @property
    def modality_index(self) -> int:
        return MODALITIES.index(self.modality)


def config_hash(cfg: PreprocessConfig, modality: str = "", labels: dict[int, str] | None = None) -> str:
    """A short hash of what a cached case depends on besides its source files: the preprocessing
    config, :data:`PREPROCESS_VERSION`, the modality (normalisation) and the label map (checks and
    voxel counts)."""
    blob = json.dumps(
        {
            "version": PREPROCESS_VERSION,
            "cfg": to_dict(cfg),
            "modality": modality,
            "labels": {str(k): v for k, v in sorted((labels or {}).items())},
        },
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    """A file-system-safe version of a dataset or case name."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return out or "unnamed"


def _fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime and SHA-1 of the first MiB of a file (or a digest of a DICOM folder's listing)."""
    if path.is_dir():
        h = hashlib.sha1()
        total = 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            total += st.st_size
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return {"path": str(path), "size": total, "mtime_ns": 0, "head_sha1": h.hexdigest()}
    st = path.stat()
    with open(path, "rb") as fh:
        head = hashlib.sha1(fh.read(_HEAD_BYTES)).hexdigest()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha1": head}


def _same_sources(a: list[dict], b: list[dict]) -> bool:
    keys = ("size", "mtime_ns", "head_sha1")
    return len(a) == len(b) and all(
        all(x.get(k) == y.get(k) for k in keys) for x, y in zip(a, b, strict=True)
    )


def _npy_ok(path: Path, shape: list[int], dtype: str) -> bool:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return list(arr.shape) == list(shape) and str(arr.dtype) == dtype


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _cache_file_name(name: Any) -> str | None:
    """``name`` when it is a plain ``.npy`` file name of the cache folder (as this module writes
    them), else ``None``: a damaged or edited manifest must never point outside the folder."""
    if (
        isinstance(name, str)
        and name.endswith(".npy")
        and Path(name).name == name
        and not name.startswith(".")
    ):
        return name
    return None


def _entry_files(entry: dict) -> list[str]:
    """The cache files a manifest entry names (only names inside the folder)."""
    names = [_cache_file_name(entry.get(key)) for key in ("image", "label")]
    return [n for n in names if n is not None]


def _checked_cache_name(name: Any) -> str:
    checked = _cache_file_name(name)
    if checked is None:
        raise ValueError(f"cache file {name!r} is not a .npy file of the cache folder")
    return checked


def _entry_valid(entry: dict, folder: Path, chash: str, sources: list[dict], split: str) -> bool:
    if entry.get("config_hash") != chash or entry.get("split") != split:
        return False
    if not _same_sources(entry.get("sources", []), sources):
        return False
    image, label, shape = _cache_file_name(entry.get("image")), entry.get("label"), entry.get("shape")
    if image is None or not isinstance(shape, list) or len(shape) != 4:
        return False
    if not _npy_ok(folder / image, shape, "float32"):
        return False
    if label is None:
        return True
    label = _cache_file_name(label)
    return label is not None and _npy_ok(folder / label, shape[1:], "int16")


def _build_case(
    record: CaseRecord, split: str, spec: DatasetSpec, cfg: PreprocessConfig, folder: Path, stem: str
) -> dict[str, Any]:
    image = load_channels(record.images, record.channel_order)
    expected = 2 if spec.modality == "PETCT" else 1
    if image.num_channels != expected:
        raise InputError(
            record.images[0],
            f"image has {image.num_channels} channels (a 4D file?); {spec.modality} needs {expected}",
        )
    label = None
    if split == "training" and record.label is not None:
        label = load_nifti(record.label, is_label=True)
        check_label_values(label.array, spec.labels, record.label)
    case = preprocess_case(image, label, spec.modality, cfg)
    img_name, seg_name = f"{stem}_img.npy", f"{stem}_seg.npy"
    _save_npy(folder / img_name, case.image)
    counts: dict[str, int] = {}
    if case.label is not None:
        _save_npy(folder / seg_name, case.label)
        bins = np.bincount(case.label.ravel().astype(np.int64), minlength=max(spec.labels) + 1)
        counts = {t: int(sum(bins[v] for v in vals)) for t, vals in spec.target_values.items()}
    return {
        "case_id": record.case_id,
        "split": split,
        "image": img_name,
        "label": seg_name if case.label is not None else None,
        "shape": list(case.image.shape),
        "affine": case.affine.tolist(),
        "voxel_counts": counts,
        "meta": case.meta,
    }


def _read_old_manifest(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
        return {str(e["case_id"]): e for e in data.get("cases", []) if isinstance(e, dict) and "case_id" in e}
    except (InputError, AttributeError, TypeError, KeyError) as exc:
        logger.warning("%s: unreadable manifest (%s); rebuilding the cache", path, exc)
        return {}


def prepare_dataset(
    spec: DatasetSpec,
    cache_root: str | Path,
    cfg: PreprocessConfig,
    *,
    progress: bool = True,
    include_test: bool = False,
) -> Path:
    """Preprocess every case of ``spec`` into ``cache_root/<name>/`` (npy + ``manifest.json``).

    Cases whose manifest entry has the same config hash and unchanged source files (size, mtime,
    SHA-1 of the first MiB), and whose npy files load with the recorded shape, are kept; others are
    rebuilt. Every file is written atomically and the manifest is updated after each case, so an
    interrupted run resumes. Input files are only read.

    Args:
        spec: the dataset (see :func:`duplus.data.specs.load_dataset_spec`).
        cache_root: the cache root folder.
        cfg: preprocessing config.
        progress: show a tqdm progress bar.
        include_test: also cache the (unlabelled) test cases.

    Returns:
        The dataset's cache folder.

    Raises:
        InputError: a bad case (unreadable image, label grid mismatch, label values outside the
            label map), naming its file; a cache folder inside the dataset folder, or one that
            cannot be written. Cases cached before the bad one stay valid in the cache (a rerun
            reuses them); a failed run leaves no empty folders behind.
    """
    folder = Path(cache_root) / safe_name(spec.name)
    with OutputFolder(folder, inputs=[spec.root], replace_owned=True, name="cache folder") as out:
        out.mkdir(folder)
        _prepare_into(out, spec, cfg, progress=progress, include_test=include_test)
    return folder


def _prepare_into(
    out: OutputFolder, spec: DatasetSpec, cfg: PreprocessConfig, *, progress: bool, include_test: bool
) -> None:
    """The body of :func:`prepare_dataset`: (re)build the stale cases of the cache folder."""
    from tqdm.auto import tqdm

    folder = out.root
    manifest_path = folder / MANIFEST_NAME
    old = _read_old_manifest(manifest_path)
    if manifest_path.is_file():  # a cache made before duplus kept an output manifest
        out.adopt(manifest_path, *(folder / n for e in old.values() for n in _entry_files(e)))
    chash = config_hash(cfg, spec.modality, spec.labels)
    work: list[tuple[CaseRecord, str]] = [(c, "training") for c in spec.training]
    if include_test:
        work += [(c, "test") for c in spec.test]
    stems: dict[str, str] = {}
    for record, _ in work:
        stem = safe_name(record.case_id)
        if stem in stems.values():
            raise InputError(spec.source or spec.root, f"case ids collide as file name '{stem}'")
        stems[record.case_id] = stem
    header = {
        "format": MANIFEST_FORMAT,
        "version": PREPROCESS_VERSION,
        "name": spec.name,
        "modality": spec.modality,
        "region": spec.region,
        "labels": {str(k): v for k, v in sorted(spec.labels.items())},
        "targets": spec.targets,
        "target_values": spec.target_values,
        "t1_prompt": spec.t1_prompt,
        "citation": spec.citation,
        "source": str(spec.source or spec.root),
        "preprocess": to_dict(cfg),
        "config_hash": chash,
    }
    entries: dict[str, dict] = {}
    reused = 0
    bar = tqdm(work, desc=f"prepare {spec.name}", unit="case", disable=not progress)
    for record, split in bar:
        sources = [_fingerprint(p) for p in record.images]
        if split == "training" and record.label is not None:
            sources.append(_fingerprint(record.label))
        prev = old.get(record.case_id)
        if prev is not None and _entry_valid(prev, folder, chash, sources, split):
            entries[record.case_id] = prev
            reused += 1
            continue
        entry = _build_case(record, split, spec, cfg, folder, stems[record.case_id])
        entry.update(config_hash=chash, sources=sources)
        entries[record.case_id] = entry
        # keep not-yet-visited old entries, so an interrupted run loses nothing
        progress_cases = {**old, **entries}
        write_json_atomic(manifest_path, {**header, "cases": list(progress_cases.values())})
    if not include_test:
        # test cases cached by an earlier run with include_test=True stay (validated when asked for)
        test_ids = {c.case_id for c in spec.test}
        for case_id, prev in old.items():
            if prev.get("split") == "test" and prev.get("config_hash") == chash and case_id in test_ids:
                entries[case_id] = prev
    write_json_atomic(manifest_path, {**header, "cases": list(entries.values())})
    for case_id, prev in old.items():
        if case_id not in entries:
            for name in _entry_files(prev):
                if (folder / name).exists():
                    out.remove(folder / name)
    logger.info("%s: %d case(s) cached in %s (%d reused)", spec.name, len(entries), folder, reused)


def load_prepared(cache_dir: str | Path) -> PreparedDataset:
    """Read a prepared dataset's ``manifest.json``.

    Raises:
        InputError: no manifest, or one that is not a DuPLUS manifest.
    """
    folder = Path(cache_dir)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise InputError(folder, "no manifest.json here; run `duplus prepare` on the dataset first")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise InputError(path, "not a DuPLUS prepared-dataset manifest")
    try:
        labels = {int(k): str(v) for k, v in data["labels"].items()}
        cases = [
            PreparedCase(
                case_id=str(e["case_id"]),
                image_path=folder / _checked_cache_name(e["image"]),
                label_path=None if e.get("label") is None else folder / _checked_cache_name(e["label"]),
                shape=tuple(int(s) for s in e["shape"]),  # type: ignore[arg-type]
                split=str(e.get("split", "training")),
                voxel_counts={str(k): int(v) for k, v in e.get("voxel_counts", {}).items()},
                affine=np.asarray(e["affine"], dtype=np.float64),
            )
            for e in data["cases"]
        ]
        modality = normalise_modality(data["modality"], path)
        target_values = {str(k): [int(x) for x in v] for k, v in data.get("target_values", {}).items()}
        return PreparedDataset(
            name=str(data["name"]),
            modality=modality,
            region=str(data["region"]),
            labels=labels,
            t1_prompt=str(data.get("t1_prompt") or t1_prompt(modality, data["region"])),
            cases=cases,
            root=folder,
            citation=str(data.get("citation", "")),
            target_values=target_values or compute_target_values(labels),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(path, f"malformed manifest ({type(exc).__name__}: {exc})") from exc
