"""Cross-validation, training and prediction runs for prognosis (what ``duplus prognosis`` calls).

* :func:`stratified_kfold`: k folds stratified by event (numpy; no scikit-learn needed).
* :func:`cross_validate`: per-fold C-index of the DuPLUS prognosis model in each mode (``image``,
  ``ehr``, ``both``) beside a lifelines Cox baseline on the tabular data (one-hot categoricals,
  median-imputed numbers + missing indicators; plus tumour volume when given), over repeated splits.
* :func:`run_prognosis_cv`, :func:`run_prognosis_train`, :func:`run_prognosis_predict`: plain
  argument entry points that read the data, write their outputs into a run folder and return.
  Predictions are written as ``PatientID,Prediction`` (a risk: higher = earlier relapse, the
  HECKTOR 2022 convention).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from duplus.config import from_dict, load_yaml, save_config
from duplus.data.hecktor import check_survival_cohort, read_clinical_csv, read_hecktor_clinical
from duplus.errors import ConfigError, InputError
from duplus.fileio import write_json_atomic, write_text_atomic
from duplus.metrics.survival import concordance_index, risk_group_cutoffs, risk_groups
from duplus.prognosis.ehr import (
    EHRTemplate,
    hecktor_template,
    is_missing,
    records_to_texts,
    resolve_columns,
    save_template,
    template_from_dict,
)
from duplus.prognosis.model import (
    MODES,
    PrognosisConfig,
    build_prognosis_model,
    fit_prognosis,
    load_prognosis,
    predict_risk,
    save_prognosis,
    text_dropout_draws,
)
from duplus.prognosis.text_states import TextStates, compute_text_states

__all__ = [
    "BASELINE",
    "BASELINE_VOLUME",
    "stratified_kfold",
    "build_tabular_design",
    "fit_cox_baseline",
    "cross_validate",
    "summarise_cv",
    "train_and_predict",
    "load_cohort",
    "load_image_features",
    "load_prognosis_cfg",
    "write_predictions",
    "run_prognosis_cv",
    "run_prognosis_train",
    "run_prognosis_predict",
]

logger = logging.getLogger(__name__)

BASELINE = "cox_clinical"
BASELINE_VOLUME = "cox_clinical+volume"


# ---------------------------------------------------------------------------------- splitting
def stratified_kfold(event: np.ndarray | Sequence[int], n_splits: int, seed: int = 0) -> list[np.ndarray]:
    """Test indices of ``n_splits`` folds with events spread evenly (each index in exactly one fold).

    Events and censored patients are shuffled separately and dealt round-robin, continuing the
    deal from one stratum into the next, so fold sizes differ by at most one.
    """
    e = np.asarray(event).reshape(-1).astype(int)
    if n_splits < 2 or n_splits > e.size:
        raise ValueError(f"n_splits must be in [2, {e.size}], got {n_splits}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(e == v)) for v in (1, 0)])
    fold_of = np.empty(e.size, dtype=int)
    fold_of[order] = np.arange(e.size) % n_splits
    return [np.flatnonzero(fold_of == k) for k in range(n_splits)]


# ---------------------------------------------------------------------------------- baseline
def _column_kind(values: pd.Series, col: str, template: EHRTemplate) -> str:
    if col in template.categorical_maps:
        return "categorical"
    if col in template.numeric_columns:
        return "numeric"
    present = values[~values.map(is_missing)]
    numeric = pd.to_numeric(present, errors="coerce")
    return "numeric" if len(present) and numeric.notna().all() else "categorical"


def build_tabular_design(
    train: pd.DataFrame, test: pd.DataFrame, template: EHRTemplate
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numeric design matrices for a Cox baseline, fitted on ``train`` only.

    Numeric columns: median-imputed, with a missing indicator when the training fold has gaps.
    Categorical columns (those with a category map, or not all numbers): one-hot with missing as
    its own level, first level dropped. Columns constant on the training fold are dropped.
    """
    cols = resolve_columns(train.columns, template)
    out_train: dict[str, np.ndarray] = {}
    out_test: dict[str, np.ndarray] = {}
    for col in cols:
        if col not in train.columns:
            continue
        tr = train[col]
        te = test[col] if col in test.columns else pd.Series([np.nan] * len(test))
        if _column_kind(tr, col, template) == "numeric":
            x_tr = pd.to_numeric(tr.where(~tr.map(is_missing)), errors="coerce").to_numpy(dtype=float)
            x_te = pd.to_numeric(te.where(~te.map(is_missing)), errors="coerce").to_numpy(dtype=float)
            miss_tr = np.isnan(x_tr)
            median = float(np.nanmedian(x_tr)) if (~miss_tr).any() else 0.0
            out_train[col] = np.where(miss_tr, median, x_tr)
            out_test[col] = np.where(np.isnan(x_te), median, x_te)
            if miss_tr.any():
                out_train[f"{col} missing"] = miss_tr.astype(float)
                out_test[f"{col} missing"] = np.isnan(x_te).astype(float)
        else:

            def level(v: Any) -> str:
                return "missing" if is_missing(v) else str(v).strip()

            l_tr = tr.map(level)
            l_te = te.map(level)
            levels = sorted(l_tr.unique())
            for lv in levels[1:]:
                out_train[f"{col}={lv}"] = (l_tr == lv).to_numpy(dtype=float)
                out_test[f"{col}={lv}"] = (l_te == lv).to_numpy(dtype=float)
    x_train = pd.DataFrame(out_train, index=train.index)
    x_test = pd.DataFrame(out_test, index=test.index)
    keep = [c for c in x_train.columns if x_train[c].std() > 0]
    return x_train[keep], x_test[keep]


def fit_cox_baseline(
    x_train: pd.DataFrame,
    time: np.ndarray,
    event: np.ndarray,
    x_test: pd.DataFrame,
    penalizer: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit lifelines' ``CoxPHFitter`` (L2 ``penalizer``) on ``x_train``.

    Returns:
        Log partial hazards (risks) of the training and the test patients.
    """
    from lifelines import CoxPHFitter

    df = x_train.copy()
    df["__time"] = np.asarray(time, dtype=float)
    df["__event"] = np.asarray(event, dtype=float)
    cph = CoxPHFitter(penalizer=penalizer)
    cph.fit(df, duration_col="__time", event_col="__event")

    def risk(x: pd.DataFrame) -> np.ndarray:
        return np.asarray(cph.predict_log_partial_hazard(x), dtype=float).reshape(-1)

    return risk(x_train), risk(x_test)


# ---------------------------------------------------------------------------------- cross-validation
def _needs(mode: str) -> tuple[bool, bool]:
    return mode in ("ehr", "both"), mode in ("image", "both")


def _base_encoder_factory(cfg: PrognosisConfig) -> Callable[[], nn.Module]:
    """Load the base text encoder once; hand out deep copies (LoRA is applied in place)."""
    base: list[nn.Module] = []

    def factory() -> nn.Module:
        if not base:
            from duplus.text.encoder import TextEncoder

            base.append(TextEncoder(cfg.text_encoder, pooling=cfg.pooling, max_length=cfg.max_length))
        return copy.deepcopy(base[0])

    return factory


def _cohort_text_states(
    model: Any, texts: Sequence[str], memo: dict[tuple[str, int, int], TextStates]
) -> TextStates | None:
    """The frozen-layer states of all ``texts`` for ``model``'s text encoder, computed once per
    cohort (every model's encoder is a copy of the same base); ``None`` with nothing to skip."""
    layer = model.text_frozen_layers
    if layer == 0:
        return None
    draws = text_dropout_draws(model)
    key = (str(getattr(model.text_encoder, "model_id", "")), layer, draws)
    if key not in memo:
        memo[key] = compute_text_states(model.text_encoder, texts, layer, dropout_draws=draws)
        logger.info(
            "EHR text: %d frozen encoder layer(s) run once for %d patients (+%d dropout draws)",
            layer,
            len(texts),
            memo[key].num_draws,
        )
    return memo[key]


def _c_or_nan(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    try:
        return concordance_index(time, risk, event)
    except ValueError:
        return float("nan")


def cross_validate(
    df: pd.DataFrame,
    texts: Sequence[str] | None,
    image_feats: np.ndarray | None,
    cfg: PrognosisConfig,
    modes: Sequence[str] = ("image", "ehr", "both"),
    *,
    baseline: bool = True,
    tumour_volume: np.ndarray | None = None,
    text_encoder_factory: Callable[[], nn.Module] | None = None,
    return_predictions: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Repeated stratified k-fold cross-validation of the prognosis model and the Cox baseline.

    Args:
        df: the cohort with ``id``, ``time``, ``event`` and clinical columns (see
            :func:`duplus.data.hecktor.read_clinical_csv`).
        texts: EHR texts, one per row (for ``ehr``/``both``).
        image_feats: ``(N, F)`` image features (for ``image``/``both``).
        cfg: model/training settings; ``folds``, ``repeats`` and ``seed`` set the splits.
        modes: DuPLUS modes to evaluate; those whose inputs are absent are skipped (logged).
        baseline: also evaluate lifelines' Cox on the tabular data (``cox_clinical``), and with
            ``tumour_volume`` added (``cox_clinical+volume``).
        tumour_volume: ``(N,)`` tumour volumes (ml), optional.
        text_encoder_factory: returns a fresh base text encoder per model (default: load
            ``cfg.text_encoder`` once and deep-copy it). The outputs of its frozen layers are
            computed once and shared by every model, so it must hand out copies of one encoder.
        return_predictions: also return the out-of-fold risks.

    Returns:
        Per-fold results with columns ``repeat, fold, mode, c_index, n_train, n_test, events_test``;
        with ``return_predictions``, also ``(id, repeat, fold, mode, risk, group, time, event)``
        where ``group`` uses cut-offs from the training fold's risks (0 = low risk).

    Raises:
        InputError: a cohort without events (C-index undefined), or inputs of the wrong length.
    """
    check_survival_cohort(df)
    n = len(df)
    for mode in modes:
        if mode not in MODES:
            raise ConfigError(f"unknown prognosis mode {mode!r}; expected one of {', '.join(MODES)}")
    if texts is not None and len(texts) != n:
        raise InputError(None, f"{len(texts)} EHR texts for {n} patients")
    if image_feats is not None and len(image_feats) != n:
        raise InputError(None, f"{len(image_feats)} image feature rows for {n} patients")
    run_modes = []
    for mode in modes:
        need_text, need_image = _needs(mode)
        if (need_text and texts is None) or (need_image and image_feats is None):
            logger.warning(
                "mode '%s' skipped: no %s",
                mode,
                "EHR texts" if need_text and texts is None else "image features",
            )
            continue
        run_modes.append(mode)
    if not run_modes and not baseline:
        raise ConfigError("nothing to cross-validate: no mode has its inputs and the baseline is off")
    factory = text_encoder_factory or _base_encoder_factory(cfg)
    template = cfg.ehr or EHRTemplate()
    time = df["time"].to_numpy(dtype=float)
    event = df["event"].to_numpy(dtype=int)
    ids = df["id"].astype(str).to_numpy()
    rows: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    text_memo: dict[tuple[str, int, int], TextStates] = {}
    total = cfg.repeats * cfg.folds
    for rep in range(cfg.repeats):
        folds = stratified_kfold(event, cfg.folds, seed=cfg.seed + rep)
        for k, test_idx in enumerate(folds):
            train_idx = np.setdiff1d(np.arange(n), test_idx)
            logger.info(
                "cross-validation: repeat %d, fold %d (%d/%d)", rep + 1, k + 1, rep * cfg.folds + k + 1, total
            )
            results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for mode in run_modes:
                mcfg = dataclasses.replace(cfg, mode=mode, seed=cfg.seed + 1000 * rep + k)
                need_text, need_image = _needs(mode)
                model = build_prognosis_model(
                    mcfg,
                    image_dim=image_feats.shape[1] if need_image and image_feats is not None else None,
                    text_encoder=factory() if need_text else None,
                )
                tr_texts = [texts[i] for i in train_idx] if need_text and texts is not None else None
                te_texts = [texts[i] for i in test_idx] if need_text and texts is not None else None
                tr_feats = image_feats[train_idx] if need_image and image_feats is not None else None
                te_feats = image_feats[test_idx] if need_image and image_feats is not None else None
                states = _cohort_text_states(model, texts, text_memo) if need_text and texts else None
                tr_states = states.subset(train_idx) if states is not None else None
                te_states = states.subset(test_idx, with_draws=False) if states is not None else None
                fit_prognosis(
                    model, tr_texts, tr_feats, time[train_idx], event[train_idx], mcfg, text_states=tr_states
                )
                results[mode] = (
                    predict_risk(model, tr_texts, tr_feats, text_states=tr_states),
                    predict_risk(model, te_texts, te_feats, text_states=te_states),
                )
                del model
            if baseline:
                x_tr, x_te = build_tabular_design(df.iloc[train_idx], df.iloc[test_idx], template)
                designs = {BASELINE: (x_tr, x_te)}
                if tumour_volume is not None:
                    vol = np.asarray(tumour_volume, dtype=float)
                    designs[BASELINE_VOLUME] = (
                        x_tr.assign(tumour_volume=np.log1p(vol[train_idx])),
                        x_te.assign(tumour_volume=np.log1p(vol[test_idx])),
                    )
                for name, (a, b) in designs.items():
                    try:
                        r_tr, r_te = fit_cox_baseline(
                            a, time[train_idx], event[train_idx], b, cfg.baseline_penalizer
                        )
                    except Exception as exc:  # noqa: BLE001 - lifelines convergence/linear-algebra failures
                        logger.warning(
                            "baseline %s failed on repeat %d fold %d: %s", name, rep + 1, k + 1, exc
                        )
                        continue
                    results[name] = (r_tr, r_te)
            for name, (r_tr, r_te) in results.items():
                c = _c_or_nan(time[test_idx], r_te, event[test_idx])
                rows.append(
                    {
                        "repeat": rep,
                        "fold": k,
                        "mode": name,
                        "c_index": c,
                        "n_train": int(train_idx.size),
                        "n_test": int(test_idx.size),
                        "events_test": int(event[test_idx].sum()),
                    }
                )
                logger.info("  %-20s C-index %.3f", name, c)
                if return_predictions:
                    cut = risk_group_cutoffs(r_tr, cfg.risk_groups)
                    preds.append(
                        pd.DataFrame(
                            {
                                "id": ids[test_idx],
                                "repeat": rep,
                                "fold": k,
                                "mode": name,
                                "risk": r_te,
                                "group": risk_groups(r_te, cutoffs=cut),
                                "time": time[test_idx],
                                "event": event[test_idx],
                            }
                        )
                    )
    result = pd.DataFrame(
        rows, columns=["repeat", "fold", "mode", "c_index", "n_train", "n_test", "events_test"]
    )
    if return_predictions:
        return result, (pd.concat(preds, ignore_index=True) if preds else pd.DataFrame())
    return result


def summarise_cv(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd of the per-fold C-index per mode (``mode, mean, sd, n_folds, text``)."""
    rows = []
    for mode, g in folds.groupby("mode", sort=False):
        c = g["c_index"].dropna().to_numpy()
        mean = float(c.mean()) if c.size else float("nan")
        sd = float(c.std(ddof=1)) if c.size > 1 else float("nan")
        rows.append(
            {"mode": mode, "mean": mean, "sd": sd, "n_folds": int(c.size), "text": f"{mean:.3f} ± {sd:.3f}"}
        )
    return pd.DataFrame(rows, columns=["mode", "mean", "sd", "n_folds", "text"])


def train_and_predict(
    train_texts: Sequence[str] | None,
    train_feats: np.ndarray | None,
    time: np.ndarray,
    event: np.ndarray,
    cfg: PrognosisConfig,
    test_texts: Sequence[str] | None = None,
    test_feats: np.ndarray | None = None,
    text_encoder: nn.Module | None = None,
) -> tuple[Any, np.ndarray | None, dict[str, list[float]]]:
    """Fit one model on all training patients; predict test risks when test inputs are given.

    Returns:
        ``(model, test_risk or None, history)``.
    """
    need_text, need_image = _needs(cfg.mode)
    model = build_prognosis_model(
        cfg,
        image_dim=train_feats.shape[1] if need_image and train_feats is not None else None,
        text_encoder=text_encoder,
    )
    history = fit_prognosis(
        model,
        list(train_texts) if need_text and train_texts is not None else None,
        train_feats if need_image else None,
        time,
        event,
        cfg,
    )
    test_risk = None
    if (test_texts is not None or not need_text) and (test_feats is not None or not need_image):
        test_risk = predict_risk(
            model, list(test_texts) if need_text and test_texts is not None else None, test_feats
        )
    return model, test_risk, history


# ---------------------------------------------------------------------------------- run entry points
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


def _write_markdown(path: Path, summary: pd.DataFrame, cfg: PrognosisConfig, n: int, events: int) -> None:
    lines = [
        "# Prognosis cross-validation",
        "",
        f"{n} patients, {events} events; {cfg.folds}-fold stratified CV x {cfg.repeats} repeat(s), seed {cfg.seed}.",
        "",
        "| mode | C-index (mean ± sd) | folds |",
        "|---|---|---|",
    ]
    lines += [f"| {r.mode} | {r.text} | {r.n_folds} |" for r in summary.itertuples()]
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
    write_text_atomic(out / "cv_folds.csv", folds.to_csv(index=False))
    write_text_atomic(out / "cv_predictions.csv", preds.to_csv(index=False))
    write_text_atomic(out / "cv_summary.csv", summary.to_csv(index=False))
    _write_markdown(out / "cv_summary.md", summary, cfg, len(df), int(df["event"].sum()))
    metrics = {
        r.mode: {"c_index_mean": r.mean, "c_index_sd": r.sd, "n_folds": r.n_folds}
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
    need_text, need_image = _needs(cfg.mode)
    if need_image and feats is None:
        raise ConfigError(f"prognosis mode '{cfg.mode}' needs image features (--features)")
    time = df["time"].to_numpy(dtype=float)
    event = df["event"].to_numpy(dtype=int)
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
    model, meta = load_prognosis(model_dir)
    cfg = model.cfg
    data = Path(data)
    if data.is_dir():
        df = read_hecktor_clinical(data, split=split)
    else:
        df = read_clinical_csv(data, id_col, None, None)
    ids = df["id"].tolist()
    need_text, need_image = _needs(cfg.mode)
    texts = records_to_texts(df, cfg.ehr or EHRTemplate()) if need_text else None
    feats = None
    if need_image:
        if features is None:
            raise ConfigError(f"the model ({cfg.mode}) needs image features (--features)")
        feats, _, _ = load_image_features(features, ids)
    with torch.no_grad():
        risk = predict_risk(model, texts, feats)
    logger.info(
        "predicted %d risks with the %s model (trained on %s patients)",
        len(ids),
        cfg.mode,
        meta.get("n_train"),
    )
    return write_predictions(out_csv, ids, risk)
