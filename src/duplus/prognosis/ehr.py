"""Electronic health records as text: one sentence per field, missing values written as "unknown".

A record ``{"Age": 63, "Gender": "M", "HPV status (0=-, 1=+)": 1, "Tobacco": NaN}`` becomes
``"Age: 63 years. Sex: male. HPV status: positive. Tobacco: unknown."`` with the HECKTOR preset.
Missing values are never dropped: the text encoder should see that a field is unknown, and every
record of a cohort lists the same fields in the same order.

The :class:`EHRTemplate` is saved with every prognosis run (YAML or JSON) so that prediction
serialises records exactly as training did.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from duplus.config import from_dict, to_dict
from duplus.errors import ConfigError, InputError
from duplus.fileio import write_text_atomic

__all__ = [
    "EHRTemplate",
    "hecktor_template",
    "is_missing",
    "category_key",
    "record_to_text",
    "records_to_texts",
    "resolve_columns",
    "save_template",
    "load_template",
]

logger = logging.getLogger(__name__)

DEFAULT_EXCLUDE = ["id", "time", "event", "PatientID", "RFS", "Relapse"]
_MISSING_STRINGS = {"", "na", "n/a", "nan", "none", "null"}


@dataclass
class EHRTemplate:
    """How a clinical record is written as text.

    Attributes:
        columns: fields to write, in order; ``None`` = every column except ``exclude``.
        rename: display name per column (``{"Gender": "Sex"}``).
        units: unit per numeric column (``{"Age": "years"}``); a column with a unit is numeric.
        categorical_maps: value -> words per column (``{"Gender": {"M": "male", "F": "female"}}``).
            Keys are strings; integral numbers match their integer spelling (``1.0`` -> ``"1"``).
        numeric: further columns whose values must be numbers (beside those with ``units``).
        exclude: columns never written when ``columns`` is ``None`` (ids, survival time, event).
        missing: the word for a missing value.
        float_digits: decimals of numeric values.
        separator: between fields; the text ends with the separator's punctuation.
        text_columns: free-text columns (clinical notes): written into the record text when the
            table has them (also beside an explicit ``columns`` list), never one-hot encoded.
        max_chars: a longer value (free-text notes) is cut to this many characters (logged); the
            text encoder reads at most ``max_length`` tokens of the whole record anyway.
    """

    columns: list[str] | None = None
    rename: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    categorical_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    numeric: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    missing: str = "unknown"
    float_digits: int = 0
    separator: str = ". "
    text_columns: list[str] = field(default_factory=lambda: ["Notes", "Clinical notes", "notes"])
    max_chars: int = 2000

    def __post_init__(self) -> None:
        if self.float_digits < 0:
            raise ValueError(f"float_digits must be >= 0, got {self.float_digits}")
        self.categorical_maps = {
            str(col): {category_key(k): str(v) for k, v in mapping.items()}
            for col, mapping in self.categorical_maps.items()
        }

    @property
    def numeric_columns(self) -> set[str]:
        """Columns whose values must be numbers."""
        return set(self.numeric) | set(self.units)


def hecktor_template() -> EHRTemplate:
    """The preset for the HECKTOR 2022 clinical table (``hecktor2022_clinical_info_*.csv``).

    Writes age, sex, weight, tobacco, alcohol, performance status, HPV status, surgery and
    chemotherapy; leaves out the centre (a site, not a patient property) and the task flags.
    """
    yes_no = {"0": "no", "1": "yes"}
    return EHRTemplate(
        columns=[
            "Age",
            "Gender",
            "Weight",
            "Tobacco",
            "Alcohol",
            "Performance status",
            "HPV status (0=-, 1=+)",
            "Surgery",
            "Chemotherapy",
        ],
        rename={"Gender": "Sex", "HPV status (0=-, 1=+)": "HPV status"},
        units={"Age": "years", "Weight": "kg"},
        categorical_maps={
            "Gender": {"M": "male", "F": "female"},
            "HPV status (0=-, 1=+)": {"0": "negative", "1": "positive"},
            "Tobacco": dict(yes_no),
            "Alcohol": dict(yes_no),
            "Surgery": dict(yes_no),
            "Chemotherapy": dict(yes_no),
        },
        numeric=["Performance status"],
    )


def category_key(value: Any) -> str:
    """The string key of a categorical value: integral numbers lose their ``.0``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        return str(int(float(value)))
    return str(value).strip()


def is_missing(value: Any) -> bool:
    """``None``, NaN, and empty or ``NA``-like strings are missing."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_STRINGS
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return math.isnan(float(value))
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _format_number(x: float, digits: int) -> str:
    return str(int(round(x))) if digits == 0 else f"{x:.{digits}f}"


def resolve_columns(available: Iterable[str], template: EHRTemplate) -> list[str]:
    """The fields a template writes for a table with columns ``available``."""
    if template.columns is not None:
        present = set(available)
        return list(template.columns) + [
            c for c in template.text_columns if c in present and c not in template.columns
        ]
    exclude = set(template.exclude)
    return [c for c in available if c not in exclude]


def record_to_text(
    row: Mapping[str, Any],
    template: EHRTemplate,
    *,
    source: str | Path | None = None,
    row_label: str | None = None,
) -> str:
    """Serialise one clinical record.

    Args:
        row: column -> value (a ``dict`` or a pandas row); absent columns count as missing.
        template: how to write it.
        source: the CSV the row came from, for error messages.
        row_label: which row, for error messages (e.g. ``"row 3 (PatientID CHUP-003)"``).

    Raises:
        InputError: a value in a numeric column is not a number (names ``source``, row and column).
    """
    parts = []
    numeric = template.numeric_columns
    for col in resolve_columns(row.keys(), template):
        name = template.rename.get(col, col)
        value = row.get(col)
        if is_missing(value):
            parts.append(f"{name}: {template.missing}")
            continue
        if col in numeric:
            x = _to_number(value)
            if x is None or not math.isfinite(x):
                where = f"{row_label}, " if row_label else ""
                raise InputError(source, f"{where}column '{col}': expected a number, got {value!r}")
            text = _format_number(x, template.float_digits)
            unit = template.units.get(col)
            parts.append(f"{name}: {text} {unit}" if unit else f"{name}: {text}")
            continue
        mapping = template.categorical_maps.get(col)
        key = category_key(value)
        text = mapping.get(key, key) if mapping else key
        if len(text) > template.max_chars:
            text = text[: template.max_chars].rstrip() + "..."
        if col in template.text_columns:
            text = text.strip().rstrip(".")  # the separator ends the sentence
        parts.append(f"{name}: {text}")
    end = template.separator.strip()
    return template.separator.join(parts) + end


def records_to_texts(
    df: pd.DataFrame,
    template: EHRTemplate,
    *,
    source: str | Path | None = None,
    id_col: str = "id",
) -> list[str]:
    """Serialise every row of a clinical table (see :func:`record_to_text`).

    ``source`` defaults to ``df.attrs["source"]`` (set by the readers in :mod:`duplus.data.hecktor`).
    Rows are numbered from 1 as in a spreadsheet without its header.
    """
    if source is None:
        source = df.attrs.get("source")
    if template.columns is not None:
        absent = [c for c in template.columns if c not in df.columns]
        if absent:  # a missing *value* is written as "unknown"; a missing *column* is a schema error
            raise InputError(
                source,
                f"missing clinical column(s) {', '.join(absent)} named by the EHR template "
                f"(columns present: {', '.join(map(str, df.columns))})",
            )
    unmapped: dict[str, set[str]] = {}
    for col in resolve_columns(df.columns, template):
        if col in df and df[col].astype(str).str.len().max() > template.max_chars:
            logger.info(
                "EHR column '%s': values over %d characters are cut to that length", col, template.max_chars
            )
    texts = []
    for i, (_, row) in enumerate(df.iterrows(), start=1):
        label = f"row {i}" + (f" ({id_col} {row[id_col]})" if id_col in df.columns else "")
        texts.append(record_to_text(row.to_dict(), template, source=source, row_label=label))
        for col, mapping in template.categorical_maps.items():
            if col in row.index and not is_missing(row[col]) and category_key(row[col]) not in mapping:
                unmapped.setdefault(col, set()).add(category_key(row[col]))
    for col, values in unmapped.items():
        logger.info("EHR column '%s': value(s) %s have no mapping; written as they are", col, sorted(values))
    return texts


def _normalise_keys(data: dict) -> dict:
    data = dict(data)
    maps = data.get("categorical_maps")
    if isinstance(maps, dict):
        data["categorical_maps"] = {
            str(c): ({category_key(k): v for k, v in m.items()} if isinstance(m, dict) else m)
            for c, m in maps.items()
        }
    return data


def template_from_dict(data: dict, where: str = "ehr_template") -> EHRTemplate:
    """Build a template from a plain mapping (strict keys; categorical keys may be numbers)."""
    return from_dict(EHRTemplate, _normalise_keys(data), where)


def save_template(template: EHRTemplate, path: str | Path) -> None:
    """Write the template as YAML (``.yaml``/``.yml``) or JSON (any other suffix), atomically."""
    path = Path(path)
    data = to_dict(template)
    if path.suffix.lower() in (".yaml", ".yml"):
        write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def load_template(path: str | Path) -> EHRTemplate:
    """Read a template saved by :func:`save_template` (YAML or JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: EHR template not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML/JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return template_from_dict(data, where=str(path))
