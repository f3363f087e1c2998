"""Readers of survival tables: the HECKTOR 2022 clinical and endpoint CSVs, and generic cohorts.

The HECKTOR images and masks are read as a dataset by :mod:`duplus.data.specs.hecktor`.

Layout (as distributed by the challenge, and as written by :mod:`duplus.data.phantoms`)::

    <root>/imagesTr/<PatientID>__CT.nii.gz
    <root>/imagesTr/<PatientID>__PT.nii.gz
    <root>/labelsTr/<PatientID>.nii.gz                      1 = GTVp, 2 = GTVn
    <root>/imagesTs/...                                     (optional test images)
    <root>/hecktor2022_clinical_info_training.csv           PatientID, CenterID, Gender, Age, ...
    <root>/hecktor2022_endpoint_training.csv                PatientID, Relapse, RFS

Clinical tables come back as pandas DataFrames with the standard columns ``id``, ``time`` and
``event`` first, then the clinical columns as they are in the file; ``df.attrs["source"]`` names
the CSV so later errors (e.g. a non-numeric age met while writing the EHR text) can name it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from duplus.data.specs.hecktor import CLINICAL_CSV, find_hecktor_root
from duplus.errors import InputError

__all__ = [
    "read_clinical_csv",
    "read_hecktor_clinical",
    "check_survival_cohort",
]

logger = logging.getLogger(__name__)

ENDPOINT_CSV = "hecktor2022_endpoint_{split}.csv"
HECKTOR_CLINICAL_COLUMNS = [
    "PatientID",
    "Task 1",
    "Task 2",
    "CenterID",
    "Gender",
    "Age",
    "Weight",
    "Tobacco",
    "Alcohol",
    "Performance status",
    "HPV status (0=-, 1=+)",
    "Surgery",
    "Chemotherapy",
]


def _load_csv(path: Path, id_col: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "clinical CSV not found")
    try:
        df = pd.read_csv(path, dtype={id_col: str}, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"not a readable CSV table ({str(exc).splitlines()[0]})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _rows(mask: np.ndarray | pd.Series, ids: pd.Series, limit: int = 5) -> str:
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(f"row {i + 1} ({ids.iloc[i]})" for i in idx[:limit])
    return shown + (f" and {idx.size - limit} more" if idx.size > limit else "")


def read_clinical_csv(
    path: str | Path,
    id_col: str = "PatientID",
    time_col: str | None = "RFS",
    event_col: str | None = "Relapse",
) -> pd.DataFrame:
    """Read and check a clinical table with survival endpoints.

    Args:
        path: CSV file; empty cells are missing values.
        id_col: patient id column (read as text, so ``"007"`` stays ``"007"``).
        time_col: follow-up time column; ``None`` for a table without endpoints (prediction).
        event_col: event indicator column (1 = event, 0 = censored); ``None`` likewise.

    Returns:
        A DataFrame with ``id`` (str), ``time`` (float) and ``event`` (int) first, when given, then
        the other columns unchanged; ``attrs["source"]`` is the CSV path.

    Raises:
        InputError (naming the CSV): missing required columns, missing or duplicate ids, missing,
        non-numeric or negative times, events other than 0/1.
    """
    path = Path(path)
    df = _load_csv(path, id_col)
    required = [c for c in (id_col, time_col, event_col) if c is not None]
    absent = [c for c in required if c not in df.columns]
    if absent:
        raise InputError(
            path,
            f"missing required column(s) {', '.join(repr(c) for c in absent)}; "
            f"found: {', '.join(repr(c) for c in df.columns)}",
        )
    if len(df) == 0:
        raise InputError(path, "the table has no rows")
    ids = df[id_col].astype("string").str.strip()
    if ids.isna().any() or (ids == "").any():
        raise InputError(path, f"missing {id_col!r} in {_rows(ids.isna() | (ids == ''), ids.fillna('?'))}")
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise InputError(path, f"duplicate {id_col!r} values: {', '.join(sorted(set(ids[dup])))}")
    out = pd.DataFrame({"id": ids.astype(str).to_numpy()})
    if time_col is not None:
        raw = df[time_col]
        time = pd.to_numeric(raw, errors="coerce")
        bad = time.isna() & raw.notna()
        if bad.any():
            raise InputError(path, f"column {time_col!r}: non-numeric survival time in {_rows(bad, ids)}")
        if time.isna().any():
            raise InputError(path, f"column {time_col!r}: missing survival time in {_rows(time.isna(), ids)}")
        if (time < 0).any() or not np.isfinite(time.to_numpy()).all():
            raise InputError(
                path,
                f"column {time_col!r}: negative or infinite survival time in {_rows((time < 0) | ~np.isfinite(time), ids)}",
            )
        out["time"] = time.to_numpy(dtype=float)
    if event_col is not None:
        raw = df[event_col]
        event = pd.to_numeric(raw, errors="coerce")
        bad = ~event.isin([0, 1])
        if bad.any():
            raise InputError(path, f"column {event_col!r}: event must be 0 or 1, not in {_rows(bad, ids)}")
        out["event"] = event.to_numpy().astype(int)
    rest = [c for c in df.columns if c not in required]
    clash = [c for c in rest if c in ("id", "time", "event")]
    if clash:
        raise InputError(path, f"column(s) {clash} clash with the standard id/time/event columns")
    for c in rest:
        out[c] = df[c].to_numpy()
    if rest:
        logger.info("%s: %d clinical column(s) beside id/time/event: %s", path, len(rest), ", ".join(rest))
    out.attrs["source"] = str(path)
    if time_col is not None:
        out.attrs["endpoint_source"] = str(path)
    return out


def check_survival_cohort(df: pd.DataFrame, source: str | Path | None = None, min_events: int = 2) -> None:
    """Refuse a cohort on which a Cox model and the C-index are undefined.

    Raises:
        InputError: fewer than ``min_events`` events (e.g. all censored), fewer than 2 patients, or
            no orderable pair (all times tied, e.g. all zero).
    """
    src = source if source is not None else df.attrs.get("endpoint_source", df.attrs.get("source"))
    if "time" not in df.columns or "event" not in df.columns:
        raise InputError(src, "no survival endpoints (time/event columns)")
    n_events = int(np.asarray(df["event"]).sum())
    if len(df) < 2:
        raise InputError(src, f"only {len(df)} patient(s); survival models need at least 2")
    if n_events == 0:
        raise InputError(
            src, "every patient is censored (no event): the C-index and Cox likelihood are undefined"
        )
    if n_events < min_events:
        raise InputError(
            src, f"only {n_events} event(s) among {len(df)} patients; need at least {min_events}"
        )
    time = np.asarray(df["time"], dtype=float)
    event = np.asarray(df["event"]).astype(bool)
    if not (event & (time < time.max())).any():  # no event before another patient's time
        tied = (
            f"every survival time is {time.max():g}"
            if np.ptp(time) == 0
            else "every event is at the last time"
        )
        raise InputError(
            src, f"{tied}: no patient pair can be ordered, so the C-index and Cox likelihood are undefined"
        )


def read_hecktor_clinical(folder: str | Path, split: str = "training") -> pd.DataFrame:
    """Clinical info joined with the endpoints of a HECKTOR 2022 folder.

    Args:
        folder: the HECKTOR root (or a folder holding exactly one).
        split: ``"training"`` or ``"testing"``. Without an endpoint CSV (the test set) the table
            has no ``time``/``event`` columns.

    Returns:
        ``id``, ``time`` (RFS), ``event`` (Relapse), then the clinical columns. Patients present in
        only one of the two CSVs are left out (and logged).
    """
    root = find_hecktor_root(folder)
    clinical_path = root / CLINICAL_CSV.format(split=split)
    endpoint_path = root / ENDPOINT_CSV.format(split=split)
    clinical = read_clinical_csv(clinical_path, "PatientID", None, None)
    extra = [c for c in clinical.columns if c != "id" and c not in HECKTOR_CLINICAL_COLUMNS]
    if extra:
        logger.info("%s: columns beyond the HECKTOR 2022 set: %s", clinical_path, ", ".join(extra))
    if not endpoint_path.is_file():
        if split == "training":
            raise InputError(endpoint_path, "endpoint CSV not found (needed for training)")
        return clinical
    endpoints = read_clinical_csv(endpoint_path, "PatientID", "RFS", "Relapse")[["id", "time", "event"]]
    only_clinical = sorted(set(clinical["id"]) - set(endpoints["id"]))
    only_endpoint = sorted(set(endpoints["id"]) - set(clinical["id"]))
    if only_clinical:
        logger.info("%s: %d patient(s) without endpoints left out", endpoint_path, len(only_clinical))
    if only_endpoint:
        logger.warning(
            "%s: %d patient(s) with endpoints but no clinical info left out: %s",
            clinical_path,
            len(only_endpoint),
            ", ".join(only_endpoint[:5]),
        )
    merged = endpoints.merge(clinical, on="id", how="inner", validate="one_to_one")
    if len(merged) == 0:
        raise InputError(endpoint_path, f"no PatientID in common with {clinical_path.name}")
    merged.attrs["source"] = str(clinical_path)
    merged.attrs["endpoint_source"] = str(endpoint_path)
    return merged
