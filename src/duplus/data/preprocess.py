"""Per-case preprocessing (orient, resample, normalise, crop) and the on-disk cache behind
``duplus prepare``.

Each case is brought onto an axis-aligned RAS+ grid of ``cfg.spacing`` mm (image trilinear, label
nearest), its intensities are normalised per modality, and it is cropped to the body. The result
is cached as ``<case>_img.npy`` ``(C, D, H, W)`` float32 and ``<case>_seg.npy`` ``(D, H, W)`` int16
next to a ``manifest.json`` that records the dataset identity, the preprocessing config and, per
case, the grid (affine), the crop box and fingerprints of the source files, so a second run only
redoes what changed.

Intensity conventions (:func:`normalise_intensity`):

* CT: clip to ``cfg.ct_window`` ``[lo, hi]`` HU, then ``(x - lo) / (hi - lo) * 2 - 1`` -> ``[-1, 1]``.
* MRI: per channel, clip to the ``cfg.mri_percentiles`` of the foreground, then z-score over the
  foreground (foreground: voxels above 5 % of the range between the minimum and the 99th percentile).
* PET: SUV clipped to ``[0, cfg.pet_suv_max]`` and divided by ``pet_suv_max`` -> ``[0, 1]``
  (0 = no uptake). Input PET must be in SUV units.
* PETCT: channel order :data:`PETCT_CHANNEL_ORDER` (channel 0 PET, channel 1 CT); each channel is
  normalised as its own modality.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from duplus.config import PreprocessConfig, to_dict
from duplus.data.io import Volume, check_same_grid, load_channels, load_nifti
from duplus.data.resample import ras_grid_for, resample_to_grid
from duplus.data.specs import CaseRecord, DatasetSpec, compute_target_values
from duplus.errors import InputError
from duplus.fileio import OutputFolder, atomic_path, read_json, write_json_atomic
from duplus.vocab import MODALITIES, PETCT_CHANNEL_ORDER, normalise_modality, t1_prompt

logger = logging.getLogger(__name__)

__all__ = [
    "PETCT_CHANNEL_ORDER",
    "PREPROCESS_VERSION",
    "PreparedCase",
    "PreparedDataset",
    "PreprocessedCase",
    "channel_modalities",
    "check_label_values",
    "compute_body_mask",
    "config_hash",
    "load_prepared",
    "normalise_intensity",
    "prepare_dataset",
    "preprocess_case",
]

PREPROCESS_VERSION = 1
"""Bumped when preprocessing changes in a way that invalidates caches."""

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "duplus-prepared"

RESAMPLE_PADDING: dict[str, float] = {"CT": -1024.0, "MRI": 0.0, "PET": 0.0}
"""Raw value of voxels outside the source field of view (air for CT, no signal otherwise)."""

CT_BODY_HU = -500.0
"""CT voxels above this HU belong to the body (for cropping)."""

_HEAD_BYTES = 1 << 20


# ----------------------------------------------------------------------------------------------
# intensities


def channel_modalities(modality: str, num_channels: int, source: str | Path | None = None) -> list[str]:
    """The modality of each image channel: ``PETCT`` -> ``["PET", "CT"]``, else ``[modality] * C``.

    Raises:
        InputError: a ``PETCT`` image that does not have exactly 2 channels.
    """
    mod = normalise_modality(modality, source)
    if mod == "PETCT":
        if num_channels != 2:
            raise InputError(
                source, f"PET/CT needs 2 channels ({' then '.join(PETCT_CHANNEL_ORDER)}), got {num_channels}"
            )
        return list(PETCT_CHANNEL_ORDER)
    return [mod] * num_channels


def _relative_foreground(x: np.ndarray) -> np.ndarray:
    lo = float(x.min())
    hi = float(np.percentile(x, 99.0))
    fg = x > lo + 0.05 * (hi - lo)
    if fg.sum() < max(1, 0.01 * x.size):
        fg = np.ones_like(x, dtype=bool)
    return fg


def _normalise_channel(x: np.ndarray, modality: str, cfg: PreprocessConfig) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    if modality == "CT":
        lo, hi = (float(v) for v in cfg.ct_window)
        if hi <= lo:
            raise ValueError(f"ct_window must be [low, high] with low < high, got {cfg.ct_window}")
        return ((np.clip(x, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)
    if modality == "PET":
        top = float(cfg.pet_suv_max)
        if top <= 0:
            raise ValueError(f"pet_suv_max must be positive, got {top}")
        if float(x.max()) > 200.0:
            logger.warning("PET maximum %.0f looks like Bq/mL, not SUV; convert PET to SUV first", x.max())
        return (np.clip(x, 0.0, top) / top).astype(np.float32)
    # MRI
    fg = _relative_foreground(x)
    plo, phi = np.percentile(x[fg], [float(cfg.mri_percentiles[0]), float(cfg.mri_percentiles[1])])
    x = np.clip(x, plo, phi)
    vals = x[fg]
    mean, std = float(vals.mean()), float(vals.std())
    return ((x - mean) / max(std, 1e-6)).astype(np.float32)


def normalise_intensity(image: np.ndarray, modality: str, cfg: PreprocessConfig) -> np.ndarray:
    """Normalise intensities per modality (see the module docstring for each rule).

    Args:
        image: ``(C, I, J, K)`` raw intensities (HU for CT, SUV for PET).
        modality: one of :data:`MODALITIES`; ``PETCT`` images have channels (PET, CT).
        cfg: preprocessing config (``ct_window``, ``mri_percentiles``, ``pet_suv_max``).

    Returns:
        ``(C, I, J, K)`` float32.
    """
    mods = channel_modalities(modality, image.shape[0])
    return np.stack([_normalise_channel(image[c], m, cfg) for c, m in enumerate(mods)]).astype(np.float32)


def compute_body_mask(image: np.ndarray, modality: str) -> np.ndarray:
    """Body voxels of a raw ``(C, I, J, K)`` image, ``(I, J, K)`` bool.

    CT (and the CT channel of PET/CT): HU > :data:`CT_BODY_HU`; MRI/PET: the relative foreground
    of the first channel. Small specks (components under 10 % of the largest) are dropped.
    """
    mods = channel_modalities(modality, image.shape[0])
    if "CT" in mods:
        mask = image[mods.index("CT")] > CT_BODY_HU
    else:
        mask = _relative_foreground(image[0])
        if mask.all():
            return mask
    labelled, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labelled.ravel())[1:]
        keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
        mask = np.isin(labelled, keep)
    return mask


def check_label_values(
    label_array: np.ndarray, allowed_values: Iterable[int], path: str | Path | None
) -> None:
    """Raise :class:`InputError` naming ``path`` if the label holds values outside the label map.

    Args:
        label_array: integer label map of any shape.
        allowed_values: the dataset's foreground label values (0 is always allowed).
        path: the label file, named in the error.
    """
    allowed = {0, *(int(v) for v in allowed_values)}
    present = np.unique(np.asarray(label_array))
    bad = [int(v) for v in present if int(v) not in allowed]
    if bad:
        raise InputError(
            path,
            f"label values {bad[:10]} are not in the dataset's label map (allowed: {sorted(allowed)})",
        )


# ----------------------------------------------------------------------------------------------
# one case


@dataclass
class PreprocessedCase:
    """A case on the preprocessed grid.

    Attributes:
        image: ``(C, D, H, W)`` float32, normalised.
        label: ``(D, H, W)`` int16 label values, or ``None``.
        affine: ``(4, 4)`` voxel -> world of the preprocessed grid (RAS+, ``cfg.spacing``, after crop).
        meta: ``original_shape``, ``original_affine``, ``resampled_shape``, ``resampled_affine``,
            ``crop_start``, ``crop_stop`` (in the resampled grid), ``spacing``, ``channels``.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    meta: dict = field(default_factory=dict)


def _crop_box(mask: np.ndarray, margin: np.ndarray) -> tuple[list[int], list[int]]:
    shape = np.array(mask.shape)
    if not mask.any():
        return [0, 0, 0], [int(s) for s in shape]
    start, stop = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        start.append(int(max(0, idx[0] - margin[ax])))
        stop.append(int(min(shape[ax], idx[-1] + 1 + margin[ax])))
    return start, stop


def preprocess_case(
    image: Volume, label: Volume | None, modality: str, cfg: PreprocessConfig
) -> PreprocessedCase:
    """Resample to the RAS+ ``cfg.spacing`` grid, normalise and crop one case.

    Args:
        image: ``(C, I, J, K)`` raw image (PET/CT: channels PET, CT).
        label: ``(1, I, J, K)`` integer label map on the image's grid, or ``None``.
        modality: one of :data:`MODALITIES`.
        cfg: preprocessing config.

    Raises:
        InputError: the label's grid (shape or affine) differs from the image's (names the label
            file); a PET/CT image without 2 channels.
    """
    mod = normalise_modality(modality)
    mods = channel_modalities(mod, image.num_channels, image.path)
    if label is not None:
        check_same_grid(image, label)
    dst_shape, dst_affine = ras_grid_for(image.spatial_shape, image.affine, cfg.spacing, source=image.path)
    resampled = np.stack(
        [
            resample_to_grid(
                image.array[c : c + 1], image.affine, dst_shape, dst_affine, "linear", RESAMPLE_PADDING[m]
            )[0]
            for c, m in enumerate(mods)
        ]
    )
    seg = None
    if label is not None:
        seg = resample_to_grid(label.array[:1], label.affine, dst_shape, dst_affine, "nearest", 0)[0].astype(
            np.int16
        )
    spacing = np.asarray(cfg.spacing, dtype=np.float64)
    if cfg.crop_foreground:
        mask = compute_body_mask(resampled, mod)
        if seg is not None:
            mask |= seg > 0
        margin = np.ceil(float(cfg.crop_margin_mm) / spacing).astype(int)
        start, stop = _crop_box(mask, margin)
    else:
        start, stop = [0, 0, 0], list(dst_shape)
    norm = normalise_intensity(resampled, mod, cfg)
    box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    norm = np.ascontiguousarray(norm[(slice(None), *box)])
    if seg is not None:
        seg = np.ascontiguousarray(seg[box])
    affine = dst_affine.copy()
    affine[:3, 3] = dst_affine[:3, :3] @ np.asarray(start, dtype=np.float64) + dst_affine[:3, 3]
    meta = {
        "original_shape": list(image.spatial_shape),
        "original_affine": np.asarray(image.affine).tolist(),
        "resampled_shape": list(dst_shape),
        "resampled_affine": dst_affine.tolist(),
        "crop_start": start,
        "crop_stop": stop,
        "spacing": spacing.tolist(),
        "channels": mods,
    }
    return PreprocessedCase(image=norm, label=seg, affine=affine, meta=meta)


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
