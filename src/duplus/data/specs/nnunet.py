"""Reader of the nnU-Net v2 ``dataset.json`` (``channel_names``, ``labels`` keyed by name,
``file_ending``; cases discovered on disk as ``imagesTr/CASE_0000.nii.gz`` and ``labelsTr/CASE.nii.gz``)."""

from __future__ import annotations

import logging
from pathlib import Path

from duplus.data.specs.common import (
    CHANNEL_SUFFIX,
    _check_labels,
    _check_unique,
    _modality_from_channels,
    _parse_int,
    _qualify_generic,
    _resolve_identity,
    _resolve_inside,
)
from duplus.data.specs.model import CaseRecord, DatasetSpec
from duplus.errors import InputError

logger = logging.getLogger(__name__)


def _group_channels(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``{case: {channel: file}}`` from ``CASE_XXXX<ending>`` files in ``folder``."""
    cases: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        return cases
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(ending) or not f.is_file():
            continue
        stem = f.name[: -len(ending)]
        m = CHANNEL_SUFFIX.match(stem)
        if m is None:
            continue
        cases.setdefault(m.group("case"), {})[int(m.group("channel"))] = f
    return cases


def _nnunet_labels(data: dict, path: Path) -> dict[int, str]:
    """``{value: name}`` from nnU-Net's ``labels`` (name -> value); region-based labels are refused."""
    if not isinstance(data["labels"], dict):
        raise InputError(path, "'labels' must be an object {\"name\": value}")
    raw_labels: dict[int, str] = {}
    for lname, value in data["labels"].items():
        if isinstance(value, list):
            if len(value) != 1:
                raise InputError(
                    path,
                    f"region-based label '{lname}' = {value} is not supported; give each class one label value",
                )
            value = value[0]
        raw_labels[_parse_int(value, path, f"labels.{lname}")] = lname
    return _check_labels(raw_labels, path)


def _cases_on_disk(
    path: Path, folder: str, label_folder: str | None, ending: str, order: list[int]
) -> list[CaseRecord]:
    """Cases found as ``folder/CASE_XXXX<ending>`` (channels in ``order``) with their labels."""
    root = path.parent
    out: list[CaseRecord] = []
    for case, chans in sorted(_group_channels(root / folder, ending).items()):
        missing = [c for c in range(len(order)) if c not in chans]
        if missing:
            raise InputError(
                path,
                f"case '{case}' in {folder} lacks channel(s) {missing} ({case}_{missing[0]:04d}{ending})",
            )
        imgs = [chans[c] for c in order]
        lab = None
        if label_folder is not None:
            lab = root / label_folder / f"{case}{ending}"
            if not lab.is_file():
                raise InputError(path, f"case '{case}': label file {label_folder}/{case}{ending} not found")
        out.append(CaseRecord(case_id=case, images=imgs, label=lab))
    return out


def _cases_listed(path: Path, dataset: dict, order: list[int]) -> list[CaseRecord]:
    """Cases listed in the ``dataset`` field (nnU-Net's optional explicit file list)."""
    root = path.parent
    training = []
    for case, entry in dataset.items():
        where = f"dataset.{case}"
        if not isinstance(entry, dict) or "images" not in entry or "label" not in entry:
            raise InputError(path, f"{where}: expected an object with 'images' and 'label'")
        imgs = [_resolve_inside(root, p, path, f"{where}.images") for p in entry["images"]]
        imgs = [imgs[i] for i in order] if len(imgs) == len(order) else imgs
        label = _resolve_inside(root, entry["label"], path, f"{where}.label")
        training.append(CaseRecord(case_id=str(case), images=imgs, label=label))
    return training


def _read_nnunet(
    path: Path, data: dict, *, name: str | None, modality: str | None, region: str | None
) -> DatasetSpec:
    for key in ("channel_names", "labels", "file_ending"):
        if key not in data:
            raise InputError(path, f"missing required field '{key}'")
    channels = data["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise InputError(path, '\'channel_names\' must be an object {"0": "CT"}')
    labels = _nnunet_labels(data, path)
    ending = str(data["file_ending"])
    try:
        file_mod, order = _modality_from_channels({str(k): str(v) for k, v in channels.items()}, path)
    except InputError:
        if modality is None:
            raise
        file_mod, order = modality, list(range(len(channels)))
    ds_name, mod, reg, registered = _resolve_identity(
        path, data.get("name"), file_mod, data.get("region"), name=name, modality=modality, region=region,
        default_name=path.parent.name,
    )  # fmt: skip
    if isinstance(data.get("dataset"), dict):
        training = _cases_listed(path, data["dataset"], order)
    else:
        training = _cases_on_disk(path, "imagesTr", "labelsTr", ending, order)
    if not training:
        raise InputError(path, f"no training cases found as imagesTr/CASE_0000{ending}")
    _check_unique(training, path, "training")
    num = data.get("numTraining")
    if isinstance(num, int) and num != len(training):
        logger.warning("%s: numTraining is %d but %d cases were found", path, num, len(training))
    return DatasetSpec(
        name=ds_name,
        modality=mod,
        region=reg,
        labels=_qualify_generic(labels, registered),
        root=path.parent,
        training=training,
        test=_cases_on_disk(path, "imagesTs", None, ending, order),
        citation=str(data.get("reference", "") or (registered.citation if registered else "")),
        source=path,
    )
