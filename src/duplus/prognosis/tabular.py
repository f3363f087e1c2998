"""The structured half of an EHR: clinical columns as numbers, fitted on the training patients only.

:class:`TabularEncoder` learns from a training table which columns are numeric (all present values
are numbers, or the EHR template says so) and which are categorical, then turns any table of the
same cohort into a standardised design matrix:

* numeric: parsed, missing values replaced by the training median, a ``<col> missing`` indicator
  when the training patients have gaps, then centred and scaled by the training mean and sd;
* categorical: one-hot, one column per training level except the most frequent (missing is a level
  of its own); levels unseen in training are all-zero;
* free text (a categorical column whose values are mostly distinct, e.g. clinical notes): left out
  of the design (it is read by the text encoder as part of the record text);
* constant or all-missing columns (on the training patients): dropped, logged.

Every statistic comes from the table passed to :meth:`TabularEncoder.fit`; :meth:`transform` only
applies them, so a test fold never shapes its own encoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from duplus.errors import InputError
from duplus.prognosis.ehr import EHRTemplate, category_key, is_missing, resolve_columns

__all__ = ["TabularEncoder", "column_kinds"]

logger = logging.getLogger(__name__)

FREE_TEXT_MIN_LEVELS = 20  # a categorical column with more distinct values than this and
FREE_TEXT_UNIQUE_SHARE = 0.5  # more than this share of distinct values is free text


def _present(values: pd.Series) -> pd.Series:
    return values[~values.map(is_missing)]


def _non_numbers(values: pd.Series) -> list[Any]:
    present = _present(values)
    parsed = pd.to_numeric(present, errors="coerce")
    return present[parsed.isna()].tolist()


def _kind(values: pd.Series, col: str, template: EHRTemplate, source: Any) -> str:
    """``numeric`` | ``categorical`` | ``text`` | ``empty``; a declared-numeric column with a word
    in it, or a numeric column with a stray word or two, is an input error."""
    present = _present(values)
    if present.empty:
        return "empty"
    if col in template.text_columns:
        return "text"
    if col in template.categorical_maps:
        return "categorical"
    bad = _non_numbers(values)
    if col in template.numeric_columns or (bad and len(bad) <= max(1, 0.05 * len(present))):
        if bad:
            raise InputError(
                source, f"column '{col}': expected numbers, got {bad[0]!r} (and {len(bad) - 1} more)"
            )
        return "numeric"
    if not bad:
        return "numeric"
    levels = present.astype(str).str.strip().nunique()
    if levels > FREE_TEXT_MIN_LEVELS and levels > FREE_TEXT_UNIQUE_SHARE * len(present):
        return "text"
    return "categorical"


def column_kinds(df: pd.DataFrame, template: EHRTemplate) -> dict[str, str]:
    """The kind of every column the template writes (see :func:`_kind`)."""
    source = df.attrs.get("source")
    return {c: _kind(df[c], c, template, source) for c in resolve_columns(df.columns, template) if c in df}


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values.where(~values.map(is_missing)), errors="coerce").to_numpy(dtype=float)


def _levels(values: pd.Series) -> pd.Series:
    """Category names: integral numbers lose their ``.0`` (``1.0`` and ``"1"`` are one level)."""
    return values.map(lambda v: "missing" if is_missing(v) else category_key(v))


@dataclass
class TabularEncoder:
    """Clinical columns -> a standardised design matrix (see the module docstring).

    Attributes (set by :meth:`fit`):
        numeric: column -> (median, has missing indicator).
        categorical: column -> levels that get a column (the most frequent level is the reference).
        names: the design's column names; mean, sd: their training mean and sd.
    """

    template: EHRTemplate = field(default_factory=EHRTemplate)
    numeric: dict[str, tuple[float, bool]] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    sd: list[float] = field(default_factory=list)

    def fit(self, df: pd.DataFrame) -> TabularEncoder:
        """Learn kinds, medians, levels, mean and sd from the training patients ``df``."""
        self.numeric, self.categorical = {}, {}
        for col, kind in column_kinds(df, self.template).items():
            if kind == "numeric":
                x = _numbers(df[col])
                self.numeric[col] = (float(np.nanmedian(x)), bool(np.isnan(x).any()))
            elif kind == "categorical":
                counts = _levels(df[col]).value_counts()
                if len(counts) < 2:
                    logger.info("clinical design: constant on the training patients, dropped: %s", col)
                    continue
                self.categorical[col] = sorted(counts.index[1:].tolist())
            else:
                logger.info("clinical column '%s': %s; not in the structured design", col, kind)
        raw = self._raw(df)
        sd = raw.std(axis=0, ddof=0).to_numpy()
        dropped = [c for c, s in zip(raw.columns, sd, strict=True) if not s > 0]
        if dropped:
            logger.info("clinical design: constant on the training patients, dropped: %s", ", ".join(dropped))
        keep = sd > 0
        self.names = [c for c, k in zip(raw.columns, keep, strict=True) if k]
        self.mean = raw.to_numpy()[:, keep].mean(axis=0).tolist()
        self.sd = sd[keep].tolist()
        return self

    def _raw(self, df: pd.DataFrame) -> pd.DataFrame:
        """Imputed numbers, missing indicators and one-hot columns, before scaling."""
        out: dict[str, np.ndarray] = {}
        n = len(df)
        for col, (median, indicator) in self.numeric.items():
            x = _numbers(df[col]) if col in df else np.full(n, np.nan)
            out[col] = np.where(np.isnan(x), median, x)
            if indicator:
                out[f"{col} missing"] = np.isnan(x).astype(float)
        for col, levels in self.categorical.items():
            lv = _levels(df[col]) if col in df else pd.Series(["missing"] * n)
            for level in levels:
                out[f"{col}={level}"] = (lv == level).to_numpy(dtype=float)
        return pd.DataFrame(out, index=df.index)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """``(len(df), len(names))`` standardised design of any table with the training columns.

        Raises:
            InputError: a value of a numeric column is not a number.
        """
        for col in self.numeric:
            bad = _non_numbers(df[col]) if col in df else []
            if bad:
                raise InputError(df.attrs.get("source"), f"column '{col}': expected numbers, got {bad[0]!r}")
        raw = self._raw(df)
        x = raw.reindex(columns=self.names, fill_value=0.0).to_numpy(dtype=float)
        return (x - np.asarray(self.mean)) / np.asarray(self.sd)

    def raw_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """The unscaled design with named columns (for lifelines' Cox baseline)."""
        self.transform(df)  # the same checks
        return self._raw(df).reindex(columns=self.names, fill_value=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": {k: [m, i] for k, (m, i) in self.numeric.items()},
            "categorical": self.categorical,
            "names": self.names,
            "mean": self.mean,
            "sd": self.sd,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], template: EHRTemplate) -> TabularEncoder:
        return cls(
            template=template,
            numeric={k: (float(v[0]), bool(v[1])) for k, v in data["numeric"].items()},
            categorical={k: list(v) for k, v in data["categorical"].items()},
            names=list(data["names"]),
            mean=[float(v) for v in data["mean"]],
            sd=[float(v) for v in data["sd"]],
        )
