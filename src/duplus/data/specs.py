"""Dataset specs: what a dataset is (modality, region, label map) and where its files are.

A :class:`DatasetSpec` is read from any of the layouts researchers already have:

* an MSD ``dataset.json`` (Medical Segmentation Decathlon: ``modality``, ``labels`` keyed by value,
  ``training``/``test`` file lists; an optional top-level ``region`` is ours and MONAI's
  ``load_decathlon_datalist`` ignores it);
* an nnU-Net v2 ``dataset.json`` (``channel_names``, ``labels`` keyed by name, ``file_ending``;
  cases discovered on disk as ``imagesTr/CASE_0000.nii.gz`` (+ ``_0001`` ...) and
  ``labelsTr/CASE.nii.gz``);
* a plain YAML spec (``name``, ``modality``, ``region``, ``labels``, ``images``, ``labels_dir``);
* a dataset folder holding one of the above (or the HECKTOR 2022 layout, read by
  :func:`duplus.data.hecktor.read_hecktor_spec`).

Modality and region make the T1 prompt (:func:`t1_prompt`); the label map (value -> canonical
target name, :mod:`duplus.data.label_space`) makes the T2 prompts.

Conventions:

* ``CaseRecord.images`` is in channel order. For ``PETCT`` the order is always
  :data:`PETCT_CHANNEL_ORDER` (PET first, then CT); readers reorder files whose channel names say
  otherwise.
* A target named ``"<organ> tumour"`` (or ``"<organ> cyst"``) lies inside ``<organ>`` when both
  are labelled (LiTS, KiTS, MSD pancreas): the organ's binary map includes the tumour's voxels,
  as the organ's anatomical extent does. See :attr:`DatasetSpec.target_values`.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duplus.data.label_space import canonical_target, is_known_target
from duplus.errors import InputError
from duplus.fileio import read_json
from duplus.vocab import PETCT_CHANNEL_ORDER, normalise_modality, t1_prompt

logger = logging.getLogger(__name__)

NIFTI_ENDINGS = (".nii.gz", ".nii")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

# files whose presence marks a HECKTOR 2022 folder
_HECKTOR_CSV = "hecktor2022_clinical_info_training.csv"


@dataclass
class CaseRecord:
    """One case of a dataset.

    Attributes:
        case_id: unique within the dataset (file stem without ``.nii.gz`` and channel suffix).
        images: the image file(s) of the case, in channel order (one 3D file per channel, or one
            4D file holding all channels, or a DICOM series folder).
        label: the label map (integer values of :attr:`DatasetSpec.labels`), ``None`` for test cases.
        channel_order: for one multi-channel (4D) file whose channels are not in DuPLUS order
            (e.g. CT before PET), the file's channel indices in DuPLUS order; ``None`` = as stored.
    """

    case_id: str
    images: list[Path]
    label: Path | None = None
    channel_order: list[int] | None = None


@dataclass
class DatasetSpec:
    """A dataset: its identity (modality, region, label map) and its cases.

    Attributes:
        name: dataset name (also the cache folder name).
        modality: one of :data:`MODALITIES`.
        region: body region, e.g. ``"abdomen"``; with ``modality`` it makes the T1 prompt.
        labels: ``{label value: canonical target name}``, background excluded.
        root: the dataset folder; relative paths in the spec resolve against it.
        training: labelled cases.
        test: unlabelled cases.
        citation: the reference to cite for this dataset.
        source: the spec file it was read from (for error messages).
    """

    name: str
    modality: str
    region: str
    labels: dict[int, str]
    root: Path
    training: list[CaseRecord] = field(default_factory=list)
    test: list[CaseRecord] = field(default_factory=list)
    citation: str = ""
    source: Path | None = None

    @property
    def targets(self) -> list[str]:
        """Canonical target names in label-value order (a name given to several values once)."""
        return list(dict.fromkeys(self.labels[v] for v in sorted(self.labels)))

    @property
    def t1_prompt(self) -> str:
        """The dataset's T1 prompt, e.g. ``"A CT scan of the abdomen"``."""
        return t1_prompt(self.modality, self.region)

    @property
    def target_values(self) -> dict[str, list[int]]:
        """``{target: label values whose voxels make that target's binary map}``, in target order.

        See :func:`compute_target_values`."""
        return compute_target_values(self.labels)


def compute_target_values(labels: dict[int, str]) -> dict[str, list[int]]:
    """The label values that make each target's binary map.

    Each target is its own value(s); in addition a target ``"<organ> tumour"`` or ``"<organ> cyst"``
    is added to ``<organ>`` when the dataset labels both (a liver tumour is part of the liver).

    Args:
        labels: ``{label value: canonical target name}`` (background excluded).

    Returns:
        ``{target: sorted label values}`` in label-value order of first appearance.
    """
    out: dict[str, list[int]] = {}
    for value in sorted(labels):
        out.setdefault(labels[value], []).append(int(value))
    for target, values in list(out.items()):
        for suffix in (" tumour", " cyst"):
            if target.endswith(suffix):
                organ = target[: -len(suffix)]
                if organ in out:
                    out[organ] = sorted(set(out[organ]) | set(values))
    return out


# ----------------------------------------------------------------------------------------------
# helpers


def case_id_from_path(path: str | Path) -> str:
    """File name without ``.nii.gz``/``.nii`` (or other final suffix)."""
    name = Path(path).name
    for ending in NIFTI_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def _is_nifti_name(name: str) -> bool:
    return name.lower().endswith(NIFTI_ENDINGS) and not name.startswith(".")


def _resolve_inside(root: Path, rel: Any, source: Path, where: str, *, must_exist: bool = True) -> Path:
    """Resolve a path from a dataset.json against ``root``, refusing paths that leave it."""
    if not isinstance(rel, str) or not rel.strip():
        raise InputError(source, f"{where}: expected a file path, got {rel!r}")
    joined = Path(os.path.normpath(os.path.join(os.path.abspath(root), rel)))
    root_abs = Path(os.path.normpath(os.path.abspath(root)))
    if joined != root_abs and root_abs not in joined.parents:
        raise InputError(source, f"{where}: path '{rel}' points outside the dataset folder {root_abs}")
    if must_exist and not joined.exists():
        raise InputError(source, f"{where}: file '{rel}' not found")
    return joined


def _check_unique(cases: list[CaseRecord], source: Path, split: str) -> None:
    seen: set[str] = set()
    for c in cases:
        if c.case_id in seen:
            raise InputError(source, f"duplicate case id '{c.case_id}' in {split}")
        seen.add(c.case_id)


def _check_labels(labels: dict[int, str], source: Path) -> dict[int, str]:
    if not labels:
        raise InputError(
            source, "no foreground labels: 'labels' must name at least one class besides background"
        )
    out: dict[int, str] = {}
    for value, name in labels.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError(source, f"label {value} has an empty name")
        if value < 0:
            raise InputError(source, f"label value {value} is negative")
        if value == 0:
            continue
        out[int(value)] = canonical_target(name)
    if not out:
        raise InputError(
            source, "no foreground labels: 'labels' must name at least one class besides background"
        )
    dupes = sorted({n for n in out.values() if list(out.values()).count(n) > 1})
    if dupes:
        logger.warning(
            "%s: several label values map to the same target(s) %s; they are merged", source, dupes
        )
    return out


def _parse_int(value: Any, source: Path, where: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise InputError(source, f"{where}: label value {value!r} is not an integer") from None


_TUMOUR_WORDS = frozenset(
    {
        "cancer",
        "tumour",
        "tumor",
        "tumours",
        "tumors",
        "lesion",
        "mass",
        "cancer primaries",
        "colon cancer primaries",
    }
)


def _qualify_generic(labels: dict[int, str], registered: Any) -> dict[int, str]:
    """Name generic classes as the registry does: MSD's ``"cancer"`` in Task03 is the liver
    tumour, ``"vessel"`` in Task08 the hepatic vessel, ``"anterior"`` in Task04 the anterior
    hippocampus. Known target names are kept; a generic name is only replaced by a registry name of
    the same kind (a tumour word by a tumour, otherwise a name containing the word)."""
    if registered is None:
        return labels
    out = dict(labels)
    for value, name in labels.items():
        reg_name = registered.labels.get(value)
        if reg_name is None or reg_name == name:
            continue
        if name in _TUMOUR_WORDS:
            compatible = reg_name.endswith("tumour") or reg_name == "lesion"
        else:
            compatible = not is_known_target(name) and name in reg_name.split()
        if compatible:
            logger.info(
                "label %d '%s' read as '%s' (registry entry %s)", value, name, reg_name, registered.name
            )
            out[value] = reg_name
    return out


def _lookup_registered(name: str | None) -> Any:
    if not name:
        return None
    from duplus.data.registry import find_registered

    return find_registered(name)


def _resolve_identity(
    source: Path,
    file_name: str | None,
    file_modality: str | None,
    file_region: str | None,
    *,
    name: str | None,
    modality: str | None,
    region: str | None,
    default_name: str,
) -> tuple[str, str, str, Any]:
    """Name, modality and region: explicit arguments first, then the file, then the registry."""
    ds_name = name or file_name or default_name
    registered = _lookup_registered(ds_name) or _lookup_registered(default_name)
    if modality is not None:
        mod = normalise_modality(modality, "modality option")
    elif file_modality is not None:
        mod = normalise_modality(file_modality, source)
    elif registered is not None:
        mod = registered.modality
    else:
        raise InputError(source, "no modality given; add 'modality:' to the spec or pass modality=")
    reg = region or file_region or (registered.region if registered is not None else None)
    if not reg or not str(reg).strip():
        raise InputError(
            source, "no body region given; add 'region:' (e.g. 'abdomen') to the spec or pass region="
        )
    return str(ds_name), mod, str(reg).strip(), registered


def _modality_from_channels(channels: dict[str, str], source: Path) -> tuple[str, list[int]]:
    """The dataset modality from per-channel names, and the channel order to use (PET before CT)."""
    order = sorted(channels, key=int)
    mods = [normalise_modality(channels[k], source) for k in order]
    if len(mods) == 1:
        return mods[0], [0]
    if sorted(mods) == ["CT", "PET"]:
        return "PETCT", [mods.index(m) for m in PETCT_CHANNEL_ORDER]
    if all(m == "MRI" for m in mods):
        return "MRI", list(range(len(mods)))
    if len(set(mods)) == 1:
        return mods[0], list(range(len(mods)))
    raise InputError(source, f"unsupported channel combination {mods}; DuPLUS reads CT, MRI, PET or PET+CT")


def _check_json_object(data: Any, source: Path) -> dict:
    if not isinstance(data, dict):
        raise InputError(source, "expected a JSON object at the top level")
    return data


# ----------------------------------------------------------------------------------------------
# MSD


def _read_msd(
    path: Path, data: dict, *, name: str | None, modality: str | None, region: str | None
) -> DatasetSpec:
    root = path.parent
    for key in ("labels", "training"):
        if key not in data:
            raise InputError(path, f"missing required field '{key}'")
    if not isinstance(data["labels"], dict):
        raise InputError(path, '\'labels\' must be an object {"value": "name"}')
    raw_labels = {_parse_int(k, path, "labels"): v for k, v in data["labels"].items()}
    labels = _check_labels(raw_labels, path)
    file_mod = None
    order = None
    mod_field = data.get("modality")
    if mod_field is not None:
        if isinstance(mod_field, dict) and mod_field:
            try:
                file_mod, order = _modality_from_channels(
                    {str(k): str(v) for k, v in mod_field.items()}, path
                )
            except InputError:
                if modality is None:
                    raise
        elif isinstance(mod_field, str):
            file_mod = mod_field
        else:
            raise InputError(path, '\'modality\' must be an object {"0": "CT"}')
    ds_name, mod, reg, registered = _resolve_identity(
        path,
        data.get("name"),
        file_mod,
        data.get("region"),
        name=name,
        modality=modality,
        region=region,
        default_name=root.name,
    )
    labels = _qualify_generic(labels, registered)

    reorder = order is not None and order != list(range(len(order)))

    def images_of(item: Any, where: str, must_exist: bool) -> tuple[list[Path], list[int] | None]:
        items = item if isinstance(item, list) else [item]
        if not items:
            raise InputError(path, f"{where}: empty image list")
        paths = [_resolve_inside(root, p, path, where, must_exist=must_exist) for p in items]
        if reorder and order is not None:
            if len(paths) == len(order):
                return [paths[i] for i in order], None
            if len(paths) == 1:
                return paths, list(order)
        return paths, None

    if not isinstance(data["training"], list):
        raise InputError(path, '\'training\' must be a list of {"image": ..., "label": ...}')
    training: list[CaseRecord] = []
    for i, item in enumerate(data["training"]):
        where = f"training[{i}]"
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise InputError(path, f"{where}: expected an object with 'image' and 'label'")
        imgs, chan = images_of(item["image"], f"{where}.image", True)
        lab = _resolve_inside(root, item["label"], path, f"{where}.label")
        training.append(
            CaseRecord(case_id=case_id_from_path(imgs[0]), images=imgs, label=lab, channel_order=chan)
        )
    test: list[CaseRecord] = []
    raw_test = data.get("test", [])
    if not isinstance(raw_test, list):
        raise InputError(path, "'test' must be a list of image paths")
    for i, item in enumerate(raw_test):
        where = f"test[{i}]"
        entry = item["image"] if isinstance(item, dict) and "image" in item else item
        imgs, chan = images_of(entry, where, False)
        if not all(p.exists() for p in imgs):
            logger.warning("%s: %s: test image %s not found; skipped", path, where, entry)
            continue
        test.append(
            CaseRecord(case_id=case_id_from_path(imgs[0]), images=imgs, label=None, channel_order=chan)
        )
    _check_unique(training, path, "training")
    _check_unique(test, path, "test")
    num = data.get("numTraining")
    if isinstance(num, int) and num != len(training):
        logger.warning("%s: numTraining is %d but 'training' lists %d cases", path, num, len(training))
    return DatasetSpec(
        name=ds_name,
        modality=mod,
        region=reg,
        labels=labels,
        root=root,
        training=training,
        test=test,
        citation=str(data.get("reference", "") or (registered.citation if registered else "")),
        source=path,
    )


# ----------------------------------------------------------------------------------------------
# nnU-Net v2


def _group_channels(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``{case: {channel: file}}`` from ``CASE_XXXX<ending>`` files in ``folder``."""
    cases: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        return cases
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(ending) or not f.is_file():
            continue
        stem = f.name[: -len(ending)]
        m = _CHANNEL_SUFFIX.match(stem)
        if m is None:
            continue
        cases.setdefault(m.group("case"), {})[int(m.group("channel"))] = f
    return cases


def _read_nnunet(
    path: Path, data: dict, *, name: str | None, modality: str | None, region: str | None
) -> DatasetSpec:
    root = path.parent
    for key in ("channel_names", "labels", "file_ending"):
        if key not in data:
            raise InputError(path, f"missing required field '{key}'")
    channels = data["channel_names"]
    if not isinstance(channels, dict) or not channels:
        raise InputError(path, '\'channel_names\' must be an object {"0": "CT"}')
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
    labels = _check_labels(raw_labels, path)
    ending = str(data["file_ending"])
    try:
        file_mod, order = _modality_from_channels({str(k): str(v) for k, v in channels.items()}, path)
    except InputError:
        if modality is None:
            raise
        file_mod, order = modality, list(range(len(channels)))
    ds_name, mod, reg, registered = _resolve_identity(
        path,
        data.get("name"),
        file_mod,
        data.get("region"),
        name=name,
        modality=modality,
        region=region,
        default_name=root.name,
    )
    labels = _qualify_generic(labels, registered)
    n_ch = len(channels)

    def build(folder: str, label_folder: str | None) -> list[CaseRecord]:
        groups = _group_channels(root / folder, ending)
        out: list[CaseRecord] = []
        for case, chans in sorted(groups.items()):
            missing = [c for c in range(n_ch) if c not in chans]
            if missing:
                raise InputError(
                    path,
                    f"case '{case}' in {folder} lacks channel(s) {missing} ({case}_{missing[0]:04d}{ending})",
                )
            imgs = [chans[c] for c in range(n_ch)]
            imgs = [imgs[i] for i in order]
            lab = None
            if label_folder is not None:
                lab = root / label_folder / f"{case}{ending}"
                if not lab.is_file():
                    raise InputError(
                        path, f"case '{case}': label file {label_folder}/{case}{ending} not found"
                    )
            out.append(CaseRecord(case_id=case, images=imgs, label=lab))
        return out

    if isinstance(data.get("dataset"), dict):
        training = []
        for case, entry in data["dataset"].items():
            where = f"dataset.{case}"
            if not isinstance(entry, dict) or "images" not in entry or "label" not in entry:
                raise InputError(path, f"{where}: expected an object with 'images' and 'label'")
            imgs = [_resolve_inside(root, p, path, f"{where}.images") for p in entry["images"]]
            imgs = [imgs[i] for i in order] if len(imgs) == len(order) else imgs
            training.append(
                CaseRecord(
                    case_id=str(case),
                    images=imgs,
                    label=_resolve_inside(root, entry["label"], path, f"{where}.label"),
                )
            )
    else:
        training = build("imagesTr", "labelsTr")
    if not training:
        raise InputError(path, f"no training cases found as imagesTr/CASE_0000{ending}")
    test = build("imagesTs", None)
    _check_unique(training, path, "training")
    num = data.get("numTraining")
    if isinstance(num, int) and num != len(training):
        logger.warning("%s: numTraining is %d but %d cases were found", path, num, len(training))
    return DatasetSpec(
        name=ds_name,
        modality=mod,
        region=reg,
        labels=labels,
        root=root,
        training=training,
        test=test,
        citation=str(data.get("reference", "") or (registered.citation if registered else "")),
        source=path,
    )


# ----------------------------------------------------------------------------------------------
# YAML


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
        m = _CHANNEL_SUFFIX.match(stem)
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
    import yaml

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


# ----------------------------------------------------------------------------------------------
# dispatch


def _is_hecktor_folder(folder: Path) -> bool:
    """A HECKTOR 2022 folder, or a folder holding one (its clinical CSV or ``*__CT.nii.gz`` images)."""
    patterns = (_HECKTOR_CSV, f"*/{_HECKTOR_CSV}", "*__CT.nii.gz", "*/*__CT.nii.gz", "*/*/*__CT.nii.gz")
    return any(any(folder.glob(p)) for p in patterns)


def load_dataset_spec(
    path: str | Path,
    *,
    modality: str | None = None,
    region: str | None = None,
    name: str | None = None,
) -> DatasetSpec:
    """Read a dataset spec from an MSD or nnU-Net v2 ``dataset.json``, a YAML spec, or a folder.

    Explicit ``modality``/``region``/``name`` arguments override the file; a region missing from
    both comes from the registry entry of the dataset name (:mod:`duplus.data.registry`).

    Args:
        path: ``dataset.json``, a ``.yaml``/``.yml`` spec, or a folder holding ``dataset.json``
            (or a HECKTOR 2022 folder).
        modality: override the modality (any spelling :func:`normalise_modality` accepts).
        region: the body region for the T1 prompt.
        name: override the dataset name.

    Raises:
        InputError: naming the spec file: missing fields, empty label names, paths outside the
            dataset folder, missing files, duplicate case ids, unknown modality.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "dataset spec not found")
    if path.is_dir():
        if (path / "dataset.json").is_file():
            path = path / "dataset.json"
        elif _is_hecktor_folder(path):
            try:
                from duplus.data.hecktor import read_hecktor_spec  # type: ignore[import-not-found,unused-ignore]
            except ImportError as exc:
                raise InputError(
                    path, f"HECKTOR 2022 folder, but the HECKTOR reader is unavailable ({exc})"
                ) from exc
            spec = read_hecktor_spec(path)
            if name:
                spec.name = name
            if region:
                spec.region = region
            return spec
        else:
            yamls = sorted(list(path.glob("dataset.yaml")) + list(path.glob("dataset.yml")))
            if not yamls:
                raise InputError(path, "folder holds no dataset.json, dataset.yaml or HECKTOR 2022 files")
            path = yamls[0]
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _read_yaml(path, name=name, modality=modality, region=region)
    if suffix != ".json":
        raise InputError(
            path, "unsupported dataset spec; expected dataset.json, a .yaml spec or a dataset folder"
        )
    data = _check_json_object(read_json(path), path)
    if "channel_names" in data or "file_ending" in data:
        return _read_nnunet(path, data, name=name, modality=modality, region=region)
    return _read_msd(path, data, name=name, modality=modality, region=region)
