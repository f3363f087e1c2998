"""Checks and identity resolution shared by the dataset readers."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from duplus.data.label_space import canonical_target, is_known_target
from duplus.data.specs.model import NIFTI_ENDINGS, CaseRecord
from duplus.errors import InputError
from duplus.vocab import PETCT_CHANNEL_ORDER, normalise_modality

logger = logging.getLogger(__name__)

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


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
