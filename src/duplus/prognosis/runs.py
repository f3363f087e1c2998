"""Prognosis run entry points (what ``duplus prognosis`` calls) and their cohort and file handling.

* :func:`run_prognosis_cv`, :func:`run_prognosis_train`, :func:`run_prognosis_predict`: plain
  argument entry points that read the data, write their outputs into a run folder and return.
  Predictions are written as ``PatientID,Prediction`` (a risk: higher = earlier relapse, the
  HECKTOR 2022 convention).
* :func:`load_cohort`, :func:`load_image_features`, :func:`load_prognosis_cfg`: reading the inputs.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from duplus.config import from_dict, load_yaml, save_config
from duplus.data.hecktor import check_survival_cohort, read_clinical_csv, read_hecktor_clinical
from duplus.errors import ConfigError, InputError
from duplus.fileio import write_json_atomic, write_text_atomic
from duplus.metrics.survival import concordance_index, risk_group_cutoffs
from duplus.prognosis.config import PrognosisConfig
from duplus.prognosis.cv import (
    base_encoder_factory,
    bootstrap_summary,
    cohort_embeddings,
    cross_validate,
    needs_inputs,
    summarise_cv,
    train_and_predict,
)
from duplus.prognosis.ehr import (
    EHRTemplate,
    hecktor_template,
    records_to_texts,
    resolve_columns,
    save_template,
    template_from_dict,
)
from duplus.prognosis.model import load_prognosis, predict_risk, save_prognosis

__all__ = [
    "load_cohort",
    "load_image_features",
    "load_prognosis_cfg",
    "write_predictions",
    "run_prognosis_cv",
    "run_prognosis_train",
    "run_prognosis_predict",
]

logger = logging.getLogger(__name__)


def load_cohort(
    data: str | Path,
    *,
    id_col: str = "PatientID",
    time_col: str | None = "RFS",
    event_col: str | None = "Relapse",
    split: str = "training",
) -> tuple[pd.DataFrame, EHRTemplate]:
    """Read a cohort: a HECKTOR 2022 folder or a clinical CSV; and its default EHR template.

    For a CSV the default template writes every column but id/time/event.
    """
    data = Path(data)
    if data.is_dir():
        return read_hecktor_clinical(data, split=split), hecktor_template()
    return read_clinical_csv(data, id_col, time_col, event_col), EHRTemplate()


def load_image_features(
    path: str | Path, ids: Sequence[str]
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Image features from an ``.npz`` (see :func:`duplus.prognosis.features.save_feature_cache`),
    ordered as ``ids``; returns ``(features (N, F), names, tumour_volume (N,) or None)``."""
    from duplus.prognosis.features import load_feature_cache

    cache = load_feature_cache(path)
    pos = {pid: i for i, pid in enumerate(cache["ids"])}
    absent = [pid for pid in ids if pid not in pos]
    if absent:
        raise InputError(path, f"no image features for {len(absent)} patient(s): {', '.join(absent[:5])}")
    order = np.array([pos[pid] for pid in ids], dtype=int)
    vol = cache["tumour_volume"]
    return cache["features"][order], cache["names"], (vol[order] if vol is not None else None)


def load_prognosis_cfg(config: PrognosisConfig | str | Path | dict | None) -> PrognosisConfig:
    """A :class:`PrognosisConfig` from an object, a YAML file (optionally under a ``prognosis:`` key)
    or a mapping; ``None`` = defaults."""
    if config is None:
        return PrognosisConfig()
    if isinstance(config, PrognosisConfig):
        return copy.deepcopy(config)
    where = "prognosis"
    if isinstance(config, str | Path):
        where = str(config)
        config = load_yaml(config)
        if "prognosis" in config and isinstance(config["prognosis"], dict):
            config = config["prognosis"]
    data = dict(config)
    ehr = data.pop("ehr", None)
    cfg = from_dict(PrognosisConfig, data, where=where)
    if ehr is not None:
        cfg.ehr = template_from_dict(ehr, where=f"{where}: ehr")
    return cfg


def _resolve_template(cfg: PrognosisConfig, default: EHRTemplate, df: pd.DataFrame) -> EHRTemplate:
    """The run's template with its column list fixed, so prediction writes the same fields."""
    template = copy.deepcopy(cfg.ehr or default)
    if template.columns is None:
        template.columns = resolve_columns(df.columns, template)
    return template


def write_predictions(path: str | Path, ids: Sequence[str], risk: np.ndarray) -> Path:
    """Write ``PatientID,Prediction`` (risk, anti-concordant with survival) atomically."""
    out = pd.DataFrame({"PatientID": list(ids), "Prediction": np.asarray(risk, dtype=float)})
    write_text_atomic(path, out.to_csv(index=False))
    return Path(path)


def _write_markdown(
    path: Path,
    summary: pd.DataFrame,
    cfg: PrognosisConfig,
    n: int,
    events: int,
    cis: dict[str, dict[str, tuple[float, float]]],
) -> None:
    """``cv_summary.md``: mean ± sd over folds, and bootstrap 95% CIs (first repeat, pooled)."""

    def cell(r: Any, m: str) -> str:
        mean, sd = (r.mean, r.sd) if m == "c_index" else (getattr(r, f"{m}_mean"), getattr(r, f"{m}_sd"))
        lo, hi = cis.get(r.mode, {}).get(m, (float("nan"), float("nan")))
        ci = f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""
        if not np.isfinite(mean):
            return "n/a"  # no fold could compute it (e.g. IBS when a test fold outlives its training fold)
        spread = f" ± {sd:.3f}" if np.isfinite(sd) else " (one fold)"
        return f"{mean:.3f}{spread}{ci}"

    lines = [
        "# Prognosis cross-validation",
        "",
        f"{n} patients, {events} events; {cfg.folds}-fold stratified CV x {cfg.repeats} repeat(s), seed {cfg.seed}.",
        "All figures are out-of-fold (test folds): mean ± sd over folds"
        + (
            f", [95% bootstrap CI, {cfg.bootstrap} resamples of the first repeat's pooled predictions]."
            if cis
            else "."
        ),
        "IBS: integrated Brier score (lower is better), survival from a Breslow baseline of each training fold;",
        "AUC: mean cumulative/dynamic AUC at the 10th-80th percentiles of the event times.",
        "",
        "| mode | Harrell's C | Uno's C | IBS | AUC(t) | s/fold | folds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        metrics = " | ".join(cell(r, m) for m in ("c_index", "uno_c", "ibs", "auc"))
        lines.append(f"| {r.mode} | {metrics} | {r.seconds_mean:.1f} | {r.n_folds} |")
    write_text_atomic(path, "\n".join(lines) + "\n")


def _prepare(
    data: str | Path,
    out: str | Path,
    config: PrognosisConfig | str | Path | dict | None,
    features: str | Path | None,
    id_col: str,
    time_col: str,
    event_col: str,
) -> tuple[Path, pd.DataFrame, PrognosisConfig, list[str], np.ndarray | None, np.ndarray | None]:
    out = Path(out)
    cfg = load_prognosis_cfg(config)
    df, default_template = load_cohort(data, id_col=id_col, time_col=time_col, event_col=event_col)
    check_survival_cohort(df)
    cfg.ehr = _resolve_template(cfg, default_template, df)
    texts = records_to_texts(df, cfg.ehr)
    feats = vol = None
    if features is not None:
        feats, _, vol = load_image_features(features, df["id"].tolist())
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "prognosis_config.yaml")
    save_template(cfg.ehr, out / "ehr_template.yaml")
    return out, df, cfg, texts, feats, vol


def run_prognosis_cv(
    data: str | Path,
    out: str | Path,
    *,
    config: PrognosisConfig | str | Path | dict | None = None,
    modes: Sequence[str] = ("image", "ehr", "both"),
    features: str | Path | None = None,
    id_col: str = "PatientID",
    time_col: str = "RFS",
    event_col: str = "Relapse",
    baseline: bool = True,
    plot: bool = True,
) -> pd.DataFrame:
    """``duplus prognosis cv``: cross-validate on a HECKTOR folder or clinical CSV.

    Writes into ``out``: ``prognosis_config.yaml``, ``ehr_template.yaml``, ``cv_folds.csv``,
    ``cv_predictions.csv`` (out-of-fold risks and groups), ``cv_summary.csv``, ``cv_summary.md``,
    ``metrics.json`` and ``km_<mode>.png`` (out-of-fold risk groups of the first repeat).

    Returns:
        The summary table (mode, mean, sd, n_folds, text).
    """
    out, df, cfg, texts, feats, vol = _prepare(data, out, config, features, id_col, time_col, event_col)
    folds, preds = cross_validate(
        df, texts, feats, cfg, modes, baseline=baseline, tumour_volume=vol, return_predictions=True
    )
    summary = summarise_cv(folds)
    cis = bootstrap_summary(preds, cfg) if cfg.bootstrap > 0 and len(preds) else {}
    write_text_atomic(out / "cv_folds.csv", folds.to_csv(index=False))
    write_text_atomic(out / "cv_predictions.csv", preds.to_csv(index=False))
    write_text_atomic(out / "cv_summary.csv", summary.to_csv(index=False))
    _write_markdown(out / "cv_summary.md", summary, cfg, len(df), int(df["event"].sum()), cis)
    metrics = {
        r.mode: {
            "c_index_mean": r.mean,
            "c_index_sd": r.sd,
            "n_folds": r.n_folds,
            **{k: v for k, v in r._asdict().items() if k.endswith(("_mean", "_sd"))},
            "bootstrap_ci95": {m: list(v) for m, v in cis.get(r.mode, {}).items()},
        }
        for r in summary.itertuples()
    }
    if plot and len(preds):
        from duplus.reporting.survival_plots import plot_km

        for mode in preds["mode"].unique():
            p = preds[(preds["mode"] == mode) & (preds["repeat"] == 0)]
            pval = plot_km(
                p["time"], p["event"], p["group"], out / f"km_{mode}.png", f"Out-of-fold risk groups: {mode}"
            )
            metrics[mode]["logrank_p"] = pval
    write_json_atomic(out / "metrics.json", metrics)
    return summary


def run_prognosis_train(
    data: str | Path,
    out: str | Path,
    *,
    config: PrognosisConfig | str | Path | dict | None = None,
    features: str | Path | None = None,
    id_col: str = "PatientID",
    time_col: str = "RFS",
    event_col: str = "Relapse",
) -> Path:
    """``duplus prognosis train``: fit on every patient and save the model into ``out/model``.

    Also writes the training history and the (optimistic, in-sample) C-index to ``metrics.json``.

    Returns:
        The model folder (for :func:`run_prognosis_predict`).
    """
    out, df, cfg, texts, feats, _ = _prepare(data, out, config, features, id_col, time_col, event_col)
    need_text, need_image = needs_inputs(cfg.mode)
    if need_image and feats is None:
        raise ConfigError(f"prognosis mode '{cfg.mode}' needs image features (--features)")
    time = df["time"].to_numpy(dtype=float)
    event = df["event"].to_numpy(dtype=int)
    if cfg.is_linear:
        return _train_linear(out, df, cfg, texts, feats)
    model, _, history = train_and_predict(texts if need_text else None, feats, time, event, cfg)
    risk = predict_risk(model, texts if need_text else None, feats if need_image else None)
    cut = risk_group_cutoffs(risk, cfg.risk_groups)
    model_dir = save_prognosis(
        model, out / "model", meta={"n_train": len(df), "risk_cutoffs": [float(c) for c in cut]}
    )
    write_json_atomic(
        out / "metrics.json",
        {"train_c_index_in_sample": concordance_index(time, risk, event), "history": history, "n": len(df)},
    )
    return model_dir


def run_prognosis_predict(
    model_dir: str | Path,
    data: str | Path,
    out_csv: str | Path,
    *,
    features: str | Path | None = None,
    id_col: str = "PatientID",
    split: str = "testing",
) -> Path:
    """``duplus prognosis predict``: write ``PatientID,Prediction`` risks for a cohort.

    Args:
        model_dir: a folder from :func:`run_prognosis_train`.
        data: a clinical CSV (endpoint columns not needed) or a HECKTOR folder (``split`` CSVs).
        out_csv: the predictions CSV, written atomically.
        features: image features ``.npz`` for models that use images.
        id_col: the id column of a CSV; the output column is always ``PatientID``.
    """
    from duplus.prognosis.model import load_prognosis_config

    cfg = load_prognosis_config(model_dir)
    data = Path(data)
    if data.is_dir():
        df = read_hecktor_clinical(data, split=split)
    else:
        df = read_clinical_csv(data, id_col, None, None)
    ids = df["id"].tolist()
    need_text, need_image = needs_inputs(cfg.mode)
    texts = records_to_texts(df, cfg.ehr or EHRTemplate()) if need_text else None
    feats = None
    if need_image:
        if features is None:
            raise ConfigError(f"the model ({cfg.mode}) needs image features (--features)")
        feats, _, _ = load_image_features(features, ids)
    if cfg.is_linear:
        risk, meta = _predict_linear(model_dir, cfg, df, texts, feats)
    else:
        model, meta = load_prognosis(model_dir)
        with torch.no_grad():
            risk = predict_risk(model, texts, feats)
    logger.info(
        "predicted %d risks with the %s model (trained on %s patients)",
        len(ids),
        cfg.mode,
        meta.get("n_train"),
    )
    return write_predictions(out_csv, ids, risk)


def _train_linear(
    out: Path, df: pd.DataFrame, cfg: PrognosisConfig, texts: list[str], feats: np.ndarray | None
) -> Path:
    """``train`` of an ``ehr`` / ``both`` model: the linear Cox head on every patient."""
    from duplus.prognosis.linear import Blocks, fit_linear_cox, save_linear_cox

    time = df["time"].to_numpy(dtype=float)
    event = df["event"].to_numpy(dtype=int)
    emb = cohort_embeddings(texts, base_encoder_factory(cfg), {})
    blocks = Blocks(df, emb, feats if cfg.mode == "both" else None)
    template = cfg.ehr or EHRTemplate()
    model = fit_linear_cox(blocks, time, event, template, cfg.linear_settings())
    risk = model.risk(blocks)
    folder = out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder / "prognosis_config.yaml")
    cut = risk_group_cutoffs(risk, cfg.risk_groups)
    save_linear_cox(model, folder, meta={"n_train": len(df), "risk_cutoffs": [float(c) for c in cut]})
    write_json_atomic(
        out / "metrics.json",
        {
            "train_c_index_in_sample": concordance_index(time, risk, event),
            "n": len(df),
            "inner_cv": model.inner_cv,
        },
    )
    return folder


def _predict_linear(
    model_dir: str | Path,
    cfg: PrognosisConfig,
    df: pd.DataFrame,
    texts: list[str] | None,
    feats: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Risks of a saved ``ehr`` / ``both`` model."""
    from duplus.prognosis.linear import Blocks, load_linear_cox

    model, meta = load_linear_cox(model_dir, cfg.ehr or EHRTemplate())
    emb = None
    if model.design.text is not None and model.design.text_scale != 0 and texts is not None:
        emb = cohort_embeddings(texts, base_encoder_factory(cfg), {})
    return model.risk(Blocks(df, emb, feats)), meta
