"""Cross-validation of the prognosis models (fold fits, baselines, summaries).

* :func:`stratified_kfold`: k folds stratified by event (numpy; no scikit-learn needed).
* :func:`cross_validate`: per-fold Harrell's and Uno's C, integrated Brier score and AUC(t) of the
  DuPLUS prognosis model in each mode (``ehr`` and ``both``: the linear Cox head of
  :mod:`duplus.prognosis.linear` on clinical columns + text [+ image]; ``ehr-text`` and ``image``:
  the neural head of :mod:`duplus.prognosis.model`) beside a lifelines Cox baseline on the tabular
  data (:class:`duplus.prognosis.tabular.TabularEncoder`; plus tumour volume when given), over
  repeated splits. Every transform is fitted on the training fold.
* :func:`train_and_predict`: one fit on all training patients (the run entry points of
  :mod:`duplus.prognosis.runs` call it).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from duplus.data.hecktor import check_survival_cohort
from duplus.errors import ConfigError, InputError
from duplus.metrics.survival import risk_group_cutoffs, risk_groups
from duplus.prognosis.config import MODES, PrognosisConfig
from duplus.prognosis.ehr import (
    EHRTemplate,
)
from duplus.prognosis.model import build_prognosis_model, fit_prognosis, predict_risk, text_dropout_draws
from duplus.prognosis.splits import stratified_kfold
from duplus.prognosis.tabular import TabularEncoder
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
]

logger = logging.getLogger(__name__)

BASELINE = "cox_clinical"
BASELINE_VOLUME = "cox_clinical+volume"


# ---------------------------------------------------------------------------------- splitting
# ---------------------------------------------------------------------------------- baseline
def build_tabular_design(
    train: pd.DataFrame, test: pd.DataFrame, template: EHRTemplate
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Unscaled numeric design matrices for a Cox baseline, fitted on ``train`` only
    (:class:`duplus.prognosis.tabular.TabularEncoder`: median-imputed numbers with missing
    indicators, one-hot categoricals, constant columns dropped)."""
    enc = TabularEncoder(template).fit(train)
    return enc.raw_frame(train), enc.raw_frame(test)


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
def needs_inputs(mode: str) -> tuple[bool, bool]:
    return mode in ("ehr", "ehr-text", "both"), mode in ("image", "both")


def base_encoder_factory(cfg: PrognosisConfig) -> Callable[[], nn.Module]:
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


def cohort_embeddings(
    texts: Sequence[str], factory: Callable[[], nn.Module], memo: dict[str, np.ndarray]
) -> np.ndarray:
    """Frozen text-encoder embeddings of every record, computed once per cohort."""
    if "emb" not in memo:
        from duplus.prognosis.linear import embed_texts

        memo["emb"] = embed_texts(factory(), texts)
    return memo["emb"]


@dataclasses.dataclass
class _Cohort:
    """What every fold reads: the table, its texts, image features and endpoints."""

    df: pd.DataFrame
    texts: Sequence[str] | None
    image_feats: np.ndarray | None
    time: np.ndarray
    event: np.ndarray
    template: EHRTemplate
    factory: Callable[[], nn.Module]
    memo: dict[str, Any]


def _fit_linear_mode(
    mode: str, c: _Cohort, cfg: PrognosisConfig, tr: np.ndarray, te: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``ehr`` / ``both``: the linear Cox head, fitted on the training rows only."""
    from duplus.prognosis.linear import Blocks, fit_linear_cox

    emb = cohort_embeddings(c.texts, c.factory, c.memo) if c.texts is not None else None
    blocks = Blocks(c.df, emb, c.image_feats if mode == "both" else None)
    model = fit_linear_cox(blocks.rows(tr), c.time[tr], c.event[tr], c.template, cfg.linear_settings())
    return model.risk(blocks.rows(tr)), model.risk(blocks.rows(te))


def _fit_neural_mode(
    mode: str, c: _Cohort, cfg: PrognosisConfig, tr: np.ndarray, te: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``ehr-text`` / ``image``: the neural head (LoRA text encoder with ``lora_r > 0``)."""
    need_text, need_image = needs_inputs(mode)
    model = build_prognosis_model(
        cfg,
        image_dim=c.image_feats.shape[1] if need_image and c.image_feats is not None else None,
        text_encoder=c.factory() if need_text else None,
    )
    texts = c.texts if need_text else None
    feats = c.image_feats if need_image else None
    states = _cohort_text_states(model, texts, c.memo.setdefault("states", {})) if texts else None
    tr_states = states.subset(tr) if states is not None else None
    te_states = states.subset(te, with_draws=False) if states is not None else None
    tr_texts = [texts[i] for i in tr] if texts is not None else None
    te_texts = [texts[i] for i in te] if texts is not None else None
    tr_feats = feats[tr] if feats is not None else None
    te_feats = feats[te] if feats is not None else None
    fit_prognosis(model, tr_texts, tr_feats, c.time[tr], c.event[tr], cfg, text_states=tr_states)
    return (
        predict_risk(model, tr_texts, tr_feats, text_states=tr_states),
        predict_risk(model, te_texts, te_feats, text_states=te_states),
    )


def _baseline_fits(
    c: _Cohort, cfg: PrognosisConfig, tr: np.ndarray, te: np.ndarray, tumour_volume: np.ndarray | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """lifelines' Cox on the clinical design (and with the tumour volume)."""
    x_tr, x_te = build_tabular_design(c.df.iloc[tr], c.df.iloc[te], c.template)
    designs = {BASELINE: (x_tr, x_te)}
    if tumour_volume is not None:
        vol = np.asarray(tumour_volume, dtype=float)
        designs[BASELINE_VOLUME] = (
            x_tr.assign(tumour_volume=np.log1p(vol[tr])),
            x_te.assign(tumour_volume=np.log1p(vol[te])),
        )
    out = {}
    for name, (a, b) in designs.items():
        try:
            out[name] = fit_cox_baseline(a, c.time[tr], c.event[tr], b, cfg.baseline_penalizer)
        except Exception as exc:  # noqa: BLE001 - lifelines convergence/linear-algebra failures
            logger.warning("baseline %s failed: %s", name, exc)
    return out


def _runnable_modes(modes: Sequence[str], texts: Any, image_feats: Any) -> list[str]:
    """The modes whose inputs are present (the others are logged and skipped)."""
    for mode in modes:
        if mode not in MODES:
            raise ConfigError(f"unknown prognosis mode {mode!r}; expected one of {', '.join(MODES)}")
    run_modes = []
    for mode in modes:
        need_text, need_image = needs_inputs(mode)
        if need_image and image_feats is None:
            logger.warning("mode '%s' skipped: no image features", mode)
        elif need_text and texts is None and mode == "ehr-text":
            logger.warning("mode '%s' skipped: no EHR texts", mode)
        else:
            run_modes.append(mode)
    return run_modes


def _fold_record(
    name: str,
    c: _Cohort,
    cfg: PrognosisConfig,
    where: tuple[int, int, np.ndarray, np.ndarray],
    risks: tuple[np.ndarray, np.ndarray],
    seconds: float,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """One fold's metrics row and its out-of-fold predictions (risk, group, survival at the
    cohort's evaluation times from a Breslow baseline of the training rows)."""
    from duplus.prognosis.evaluation import breslow_survival, eval_times, survival_metrics

    rep, k, tr, te = where
    r_tr, r_te = risks
    times = c.memo.setdefault("times", eval_times(c.time, c.event))
    surv = breslow_survival(r_tr, c.time[tr], c.event[tr], r_te, times)
    metrics = survival_metrics((c.time[tr], c.event[tr]), (c.time[te], c.event[te]), r_te, surv, times)
    row = {"repeat": rep, "fold": k, "mode": name, **metrics, "seconds": seconds}
    row.update(n_train=int(tr.size), n_test=int(te.size), events_test=int(c.event[te].sum()))
    logger.info("  %-20s C-index %.3f (%.1fs)", name, metrics["c_index"], seconds)
    cut = risk_group_cutoffs(r_tr, cfg.risk_groups)
    pred = pd.DataFrame(
        {
            "id": c.df["id"].astype(str).to_numpy()[te],
            "repeat": rep,
            "fold": k,
            "mode": name,
            "risk": r_te,
            "group": risk_groups(r_te, cutoffs=cut),
            "time": c.time[te],
            "event": c.event[te],
            **{f"surv@{t:g}": surv[:, j] for j, t in enumerate(times)},
        }
    )
    return row, pred


FOLD_COLUMNS = [
    "repeat",
    "fold",
    "mode",
    "c_index",
    "uno_c",
    "ibs",
    "auc",
    "seconds",
    "n_train",
    "n_test",
    "events_test",
]


def _check_inputs(df: pd.DataFrame, texts: Sequence[str] | None, image_feats: np.ndarray | None) -> int:
    """The number of patients, after checking the cohort and that texts and features have one row each."""
    check_survival_cohort(df)
    n = len(df)
    if texts is not None and len(texts) != n:
        raise InputError(None, f"{len(texts)} EHR texts for {n} patients")
    if image_feats is not None and len(image_feats) != n:
        raise InputError(None, f"{len(image_feats)} image feature rows for {n} patients")
    return n


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
        texts: EHR texts, one per row (for ``ehr``/``ehr-text``/``both``; ``ehr`` and ``both``
            also run on the clinical columns alone without them).
        image_feats: ``(N, F)`` image features (for ``image``/``both``).
        cfg: model/training settings; ``folds``, ``repeats`` and ``seed`` set the splits.
        modes: DuPLUS modes to evaluate; those whose inputs are absent are skipped (logged).
        baseline: also evaluate lifelines' Cox on the tabular data (``cox_clinical``), and with
            ``tumour_volume`` added (``cox_clinical+volume``).
        tumour_volume: ``(N,)`` tumour volumes (ml), optional.
        text_encoder_factory: returns a fresh base text encoder per model (default: load
            ``cfg.text_encoder`` once and deep-copy it). Frozen-layer outputs and frozen
            embeddings are computed once and shared by every model, so it must hand out copies of
            one encoder.
        return_predictions: also return the out-of-fold risks.

    Returns:
        Per-fold results (:data:`FOLD_COLUMNS`: Harrell's and Uno's C, integrated Brier score,
        mean time-dependent AUC, seconds); with ``return_predictions``, also ``(id, repeat, fold,
        mode, risk, group, time, event, surv@<t>...)`` where ``group`` uses cut-offs from the
        training fold's risks (0 = low risk).

    Raises:
        InputError: a cohort without events (C-index undefined), or inputs of the wrong length.
    """
    n = _check_inputs(df, texts, image_feats)
    run_modes = _runnable_modes(modes, texts, image_feats)
    if not run_modes and not baseline:
        raise ConfigError("nothing to cross-validate: no mode has its inputs and the baseline is off")
    c = _Cohort(
        df,
        texts,
        image_feats,
        df["time"].to_numpy(dtype=float),
        df["event"].to_numpy(dtype=int),
        cfg.ehr or EHRTemplate(),
        text_encoder_factory or base_encoder_factory(cfg),
        {},
    )
    rows: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    for rep in range(cfg.repeats):
        for k, te in enumerate(stratified_kfold(c.event, cfg.folds, seed=cfg.seed + rep)):
            tr = np.setdiff1d(np.arange(n), te)
            logger.info(
                "cross-validation: repeat %d, fold %d (%d/%d)",
                rep + 1,
                k + 1,
                rep * cfg.folds + k + 1,
                cfg.repeats * cfg.folds,
            )
            for name, risks, seconds in _fold_fits(
                c, cfg, run_modes, (rep, k, tr, te), baseline, tumour_volume
            ):
                row, pred = _fold_record(name, c, cfg, (rep, k, tr, te), risks, seconds)
                rows.append(row)
                preds.append(pred)
    result = pd.DataFrame(rows, columns=FOLD_COLUMNS)
    if return_predictions:
        return result, (pd.concat(preds, ignore_index=True) if preds else pd.DataFrame())
    return result


def _fold_fits(
    c: _Cohort,
    cfg: PrognosisConfig,
    modes: Sequence[str],
    where: tuple[int, int, np.ndarray, np.ndarray],
    baseline: bool,
    tumour_volume: np.ndarray | None,
) -> list[tuple[str, tuple[np.ndarray, np.ndarray], float]]:
    """``(name, (train risks, test risks), seconds)`` of every mode and baseline on one fold."""
    import time as _time

    rep, k, tr, te = where
    out = []
    for mode in modes:
        mcfg = dataclasses.replace(cfg, mode=mode, seed=cfg.seed + 1000 * rep + k)
        start = _time.perf_counter()
        fit = _fit_linear_mode if mcfg.is_linear else _fit_neural_mode
        risks = fit(mode, c, mcfg, tr, te)
        out.append((mode, risks, _time.perf_counter() - start))
    if baseline:
        start = _time.perf_counter()
        fits = _baseline_fits(c, cfg, tr, te, tumour_volume)
        out += [(name, r, (_time.perf_counter() - start) / len(fits)) for name, r in fits.items()]
    return out


def summarise_cv(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over folds per mode: ``mode, mean, sd, n_folds, text`` for Harrell's C, and
    ``<metric>_mean``, ``<metric>_sd`` for Uno's C, IBS, AUC and seconds when present."""
    rows = []
    for mode, g in folds.groupby("mode", sort=False):
        c = g["c_index"].dropna().to_numpy()
        mean = float(c.mean()) if c.size else float("nan")
        sd = float(c.std(ddof=1)) if c.size > 1 else float("nan")
        row: dict[str, Any] = {"mode": mode, "mean": mean, "sd": sd, "n_folds": int(c.size)}
        row["text"] = f"{mean:.3f} ± {sd:.3f}"
        for m in ("uno_c", "ibs", "auc", "seconds"):
            if m in g:
                v = g[m].dropna().to_numpy()
                row[f"{m}_mean"] = float(v.mean()) if v.size else float("nan")
                row[f"{m}_sd"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def bootstrap_summary(preds: pd.DataFrame, cfg: PrognosisConfig) -> dict[str, dict[str, tuple[float, float]]]:
    """Bootstrap CIs per mode of the first repeat's pooled out-of-fold predictions."""
    from duplus.prognosis.evaluation import bootstrap_ci

    out = {}
    cols = [c for c in preds.columns if c.startswith("surv@")]
    times = np.array([float(c.split("@", 1)[1]) for c in cols])
    for mode, g in preds[preds["repeat"] == 0].groupby("mode", sort=False):
        out[str(mode)] = bootstrap_ci(
            g["time"].to_numpy(float),
            g["event"].to_numpy(int),
            g["risk"].to_numpy(float),
            g[cols].to_numpy(float),
            times,
            n_boot=cfg.bootstrap,
            seed=cfg.seed,
        )
    return out


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
    need_text, need_image = needs_inputs(cfg.mode)
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
