"""`duplus prognosis train` then `predict` on a CSV-only cohort (EHR mode, no images)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from duplus.cli import main


def test_train_then_predict_ehr_only(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 40
    hpv = rng.choice(["positive", "negative", None], n)
    smoker = rng.choice(["yes", "no"], n)
    risk = (hpv == "negative") * 1.0 + (smoker == "yes") * 1.0
    time = rng.exponential(1000 * np.exp(-risk)) + 1
    df = pd.DataFrame(
        {
            "pid": [f"P{i:03d}" for i in range(n)],
            "age": rng.integers(40, 80, n),
            "hpv": hpv,
            "smoker": smoker,
            "days": time.round(1),
            "dead": (rng.random(n) < 0.7).astype(int),
        }
    )
    csv = tmp_path / "cohort.csv"
    df.to_csv(csv, index=False)
    before = csv.read_bytes()
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 3, "lora_r": 0, "folds": 2}))
    common = ["--clinical", str(csv), "--id-col", "pid", "--time-col", "days", "--event-col", "dead"]
    assert (
        main(
            [
                "prognosis",
                "train",
                *common,
                "--mode",
                "ehr",
                "--config",
                str(cfg),
                "--out",
                str(tmp_path / "run"),
                "-q",
            ]
        )
        == 0
    )
    out_csv = tmp_path / "pred.csv"
    assert (
        main(
            [
                "prognosis",
                "predict",
                *common,
                "--model",
                str(tmp_path / "run" / "model"),
                "--out",
                str(out_csv),
                "-q",
            ]
        )
        == 0
    )
    pred = pd.read_csv(out_csv)
    assert list(pred.columns) == ["PatientID", "Prediction"]
    assert pred["PatientID"].tolist() == df["pid"].tolist()
    assert np.isfinite(pred["Prediction"]).all() and pred["Prediction"].std() > 0
    assert csv.read_bytes() == before
    # the hidden manifest records pred.csv as written by duplus (a rerun may replace it)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".duplus-manifest.json",
        "cohort.csv",
        "p.yaml",
        "pred.csv",
        "run",
    ]
