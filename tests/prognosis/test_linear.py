"""EHR = text + structure: the linear Cox head, its training-fold-only transforms, bad clinical input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from duplus.cli import main
from duplus.errors import InputError
from duplus.metrics.survival import concordance_index
from duplus.prognosis import cv, runs
from duplus.prognosis.config import PrognosisConfig
from duplus.prognosis.ehr import EHRTemplate, records_to_texts
from duplus.prognosis.evaluation import breslow_survival
from duplus.prognosis.linear import Blocks, fit_linear_cox
from duplus.prognosis.tabular import TabularEncoder

FAST = {"alphas": [1e-3, 0.1], "text_scales": [0.0, 1.0], "image_scales": [0.0, 1.0], "inner_folds": 3}


class HashEncoder(nn.Module):
    """A stand-in text encoder: a fixed random projection of character counts (fast, deterministic)."""

    embed_dim = 16
    model_id = "hash"

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.randn(128, self.embed_dim, generator=torch.Generator().manual_seed(0))

    def encode(self, texts: list[str]) -> torch.Tensor:
        counts = torch.zeros(len(texts), 128)
        for i, t in enumerate(texts):
            for ch in t:
                counts[i, ord(ch) % 128] += 1
        return nn.functional.normalize(counts @ self.proj, dim=-1)


def _table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    stage = rng.choice(["I", "II", "III"], n)
    log_h = 0.08 * (age - 60) + (stage == "III") * 1.0
    t = rng.exponential(500 * np.exp(-log_h))
    c = rng.uniform(100, 1500, n)
    df = pd.DataFrame(
        {
            "id": [f"P{i}" for i in range(n)],
            "time": np.minimum(t, c),
            "event": (t <= c).astype(int),
            "age": age.round(1),
            "stage": stage,
            "weight": np.where(rng.random(n) < 0.2, np.nan, rng.normal(75, 10, n)),
        }
    )
    return df


def test_tabular_encoder_fits_on_training_rows_only() -> None:
    df = _table()
    enc = TabularEncoder(EHRTemplate()).fit(df.iloc[:80])
    x = enc.transform(df.iloc[:80])
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-9)  # standardised by the training rows
    assert "weight missing" in enc.names and sum(n.startswith("stage=") for n in enc.names) == 2
    poisoned = df.copy()
    poisoned.loc[80:, "age"] = 1e6
    poisoned.loc[80:, "stage"] = "IV"
    assert TabularEncoder(EHRTemplate()).fit(poisoned.iloc[:80]).to_dict() == enc.to_dict()
    raw = enc.raw_frame(poisoned.iloc[80:])
    assert (raw[[n for n in enc.names if n.startswith("stage=")]] == 0).all().all()  # unseen level


def _cohort(df: pd.DataFrame, texts: list[str] | None, feats: np.ndarray | None, cfg: PrognosisConfig):
    return cv._Cohort(
        df, texts, feats, df["time"].to_numpy(float), df["event"].to_numpy(int), cfg.ehr, HashEncoder, {}
    )


@pytest.mark.parametrize("mode", ["ehr", "both", "image"])
def test_outer_test_fold_never_reaches_the_fit(mode: str) -> None:
    """Poisoning the test fold's values (numbers, categories, text, image features) must leave
    every training-fold prediction unchanged: imputation, scaling, PCA, inner CV and early
    stopping see the training fold only."""
    df = _table()
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(len(df), 5)) + df["age"].to_numpy()[:, None] / 50
    cfg = PrognosisConfig(
        mode=mode, ehr=EHRTemplate(), epochs=15, val_fraction=0.25, patience=3, hidden=8, **FAST
    )
    tr, te = np.arange(90), np.arange(90, len(df))
    texts = records_to_texts(df, cfg.ehr)
    fit = cv._fit_linear_mode if cfg.is_linear else cv._fit_neural_mode
    r_tr, r_te = fit(mode, _cohort(df, texts, feats, cfg), cfg, tr, te)

    bad = df.copy()
    bad.loc[te, "age"] = 1e5
    bad.loc[te, "weight"] = np.nan
    bad.loc[te, "stage"] = "IV"
    bad_feats = feats.copy()
    bad_feats[te] = 1e4
    bad_texts = records_to_texts(bad, cfg.ehr)
    r_tr2, r_te2 = fit(mode, _cohort(bad, bad_texts, bad_feats, cfg), cfg, tr, te)
    np.testing.assert_allclose(r_tr2, r_tr, rtol=1e-6, atol=1e-8)
    assert not np.allclose(r_te2, r_te)  # the poison did reach the test predictions


def test_linear_cox_learns_and_gives_survival() -> None:
    df = _table(200)
    t, e = df["time"].to_numpy(), df["event"].to_numpy()
    tr, te = np.arange(150), np.arange(150, 200)
    model = fit_linear_cox(Blocks(df.iloc[tr]), t[tr], e[tr], EHRTemplate())
    risk = model.risk(Blocks(df.iloc[te]))
    assert concordance_index(t[te], risk, e[te]) > 0.65
    surv = breslow_survival(
        model.risk(Blocks(df.iloc[tr])), t[tr], e[tr], risk, np.array([100.0, 300.0, 900.0])
    )
    assert surv.shape == (50, 3) and np.all(np.diff(surv, axis=1) <= 0) and np.all((surv > 0) & (surv <= 1))


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.rename(columns={"id": "PatientID", "time": "RFS", "event": "Relapse"}).to_csv(path, index=False)
    return path


def _cv(csv: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "prognosis",
            "cv",
            "--clinical",
            str(csv),
            "--modes",
            "ehr",
            "--folds",
            "2",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_non_numeric_value_in_numeric_column_is_one_line_error(tmp_path: Path, capsys) -> None:
    df = _table(60).astype({"age": object})
    df.loc[7, "age"] = "sixty"
    csv = _write(df, tmp_path / "c.csv")
    assert _cv(csv, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'age'" in err[0] and "sixty" in err[0] and "c.csv" in err[0]
    assert not (tmp_path / "out").exists() or not [
        p for p in (tmp_path / "out").iterdir() if p.name != ".duplus-manifest.json"
    ]


def test_constant_all_missing_and_long_notes_are_logged_choices(tmp_path: Path, caplog, monkeypatch) -> None:
    df = _table(60)
    df["centre"] = "A"
    df["empty"] = np.nan
    df["notes"] = ["x" * 10_000 + f" patient {i}" for i in range(len(df))]
    csv = _write(df, tmp_path / "c.csv")
    for module in (cv, runs):
        monkeypatch.setattr(module, "base_encoder_factory", lambda cfg: HashEncoder)
    cfg = tmp_path / "p.yaml"
    cfg.write_text("bootstrap: 20\n")
    with caplog.at_level(logging.INFO):
        assert _cv(csv, tmp_path / "out", "--config", str(cfg)) == 0
    log = caplog.text
    assert "constant on the training patients, dropped: centre" in log
    assert "'empty': empty" in log
    assert "'notes': text" in log and "cut to that length" in log
    assert (tmp_path / "out" / "cv_summary.md").is_file()


def test_interrupted_run_leaves_no_files(tmp_path: Path, monkeypatch) -> None:
    csv = _write(_table(60), tmp_path / "c.csv")

    def interrupted(data, out, **kw):
        (Path(out) / "cv_folds.csv").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "run_prognosis_cv", interrupted)
    assert _cv(csv, tmp_path / "out") == 130
    assert not (tmp_path / "out").exists()


def test_non_numeric_declared_column_raises() -> None:
    df = _table(30).astype({"age": object})
    df.loc[3, "age"] = "n/k"  # not a missing marker
    with pytest.raises(InputError, match="'age'"):
        TabularEncoder(EHRTemplate(numeric=["age"])).fit(df)
