"""The prognosis cohort: head-and-neck PET/CT patients in the HECKTOR 2022 layout, with a known hazard.

Recurrence-free survival follows a KNOWN Weibull proportional-hazards model::

    log-hazard ratio  eta = 1.0 * z(log total tumour volume [ml])      (GTVp + GTVn, from the label)
                          + 0.6 * z(primary tumour peak uptake [SUV])  (before PSF blur and noise)
                          + 1.4 * [HPV negative]
                          + 0.5 * z(age [years])
                          + 0.8 * [smoker]
                          + 0.9 * [performance status > 0]
    hazard h(t | x) = (k / lam) * (t / lam) ** (k - 1) * exp(eta),   k = 1.2, lam = 3000 days
    censoring C ~ Uniform(300, 2500) days, independent; RFS = min(T, C), Relapse = [T <= C]

The clinical CSV also has a free-text ``Notes`` column: a few sentences in varied wording, drawn
from a separate random stream (so the survival times do not depend on it), that restate the
patient's latent smoking, HPV and performance status, often where the structured cell is empty
(see :func:`clinical_note`). It adds no term to the hazard; it carries signal the structured
columns lose to missing cells.

``z(v) = (v - mean) / sd`` with the fixed constants :data:`COHORT_STANDARDISATION` (volumes
below 0.05 ml count as 0.05 ml). The EHR signal is mostly categorical (HPV, smoking, performance
status) plus age, since the EHR is read by a text encoder; the CSV has empty cells for some missing
values as the real file does, while the hazard uses the complete (latent) values. Everything
(coefficients, constants, per-patient covariates and linear predictor, and the C-index of the true
linear predictor, lifelines' Harrell's C) is written to ``cohort_truth.json``; the censoring and
C-index figures measured on generated cohorts are in ``docs/EXPERIMENTS.md``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duplus.data.io import save_nifti
from duplus.data.phantoms.case import TEST_STREAM, PhantomCase, case_seed, make_phantom_case
from duplus.data.phantoms.labels import build_dataset_label
from duplus.fileio import write_json_atomic, write_text_atomic

COHORT_FOLDER = "HECKTOR_Phantom"
"""The cohort's folder in a phantom collection."""
COHORT_COEFFICIENTS: dict[str, float] = {
    "log_tumour_volume": 1.0,
    "uptake": 0.6,
    "hpv_negative": 1.4,
    "age": 0.5,
    "smoker": 0.8,
    "performance_status_positive": 0.9,
}
"""Log-hazard coefficients of the cohort's known proportional-hazards model."""
COHORT_STANDARDISATION: dict[str, tuple[float, float]] = {
    "log_tumour_volume": (0.75, 0.85),
    "uptake": (12.5, 4.33),
    "age": (62.0, 9.0),
}
"""``(mean, sd)`` used by ``z()`` in the model (fixed constants, not sample statistics)."""
_WEIBULL_SHAPE, _WEIBULL_SCALE_DAYS = 1.2, 3000.0
_CENSOR_DAYS = (300.0, 2500.0)
_MIN_VOLUME_ML = 0.05  # floor before the log, for a tumour smaller than a voxel of a coarse grid
_IMAGE_TERMS = ("log_tumour_volume", "uptake")
_EHR_TERMS = ("hpv_negative", "age", "smoker", "performance_status_positive")
_COVARIATE_MEANINGS = {
    "log_tumour_volume": "natural log of GTVp + GTVn volume in ml (from the label)",
    "uptake": "peak SUV of the primary tumour before PSF blur and noise",
    "hpv_negative": "1 if HPV negative",
    "age": "years",
    "smoker": "1 if smoker (Tobacco)",
    "performance_status_positive": "1 if performance status > 0",
}


def compute_linear_predictor(covariates: dict[str, Any], terms: Sequence[str] | None = None) -> np.ndarray:
    """The known log-hazard ratio from raw covariates (arrays or scalars).

    Args:
        covariates: ``log_tumour_volume`` (natural log of ml), ``uptake`` (SUV), ``age`` (years),
            and the 0/1 indicators ``hpv_negative``, ``smoker``, ``performance_status_positive``.
        terms: restrict to these terms (e.g. the image terms only); ``None`` = all.
    """
    eta = np.zeros(np.shape(np.asarray(covariates["age"], dtype=np.float64)))
    for term in terms or COHORT_COEFFICIENTS:
        x = np.asarray(covariates[term], dtype=np.float64)
        if term in COHORT_STANDARDISATION:
            mean, sd = COHORT_STANDARDISATION[term]
            x = (x - mean) / sd
        eta = eta + COHORT_COEFFICIENTS[term] * x
    return eta


def write_patient(
    root: Path, test_seed: int, i: int, shape: tuple[int, int, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write patient ``i``'s PET/CT and label; return its clinical row and its true covariates.

    The cohort's figures are reported (cross-validated C-index), so its patients come from the
    held-out stream of ``test_seed`` (:data:`.case.TEST_STREAM`), like the datasets' test cases.
    """
    case, row, truth = _patient(test_seed, i, shape)
    pid = row["PatientID"]
    save_nifti(np.rint(case.image[1]), case.affine, root / "imagesTr" / f"{pid}__CT.nii.gz", dtype=np.int16)
    save_nifti(case.image[0], case.affine, root / "imagesTr" / f"{pid}__PT.nii.gz", dtype=np.float32)
    label = build_dataset_label(case.label, case.label_names, {1: "primary tumour", 2: "lymph node"})
    save_nifti(label, case.affine, root / "labelsTr" / f"{pid}.nii.gz", dtype=np.int16)
    return row, truth


def write_cohort_tables(root: Path, written: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Write the clinical and endpoint CSVs and ``cohort_truth.json`` of the patients in ``written``.

    Args:
        root: the cohort folder.
        written: :func:`write_patient`'s ``(clinical row, truth)`` of each patient, in order.

    Returns:
        The content of ``cohort_truth.json``.
    """
    clinical = [row for row, _ in written]
    patients = [truth for _, truth in written]
    endpoints = [
        {"PatientID": row["PatientID"], "Relapse": t["Relapse"], "RFS": t["RFS"]} for row, t in written
    ]
    write_text_atomic(root / "hecktor2022_clinical_info_training.csv", _csv_text(clinical))
    write_text_atomic(root / "hecktor2022_endpoint_training.csv", _csv_text(endpoints))
    truth_doc = _truth_doc(patients)
    write_json_atomic(root / "cohort_truth.json", truth_doc)
    return truth_doc


def _truth_doc(patients: list[dict[str, Any]]) -> dict[str, Any]:
    time = np.array([p["RFS"] for p in patients], dtype=float)
    event = np.array([p["Relapse"] for p in patients])
    cov = {k: np.array([p[k] for p in patients], dtype=float) for k in COHORT_COEFFICIENTS}
    return {
        "model": "Weibull proportional hazards: h(t|x) = (k/lam) (t/lam)^(k-1) exp(eta)",
        "coefficients": COHORT_COEFFICIENTS,
        "standardisation": {k: {"mean": m, "sd": s} for k, (m, s) in COHORT_STANDARDISATION.items()},
        "weibull_shape": _WEIBULL_SHAPE,
        "weibull_scale_days": _WEIBULL_SCALE_DAYS,
        "censoring": {"distribution": "uniform", "low_days": _CENSOR_DAYS[0], "high_days": _CENSOR_DAYS[1]},
        "covariates": _COVARIATE_MEANINGS,
        "censored_fraction": float(1.0 - event.mean()),
        "c_index_true_linear_predictor": _c_index(time, event, compute_linear_predictor(cov)),
        "c_index_image_terms": _c_index(time, event, compute_linear_predictor(cov, _IMAGE_TERMS)),
        "c_index_ehr_terms": _c_index(time, event, compute_linear_predictor(cov, _EHR_TERMS)),
        "patients": patients,
    }


def _c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """lifelines' Harrell's C of a risk (anti-concordant with time); NaN when no pair is comparable."""
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(time, -risk, event))  # lifelines scores grow with survival
    except ZeroDivisionError:  # lifelines' "no admissable pairs", e.g. every patient censored
        return float("nan")


def _draw_ehr(rng: np.random.Generator) -> dict[str, Any]:
    """Latent (complete) clinical values of one patient."""
    male = rng.random() < 0.8
    smoker = int(rng.random() < 0.5)
    return {
        "male": bool(male),
        "age": int(np.clip(round(rng.normal(62.0, 9.0)), 35, 90)),
        "weight": round(float(rng.normal(80.0 if male else 66.0, 13.0)), 1),
        "smoker": smoker,
        "alcohol": int(rng.random() < (0.6 if smoker else 0.3)),
        "performance_status": int(rng.choice(3, p=[0.55, 0.35, 0.10])),
        "hpv_positive": int(rng.random() < (0.5 if smoker else 0.7)),
        "surgery": int(rng.random() < 0.25),
        "chemotherapy": int(rng.random() < 0.8),
        "center": int(rng.integers(3)),
    }


def _clinical_row(pid: str, ehr: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The patient's row of the clinical CSV, with HECKTOR's columns and some cells left empty."""

    def maybe(value: Any, p_missing: float) -> Any:
        return "" if rng.random() < p_missing else value

    return {
        "PatientID": pid,
        "Task 1": 1,
        "Task 2": 1,
        "CenterID": ehr["center"],
        "Gender": "M" if ehr["male"] else "F",
        "Age": ehr["age"],
        "Weight": maybe(ehr["weight"], 0.1),
        "Tobacco": maybe(ehr["smoker"], 0.15),
        "Alcohol": maybe(ehr["alcohol"], 0.3),
        "Performance status": maybe(ehr["performance_status"], 0.1),
        "HPV status (0=-, 1=+)": maybe(ehr["hpv_positive"], 0.1),
        "Surgery": maybe(ehr["surgery"], 0.2),
        "Chemotherapy": ehr["chemotherapy"],
    }


_SMOKER_NOTES = (
    "Current smoker, {n} pack-years.",
    "Smokes about {k} cigarettes a day.",
    "Heavy smoker since youth.",
)
_NON_SMOKER_NOTES = ("Never smoked.", "Non-smoker.", "No history of tobacco use.")
_HPV_NOTES = {
    1: ("p16 positive on biopsy.", "HPV-associated carcinoma."),
    0: ("p16 negative.", "HPV-negative tumour."),
}
_PS_NOTES = (
    ("Fully active, no restrictions.", "Works full time."),
    ("Restricted in strenuous activity but ambulatory.", "Tires easily, light work only."),
    ("Ambulatory and capable of self-care, unable to work.", "Spends part of the day in bed."),
)
_FILLER_NOTES = (
    "Presented with a neck mass.",
    "Dysphagia for two months.",
    "Referred by ENT.",
    "Hoarseness.",
)


def clinical_note(ehr: dict[str, Any], rng: np.random.Generator) -> str:
    """A free-text note restating smoking (80% of notes), HPV (60%) and performance status (60%)
    in one of a few wordings each, with a filler sentence; the order is shuffled."""

    def pick(options: Sequence[str]) -> str:
        return str(options[int(rng.integers(len(options)))])

    parts = [pick(_FILLER_NOTES)]
    if rng.random() < 0.8:
        parts.append(
            pick(_SMOKER_NOTES if ehr["smoker"] else _NON_SMOKER_NOTES).format(
                n=int(rng.integers(10, 60)), k=int(rng.integers(5, 40))
            )
        )
    if rng.random() < 0.6:
        parts.append(pick(_HPV_NOTES[int(ehr["hpv_positive"])]))
    if rng.random() < 0.6:
        parts.append(pick(_PS_NOTES[int(ehr["performance_status"])]))
    order = rng.permutation(len(parts))
    return " ".join(parts[j] for j in order)


def _patient(
    test_seed: int, i: int, shape: tuple[int, int, int]
) -> tuple[PhantomCase, dict[str, Any], dict[str, Any]]:
    """Image, CSV rows and truth of one cohort patient (independent of the cohort size)."""
    pid = f"PHA-{i + 1:03d}"
    case = make_phantom_case(
        case_seed(test_seed, TEST_STREAM, 100, i), "headneck", "PETCT", shape=shape,
        affine_style=("ras", "lps")[i % 2],
    )  # fmt: skip
    rng = np.random.default_rng(case_seed(test_seed, TEST_STREAM, 101, i))
    ehr = _draw_ehr(rng)
    row = _clinical_row(pid, ehr, rng)
    row["Notes"] = clinical_note(ehr, np.random.default_rng(case_seed(test_seed, TEST_STREAM, 102, i)))
    cov = {
        "log_tumour_volume": math.log(max(case.info["tumour_volume_ml"], _MIN_VOLUME_ML)),
        "uptake": case.info["primary_uptake"],
        "hpv_negative": 1 - ehr["hpv_positive"],
        "age": ehr["age"],
        "smoker": ehr["smoker"],
        "performance_status_positive": int(ehr["performance_status"] > 0),
    }
    eta = float(compute_linear_predictor(cov))
    event_time = _WEIBULL_SCALE_DAYS * (rng.exponential() * math.exp(-eta)) ** (1.0 / _WEIBULL_SHAPE)
    censor_time = rng.uniform(*_CENSOR_DAYS)
    relapse = int(event_time <= censor_time)
    rfs = max(1, int(round(min(event_time, censor_time))))
    truth = {
        "PatientID": pid,
        **cov,
        "tumour_volume_ml": case.info["tumour_volume_ml"],
        "linear_predictor": eta,
    }
    truth |= {
        "suvmax_measured": case.info["suvmax"],
        "event_time_days": event_time,
        "censor_time_days": censor_time,
    }
    truth |= {"Relapse": relapse, "RFS": rfs}
    return case, row, truth


def cohort_rows(
    test_seed: int, n: int, shape: tuple[int, int, int] = (24, 24, 24)
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(clinical row, truth)`` of patients ``0..n-1`` without writing images (the endpoints are
    in the truth; a small ``shape`` is enough: the anatomy does not depend on the grid)."""
    return [_patient(test_seed, i, shape)[1:] for i in range(n)]


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
