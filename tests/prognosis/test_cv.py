"""Cross-validation, the Cox baseline, and the cv/train/predict run functions."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from duplus.data.hecktor import read_clinical_csv
from duplus.errors import InputError
from duplus.prognosis.config import PrognosisConfig
from duplus.prognosis.cv import (
    BASELINE,
    BASELINE_VOLUME,
    build_tabular_design,
    cross_validate,
    stratified_kfold,
    summarise_cv,
)
from duplus.prognosis.ehr import EHRTemplate, hecktor_template, load_template
from duplus.prognosis.features import save_feature_cache
from duplus.prognosis.runs import run_prognosis_cv, run_prognosis_predict, run_prognosis_train

_spec = importlib.util.spec_from_file_location("prognosis_cohort", Path(__file__).with_name("cohort.py"))
assert _spec is not None and _spec.loader is not None
cohort = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cohort)

FAST = {
    "epochs": 1,
    "lr": 1e-2,
    "lora_r": 4,
    "lora_alpha": 16.0,
    "lora_targets": r"encoder\.layer\.5\.attention\.self\.(query|value)",
    "max_length": 64,
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These small models gain nothing from intra-op threads, and on a shared, oversubscribed CPU
    spinning OpenMP threads make them several times slower; one thread unless
    ``DUPLUS_TEST_THREADS`` asks otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DUPLUS_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("n, k", [(10, 2), (37, 5), (100, 3)])
def test_stratified_kfold_partitions_and_balances(n: int, k: int) -> None:
    event = (np.random.default_rng(n).random(n) < 0.3).astype(int)
    folds = stratified_kfold(event, k, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(n))
    sizes = [f.size for f in folds]
    assert max(sizes) - min(sizes) <= 1
    events = [int(event[f].sum()) for f in folds]
    assert max(events) - min(events) <= 1
    assert [f.tolist() for f in stratified_kfold(event, k, seed=1)] == [f.tolist() for f in folds]


def test_tabular_design_imputes_and_one_hot() -> None:
    df = pd.DataFrame(
        {
            "id": list("abcde"),
            "Age": [60, np.nan, 70, "50", 80],
            "Gender": ["M", "F", None, "M", "F"],
            "HPV status (0=-, 1=+)": [1.0, 0.0, np.nan, 1.0, 1.0],
        }
    )
    x_tr, x_te = build_tabular_design(df.iloc[:4], df.iloc[4:], hecktor_template())
    assert x_tr["Age"].tolist() == [60.0, 60.0, 70.0, 50.0]  # median of 60, 70, 50
    assert x_tr["Age missing"].tolist() == [0.0, 1.0, 0.0, 0.0]
    # one-hot against the most frequent training level (M); integral numbers are one level with "1"
    assert "Gender=F" in x_tr.columns and "Gender=missing" in x_tr.columns and "Gender=M" not in x_tr.columns
    assert "HPV status (0=-, 1=+)=0" in x_tr.columns
    assert x_te["Age"].tolist() == [80.0]
    assert list(x_te.columns) == list(x_tr.columns)
    assert not any(c.startswith("Weight") for c in x_tr.columns)  # absent from the table


def _image_cohort(tmp_path: Path, n: int = 80):
    path = cohort.write_cohort_csv(tmp_path / "clinical.csv", n=n, seed=3)
    df = read_clinical_csv(path)
    rng = np.random.default_rng(0)
    signal = -np.log(df["time"].to_numpy()) + rng.normal(0, 0.5, n)
    feats = np.column_stack([signal, rng.normal(size=(n, 3))]).astype(np.float32)
    vol = np.exp(signal)
    return path, df, feats, vol


def test_cross_validate_image_mode_and_baselines(tmp_path: Path) -> None:
    _, df, feats, vol = _image_cohort(tmp_path)
    cfg = PrognosisConfig(folds=3, repeats=2, epochs=20, lr=1e-2, hidden=8, dropout=0.0, ehr=EHRTemplate())
    folds, preds = cross_validate(
        df, None, feats, cfg, modes=("image", "ehr", "both"), tumour_volume=vol, return_predictions=True
    )
    # ehr/both run on the clinical columns alone (no texts); both adds the image features
    assert set(folds["mode"]) == {"image", "ehr", "both", BASELINE, BASELINE_VOLUME}
    assert len(folds) == 3 * 5 * 2
    summary = summarise_cv(folds).set_index("mode")
    assert summary.loc["image", "n_folds"] == 6
    assert summary.loc["image", "mean"] > 0.7
    assert summary.loc[BASELINE_VOLUME, "mean"] > summary.loc[BASELINE, "mean"]
    first = preds[(preds["mode"] == "image") & (preds["repeat"] == 0)]
    assert sorted(first["id"]) == sorted(df["id"])  # every patient predicted once per repeat
    assert set(first["group"]) == {0, 1}


def test_all_censored_cohort_is_refused(tmp_path: Path) -> None:
    path = cohort.write_cohort_csv(tmp_path / "c.csv", n=20)
    raw = pd.read_csv(path)
    raw["Relapse"] = 0
    raw.to_csv(path, index=False)
    df = read_clinical_csv(path)
    with pytest.raises(InputError, match="censored") as info:
        cross_validate(df, None, np.zeros((20, 2)), PrognosisConfig(), modes=("image",))
    assert str(path) in str(info.value)


def test_run_cv_train_predict_on_csv_only_cohort(tmp_path: Path) -> None:
    csv, df, feats, _ = _image_cohort(tmp_path, n=40)
    cfg = {"mode": "ehr", "folds": 2, **FAST}
    summary = run_prognosis_cv(csv, tmp_path / "cv", config=cfg, modes=("ehr",))
    assert set(summary["mode"]) == {"ehr", BASELINE}
    out = tmp_path / "cv"
    for name in (
        "cv_folds.csv",
        "cv_summary.md",
        "metrics.json",
        "km_ehr.png",
        "ehr_template.yaml",
        "prognosis_config.yaml",
    ):
        assert (out / name).is_file(), name
    columns = load_template(out / "ehr_template.yaml").columns  # fixed from the CSV, endpoints excluded
    assert columns == ["Age", "Gender", "HPV status (0=-, 1=+)", "Tobacco", "Stage", "Weight"]

    model_dir = run_prognosis_train(csv, tmp_path / "train", config=cfg)
    assert {p.name for p in model_dir.iterdir()} == {"prognosis_config.yaml", "linear_cox.json"}
    text_dir = run_prognosis_train(csv, tmp_path / "train-text", config={**cfg, "mode": "ehr-text"})
    assert {p.name for p in text_dir.iterdir()} == {
        "prognosis_config.yaml",
        "prognosis_head.pt",
        "text_adapter.pt",
    }
    new = tmp_path / "new_patients.csv"
    pd.read_csv(csv).drop(columns=["RFS", "Relapse"]).head(7).to_csv(new, index=False)
    pred = run_prognosis_predict(model_dir, new, tmp_path / "pred" / "predictions.csv")
    table = pd.read_csv(pred)
    assert list(table.columns) == ["PatientID", "Prediction"]
    assert table["PatientID"].tolist() == df["id"].head(7).tolist()
    assert np.isfinite(table["Prediction"]).all()


def test_run_with_image_features_file(tmp_path: Path) -> None:
    csv, df, feats, vol = _image_cohort(tmp_path, n=40)
    npz = tmp_path / "features.npz"
    save_feature_cache(
        npz, df["id"].tolist()[::-1], feats[::-1], [f"f{i}" for i in range(4)], tumour_volume=vol[::-1]
    )
    summary = run_prognosis_cv(
        csv,
        tmp_path / "cv",
        config={"folds": 2, "epochs": 10, "lr": 1e-2},
        modes=("image",),
        features=npz,
        plot=False,
    )
    assert set(summary["mode"]) == {"image", BASELINE, BASELINE_VOLUME}
    short = tmp_path / "short.npz"
    save_feature_cache(short, df["id"].tolist()[:5], feats[:5], [f"f{i}" for i in range(4)])
    with pytest.raises(InputError, match="no image features for 35 patient"):
        run_prognosis_cv(csv, tmp_path / "cv2", config={"folds": 2}, modes=("image",), features=short)


def test_cv_summary_marks_a_metric_from_one_fold_and_one_from_none(tmp_path: Path) -> None:
    """A metric only one fold could compute shows "(one fold)", not "± nan"; none at all shows n/a."""
    from duplus.prognosis.cv import summarise_cv
    from duplus.prognosis.runs import _write_markdown

    folds = pd.DataFrame(
        {
            "mode": ["ehr", "ehr"],
            "c_index": [0.70, 0.66],
            "uno_c": [0.69, 0.65],
            "ibs": [0.18, float("nan")],
            "auc": [float("nan"), float("nan")],
            "seconds": [1.0, 2.0],
        }
    )
    path = tmp_path / "cv_summary.md"
    _write_markdown(path, summarise_cv(folds), PrognosisConfig(), n=10, events=5, cis={})
    row = next(line for line in path.read_text().splitlines() if line.startswith("| ehr"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "0.680 ± 0.028"
    assert cells[3] == "0.180 (one fold)"
    assert cells[4] == "n/a"
    assert "nan" not in row
