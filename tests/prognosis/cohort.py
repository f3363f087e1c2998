"""A synthetic clinical cohort with a known hazard, shared by the prognosis tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HAZARD = "log h = 2.0 * [HPV negative] + 1.5 * [smoker]"


def write_cohort_csv(path: Path, n: int = 90, seed: int = 0) -> Path:
    """A CSV-only cohort (no images): HPV-negative patients and smokers relapse earlier.

    Columns: PatientID, RFS, Relapse, Age (numbers, one written as text), Gender (M/F),
    HPV status (0/1, some missing), Tobacco (0/1, some missing), Stage (text), Weight (some missing).
    """
    rng = np.random.default_rng(seed)
    hpv = rng.integers(0, 2, n).astype(float)
    smoker = rng.integers(0, 2, n).astype(float)
    log_h = 2.0 * (hpv == 0) + 1.5 * (smoker == 1)
    t = rng.exponential(600.0 * np.exp(-log_h))
    c = rng.uniform(50.0, 1200.0, n)
    df = pd.DataFrame(
        {
            "PatientID": [f"SYN-{i:03d}" for i in range(n)],
            "RFS": np.round(np.minimum(t, c), 1),
            "Relapse": (t <= c).astype(int),
            "Age": rng.normal(60, 9, n).round().astype(int).astype(object),
            "Gender": rng.choice(["M", "F"], n),
            "HPV status (0=-, 1=+)": hpv,
            "Tobacco": smoker,
            "Stage": rng.choice(["I", "II", "III", "IV"], n),
            "Weight": rng.normal(78, 12, n).round(1),
        }
    )
    df.loc[rng.random(n) < 0.1, "HPV status (0=-, 1=+)"] = np.nan
    df.loc[rng.random(n) < 0.1, "Tobacco"] = np.nan
    df.loc[rng.random(n) < 0.2, "Weight"] = np.nan
    df.loc[1, "Age"] = " 71"  # a number written as text: still a number
    df.to_csv(path, index=False)
    return path
