"""Reader of the Medical Segmentation Decathlon ``dataset.json`` (``labels`` keyed by value,
``modality`` by channel, ``training``/``test`` file lists; an optional top-level ``region`` is ours)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from duplus.data.specs.common import (
    _check_labels,
    _check_unique,
    _modality_from_channels,
    _parse_int,
    _qualify_generic,
    _resolve_identity,
    _resolve_inside,
)
from duplus.data.specs.model import CaseRecord, DatasetSpec, case_id_from_path
from duplus.errors import InputError

logger = logging.getLogger(__name__)


def _msd_modality(data: dict, path: Path, modality: str | None) -> tuple[str | None, list[int] | None]:
    """The modality the file names and the channel order it implies (``None`` when it needs none)."""
    mod_field = data.get("modality")
    if mod_field is None:
        return None, None
    if isinstance(mod_field, str):
        return mod_field, None
    if not isinstance(mod_field, dict) or not mod_field:
        raise InputError(path, '\'modality\' must be an object {"0": "CT"}')
    try:
        file_mod, order = _modality_from_channels({str(k): str(v) for k, v in mod_field.items()}, path)
    except InputError:
        if modality is None:
            raise
        return None, None
    return file_mod, order if order != list(range(len(order))) else None


def _images_of(
    path: Path, item: Any, where: str, must_exist: bool, order: list[int] | None
) -> tuple[list[Path], list[int] | None]:
    """A case's image files in channel order, or one 4D file and the order of its channels."""
    items = item if isinstance(item, list) else [item]
    if not items:
        raise InputError(path, f"{where}: empty image list")
    paths = [_resolve_inside(path.parent, p, path, where, must_exist=must_exist) for p in items]
    if order is not None and len(paths) == len(order):
        return [paths[i] for i in order], None
    if order is not None and len(paths) == 1:
        return paths, list(order)
    return paths, None


def _msd_cases(path: Path, data: dict, order: list[int] | None) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """The training cases (image + label) and the test cases that exist on disk."""
    if not isinstance(data["training"], list):
        raise InputError(path, '\'training\' must be a list of {"image": ..., "label": ...}')
    training: list[CaseRecord] = []
    for i, item in enumerate(data["training"]):
        where = f"training[{i}]"
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise InputError(path, f"{where}: expected an object with 'image' and 'label'")
        imgs, chan = _images_of(path, item["image"], f"{where}.image", True, order)
        lab = _resolve_inside(path.parent, item["label"], path, f"{where}.label")
        training.append(
            CaseRecord(case_id=case_id_from_path(imgs[0]), images=imgs, label=lab, channel_order=chan)
        )
    raw_test = data.get("test", [])
    if not isinstance(raw_test, list):
        raise InputError(path, "'test' must be a list of image paths")
    test: list[CaseRecord] = []
    for i, item in enumerate(raw_test):
        entry = item["image"] if isinstance(item, dict) and "image" in item else item
        imgs, chan = _images_of(path, entry, f"test[{i}]", False, order)
        if not all(p.exists() for p in imgs):
            logger.warning("%s: test[%d]: test image %s not found; skipped", path, i, entry)
            continue
        test.append(
            CaseRecord(case_id=case_id_from_path(imgs[0]), images=imgs, label=None, channel_order=chan)
        )
    return training, test


def _read_msd(
    path: Path, data: dict, *, name: str | None, modality: str | None, region: str | None
) -> DatasetSpec:
    for key in ("labels", "training"):
        if key not in data:
            raise InputError(path, f"missing required field '{key}'")
    if not isinstance(data["labels"], dict):
        raise InputError(path, '\'labels\' must be an object {"value": "name"}')
    labels = _check_labels({_parse_int(k, path, "labels"): v for k, v in data["labels"].items()}, path)
    file_mod, order = _msd_modality(data, path, modality)
    ds_name, mod, reg, registered = _resolve_identity(
        path, data.get("name"), file_mod, data.get("region"), name=name, modality=modality, region=region,
        default_name=path.parent.name,
    )  # fmt: skip
    training, test = _msd_cases(path, data, order)
    _check_unique(training, path, "training")
    _check_unique(test, path, "test")
    num = data.get("numTraining")
    if isinstance(num, int) and num != len(training):
        logger.warning("%s: numTraining is %d but 'training' lists %d cases", path, num, len(training))
    return DatasetSpec(
        name=ds_name,
        modality=mod,
        region=reg,
        labels=_qualify_generic(labels, registered),
        root=path.parent,
        training=training,
        test=test,
        citation=str(data.get("reference", "") or (registered.citation if registered else "")),
        source=path,
    )
