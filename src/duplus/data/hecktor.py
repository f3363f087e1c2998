"""Reader for the HECKTOR 2022 layout (head-and-neck PET/CT, GTV masks, clinical and endpoint CSVs).

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

from duplus.data.specs import CaseRecord, DatasetSpec
from duplus.errors import InputError

__all__ = [
    "HECKTOR_LABELS",
    "HECKTOR_CITATION",
    "find_hecktor_root",
    "read_hecktor_spec",
    "read_clinical_csv",
    "read_hecktor_clinical",
    "check_survival_cohort",
]

logger = logging.getLogger(__name__)

HECKTOR_LABELS = {1: "primary tumour", 2: "lymph node"}
HECKTOR_CITATION = (
    "Andrearczyk V, Oreiller V, Boughdad S, et al. Overview of the HECKTOR challenge at MICCAI 2022: "
    "automatic head and neck tumor segmentation and outcome prediction in PET/CT. "
    "Head and Neck Tumor Segmentation and Outcome Prediction, LNCS 13626 (2023)."
)
CLINICAL_CSV = "hecktor2022_clinical_info_{split}.csv"
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
_CT, _PT = "__CT.nii.gz", "__PT.nii.gz"


def _is_hecktor_root(folder: Path) -> bool:
    return (folder / "imagesTr").is_dir() or (folder / CLINICAL_CSV.format(split="training")).is_file()


def find_hecktor_root(folder: str | Path) -> Path:
    """The HECKTOR root: ``folder`` itself, or its only sub-folder in the HECKTOR layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "HECKTOR folder not found")
    if _is_hecktor_root(folder):
        return folder
    candidates = sorted(p for p in folder.iterdir() if p.is_dir() and _is_hecktor_root(p))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(p.name for p in candidates)
        raise InputError(folder, f"several HECKTOR folders inside ({names}); pass one of them")
    raise InputError(
        folder, f"not a HECKTOR 2022 folder (no imagesTr/ and no {CLINICAL_CSV.format(split='training')})"
    )


def _read_cases(images: Path, labels: Path) -> list[CaseRecord]:
    if not images.is_dir():
        return []
    ct = {p.name[: -len(_CT)]: p for p in images.glob(f"*{_CT}")}
    pt = {p.name[: -len(_PT)]: p for p in images.glob(f"*{_PT}")}
    for pid in sorted(set(ct) ^ set(pt)):
        have, need = (ct[pid], f"{pid}{_PT}") if pid in ct else (pt[pid], f"{pid}{_CT}")
        raise InputError(have, f"its partner image {need} is missing from {images}")
    cases = []
    for pid in sorted(ct):
        label = labels / f"{pid}.nii.gz"
        cases.append(
            CaseRecord(case_id=pid, images=[pt[pid], ct[pid]], label=label if label.is_file() else None)
        )
    return cases


def read_hecktor_spec(folder: str | Path, name: str = "HECKTOR") -> DatasetSpec:
    """Dataset spec of a HECKTOR 2022 folder: modality ``"PETCT"`` with channel 0 PET, channel 1 CT.

    Cases are found from ``imagesTr/*__CT.nii.gz`` (and ``imagesTs``); a CT without its PET (or
    the reverse) is an error naming the file. Training cases without a label file get ``label=None``.
    """
    root = find_hecktor_root(folder)
    training = _read_cases(root / "imagesTr", root / "labelsTr")
    test = _read_cases(root / "imagesTs", root / "labelsTs")
    if not training and not test:
        raise InputError(root, f"no '*{_CT}' images in imagesTr/ or imagesTs/")
    unlabeled = sum(c.label is None for c in training)
    if unlabeled:
        logger.info("%s: %d of %d training cases have no label file", root, unlabeled, len(training))
    return DatasetSpec(
        name=name,
        modality="PETCT",
        region="head and neck",
        labels=dict(HECKTOR_LABELS),
        root=root,
        training=training,
        test=test,
        citation=HECKTOR_CITATION,
    )


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
        InputError: fewer than ``min_events`` events (e.g. all censored) or fewer than 2 patients.
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
