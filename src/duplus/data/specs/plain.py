"""Reader of the plain YAML spec for image/label folders (``name``, ``modality``, ``region``,
``labels``, ``images``, ``labels_dir``)."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import yaml

from duplus.data.specs.common import (
    CHANNEL_SUFFIX,
    _check_labels,
    _check_unique,
    _is_nifti_name,
    _parse_int,
    _qualify_generic,
    _resolve_identity,
)
from duplus.data.specs.model import CaseRecord, DatasetSpec, case_id_from_path
from duplus.errors import InputError

logger = logging.getLogger(__name__)


def _list_images(root: Path, pattern: str, source: Path, key: str) -> list[Path]:
    p = Path(pattern) if Path(pattern).is_absolute() else root / pattern
    if p.is_dir():
        files = [f for f in sorted(p.iterdir()) if f.is_file() and _is_nifti_name(f.name)]
    elif any(ch in pattern for ch in "*?["):
        files = [Path(f) for f in sorted(glob.glob(str(p))) if _is_nifti_name(Path(f).name)]
    else:
        raise InputError(source, f"{key}: '{pattern}' is neither a folder nor a glob pattern")
    if not files:
        raise InputError(source, f"{key}: no .nii/.nii.gz files found at '{pattern}'")
    return files


def _group_by_case(files: list[Path], label_ids: set[str] | None) -> dict[str, list[Path]]:
    """Group image files into cases, channel suffixes ``_0000``, ``_0001`` ... giving the order.

    A ``_XXXX`` suffix is read as a channel only when that is unambiguous: the stripped id is a
    label's case id (and the full stem is not), or, without labels, every file has a suffix and
    every case has channels ``0..n-1``.
    """
    stems = [(case_id_from_path(f), f) for f in files]
    groups: dict[str, dict[int, Path]] = {}

    def channel_split(stem: str) -> tuple[str, int] | None:
        m = CHANNEL_SUFFIX.match(stem)
        return (m.group("case"), int(m.group("channel"))) if m else None

    if label_ids is not None:
        for stem, f in stems:
            split = channel_split(stem)
            if stem not in label_ids and split is not None and split[0] in label_ids:
                groups.setdefault(split[0], {})[split[1]] = f
            else:
                groups.setdefault(stem, {})[0] = f
    else:
        splits = [channel_split(s) for s, _ in stems]
        tentative: dict[str, dict[int, Path]] = {}
        for sp, (_, f) in zip(splits, stems, strict=True):
            if sp is not None:
                tentative.setdefault(sp[0], {})[sp[1]] = f
        consistent = all(sp is not None for sp in splits) and all(
            sorted(ch) == list(range(len(ch))) for ch in tentative.values()
        )
        if consistent:
            groups = tentative
        else:
            groups = {stem: {0: f} for stem, f in stems}
    out: dict[str, list[Path]] = {}
    for case, chans in groups.items():
        out[case] = [chans[c] for c in sorted(chans)]
    return out


def _read_yaml(path: Path, *, name: str | None, modality: str | None, region: str | None) -> DatasetSpec:

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(path, f"invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping at the top level")
    allowed = {
        "name",
        "modality",
        "region",
        "labels",
        "images",
        "labels_dir",
        "test_images",
        "root",
        "citation",
    }
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(path, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    for key in ("labels", "images", "labels_dir"):
        if key not in data:
            raise InputError(path, f"missing required field '{key}'")
    if not isinstance(data["labels"], dict):
        raise InputError(path, "'labels' must be a mapping {1: liver, 2: spleen}")
    raw = {_parse_int(k, path, "labels"): v for k, v in data["labels"].items()}
    labels = _check_labels(raw, path)
    root = Path(str(data.get("root", "."))) if data.get("root") is not None else Path(".")
    root = root if root.is_absolute() else (path.parent / root)
    root = Path(os.path.normpath(root))
    ds_name, mod, reg, registered = _resolve_identity(
        path,
        data.get("name"),
        data.get("modality"),
        data.get("region"),
        name=name,
        modality=modality,
        region=region,
        default_name=path.stem,
    )
    image_files = _list_images(root, str(data["images"]), path, "images")
    label_dir = Path(str(data["labels_dir"]))
    label_dir = label_dir if label_dir.is_absolute() else root / label_dir
    if not label_dir.is_dir():
        raise InputError(path, f"labels_dir: folder '{data['labels_dir']}' not found")
    label_files = {
        case_id_from_path(f): f for f in sorted(label_dir.iterdir()) if f.is_file() and _is_nifti_name(f.name)
    }
    groups = _group_by_case(image_files, set(label_files))
    training = []
    for case, imgs in sorted(groups.items()):
        if case not in label_files:
            raise InputError(path, f"case '{case}' ({imgs[0].name}) has no label file in {label_dir}")
        training.append(CaseRecord(case_id=case, images=imgs, label=label_files[case]))
    unused = sorted(set(label_files) - set(groups))
    if unused:
        logger.warning("%s: %d label file(s) without an image, e.g. %s", path, len(unused), unused[0])
    test: list[CaseRecord] = []
    if data.get("test_images"):
        tgroups = _group_by_case(_list_images(root, str(data["test_images"]), path, "test_images"), None)
        test = [CaseRecord(case_id=c, images=imgs, label=None) for c, imgs in sorted(tgroups.items())]
    _check_unique(training, path, "training")
    return DatasetSpec(
        name=ds_name,
        modality=mod,
        region=reg,
        labels=_qualify_generic(labels, registered),
        root=root,
        training=training,
        test=test,
        citation=str(data.get("citation", "") or (registered.citation if registered else "")),
        source=path,
    )
