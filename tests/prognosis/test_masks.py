"""Image features pooled in given or predicted tumour masks: the same columns, and a model trained
with masks scores a cohort without them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from duplus.cli import main
from duplus.prognosis.api import compute_cohort_features, hecktor_cases
from duplus.prognosis.features import load_feature_cache

N = 12


def _checkpoint(path: Path) -> Path:
    """An untrained tiny network that knows the tumour prompts, 3 mm preprocessing."""
    from duplus.checkpoint import save_checkpoint
    from duplus.config import ModelConfig, PreprocessConfig, TextConfig, to_dict
    from duplus.models.registry import build_model
    from duplus.text.encoder import TextEncoder

    text = TextConfig()
    encoder = TextEncoder(text.encoder, pooling=text.pooling, max_length=text.max_length)
    cfg = ModelConfig(preset="tiny")
    torch.manual_seed(0)
    model = build_model(cfg, text_dim=encoder.embed_dim)
    payload = {
        "model": model.state_dict(),
        "model_config": to_dict(cfg),
        "text_config": to_dict(text),
        "text_encoder_id": encoder.model_id,
        "text_dim": encoder.embed_dim,
        "preprocess": to_dict(PreprocessConfig(spacing=(3.0, 3.0, 3.0))),
        "patch_size": [32, 32, 32],
        "label_space": {"targets": ["primary tumour", "lymph node"]},
        "datasets": [{"name": "HECKTOR_Phantom", "modality": "PETCT"}],
        "train_config": {},
        "step": 0,
        "best_metric": 0.0,
    }
    return save_checkpoint(path, payload)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from duplus.data.phantoms.cohort import write_cohort_tables, write_patient

    root = tmp_path_factory.mktemp("masks")
    folder = root / "HECKTOR_Phantom"
    written = [write_patient(folder, 7, i, (32, 32, 32)) for i in range(N)]
    write_cohort_tables(folder, written)
    return folder, _checkpoint(root / "model.pt")


@pytest.fixture(autouse=True, scope="module")
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_same_feature_columns_with_given_and_predicted_masks(cohort, tmp_path: Path) -> None:
    folder, ckpt = cohort
    cases = hecktor_cases(folder)
    given = load_feature_cache(compute_cohort_features(cases, ckpt, tmp_path / "g.npz", masks="given"))
    pred = load_feature_cache(compute_cohort_features(cases, ckpt, tmp_path / "p.npz", masks="predicted"))
    assert given["names"] == pred["names"] and given["features"].shape == pred["features"].shape
    assert any(n.startswith("bottleneck_tumour_mean_") for n in given["names"])
    assert not np.allclose(given["features"], pred["features"])  # other masks, other tumour means
    assert np.all(given["tumour_volume"] > 0)
    without = [(pid, images, None) for pid, images, _ in cases]
    auto = load_feature_cache(compute_cohort_features(without, ckpt, tmp_path / "a.npz"))
    np.testing.assert_allclose(auto["features"], pred["features"], rtol=1e-5, atol=1e-6)  # auto = predicted
    from duplus.errors import InputError

    with pytest.raises(InputError, match="no tumour mask .* --masks predicted"):
        compute_cohort_features(without, ckpt, tmp_path / "x.npz", masks="given")


def test_predict_on_mask_free_cohort_after_training_with_masks(cohort, tmp_path: Path) -> None:
    folder, ckpt = cohort
    run = tmp_path / "run"
    args = ["prognosis", "train", "--hecktor", str(folder), "-c", str(ckpt), "--mode", "both", "-q"]
    assert main([*args, "--masks", "given", "--out", str(run)]) == 0
    images = tmp_path / "images"
    shutil.copytree(folder / "imagesTr", images)  # a cohort without any mask
    clinical = pd.read_csv(folder / "hecktor2022_clinical_info_training.csv")
    csv = tmp_path / "new.csv"
    clinical.to_csv(csv, index=False)
    out = tmp_path / "pred.csv"
    cmd = ["prognosis", "predict", "--clinical", str(csv), "--images", str(images), "-c", str(ckpt)]
    assert main([*cmd, "--model", str(run / "model"), "--out", str(out), "-q"]) == 0
    pred = pd.read_csv(out)
    assert pred["PatientID"].tolist() == clinical["PatientID"].tolist()
    assert np.isfinite(pred["Prediction"]).all()


@pytest.mark.slow
def test_demo_experiment_compares_masks_and_text_paths(cohort, tmp_path: Path) -> None:
    from duplus.prognosis.api import run_cohort_cv

    folder, ckpt = cohort
    overrides = {"folds": 2, "epochs": 2, "bootstrap": 0, "inner_folds": 2, "alphas": [0.01, 0.1]}
    result = run_cohort_cv(folder, ckpt, tmp_path / "cv", overrides=overrides, progress=False)
    modes = [r["mode"] for r in result["summary"]]
    for mode in ("ehr-text", "ehr", "ehr (no notes)", "image (given masks)", "image (predicted masks)"):
        assert mode in modes, modes
    assert "both (predicted masks)" in modes, modes
    assert "cox_clinical+volume (given masks)" in modes, modes
    assert "| ehr (no notes) |" in result["markdown"]
