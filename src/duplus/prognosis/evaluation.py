"""Survival metrics of out-of-fold risks: Harrell's C, Uno's C, integrated Brier score, time-dependent AUC.

Risks are log relative hazards. Survival probabilities, which the Brier score needs, come from a
Breslow baseline hazard fitted on the *training* patients' risks, times and events:

    H0(t) = sum over event times t_i <= t of  d_i / sum_{j: t_j >= t_i} exp(r_j),
    S(t | r) = exp(-H0(t) * exp(r)).

Uno's C, the Brier score and the AUC are scikit-survival's (inverse-probability-of-censoring
weights from the training patients' follow-up). Each metric gets a percentile bootstrap CI over
patients (:func:`bootstrap_ci`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np

from duplus.metrics.survival import concordance_index

__all__ = ["METRICS", "eval_times", "breslow_survival", "survival_metrics", "bootstrap_ci"]

logger = logging.getLogger(__name__)

METRICS = ("c_index", "uno_c", "ibs", "auc")


def eval_times(time: np.ndarray, event: np.ndarray, n: int = 8) -> np.ndarray:
    """``n`` times at the 10th..80th percentiles of the event times (where follow-up is dense)."""
    t = np.asarray(time, dtype=float)[np.asarray(event).astype(bool)]
    return np.unique(np.quantile(t, np.linspace(0.1, 0.8, n))) if t.size else np.zeros(0)


def breslow_survival(
    risk_train: np.ndarray,
    time_train: np.ndarray,
    event_train: np.ndarray,
    risk: np.ndarray,
    times: np.ndarray,
) -> np.ndarray:
    """``(len(risk), len(times))`` survival probabilities from a Breslow baseline of the training rows."""
    r = np.asarray(risk_train, dtype=float)
    r = r - r.max()  # exp stays finite; the shift cancels in S
    t = np.asarray(time_train, dtype=float)
    e = np.asarray(event_train).astype(bool)
    uniq = np.unique(t[e])
    at_risk = np.array([np.exp(r[t >= u]).sum() for u in uniq])
    deaths = np.array([np.sum(e & (t == u)) for u in uniq])
    cum = np.concatenate([[0.0], np.cumsum(deaths / at_risk)])
    h0 = cum[np.searchsorted(uniq, np.asarray(times, dtype=float), side="right")]
    shift = np.asarray(risk, dtype=float) - np.asarray(risk_train, dtype=float).max()
    return np.exp(-np.outer(np.exp(shift), h0))


def _surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event).astype(bool), time=np.asarray(time, dtype=float))


def _within(times: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The evaluation times strictly inside the test patients' follow-up (sksurv's domain)."""
    return times[(times >= np.min(time)) & (times < np.max(time))]


def _safe(fn: Callable[[], float]) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(fn())
    except (ValueError, ZeroDivisionError, IndexError):
        return float("nan")


def survival_metrics(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    risk: np.ndarray,
    surv: np.ndarray,
    times: np.ndarray,
) -> dict[str, float]:
    """All :data:`METRICS` of test risks and survival curves (``surv (N, len(times))``).

    ``train``, ``test``: ``(time, event)``; NaN where a metric is undefined (no event, no
    comparable pair, no time inside the test follow-up).
    """
    from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score

    y_tr, y_te = _surv(*train), _surv(*test)
    keep = np.isin(times, _within(times, test[0]))
    ts, s = times[keep], surv[:, keep]
    tau = float(ts[-1]) if ts.size else None
    return {
        "c_index": _safe(lambda: concordance_index(test[0], risk, test[1])),
        "uno_c": _safe(lambda: concordance_index_ipcw(y_tr, y_te, risk, tau=tau)[0]),
        "ibs": _safe(lambda: integrated_brier_score(y_tr, y_te, s, ts)) if ts.size > 1 else float("nan"),
        "auc": _safe(lambda: cumulative_dynamic_auc(y_tr, _capped(test, ts, train[0]), risk, ts)[1])
        if ts.size
        else float("nan"),
    }


def _capped(test: tuple[np.ndarray, np.ndarray], ts: np.ndarray, train_time: np.ndarray) -> np.ndarray:
    """The test follow-up censored just after the last evaluation time. Beyond it a patient is a
    control at every evaluation time either way; without the cap, a patient followed as long as
    the longest training follow-up (administrative censoring, e.g. 52 weeks) gets a censoring
    weight of 1/0 and the AUC is undefined."""
    time, event = np.asarray(test[0], dtype=float), np.asarray(test[1]).astype(bool)
    later = np.concatenate([time[time > ts[-1]], np.asarray(train_time, dtype=float)[train_time > ts[-1]]])
    cap = (ts[-1] + later.min()) / 2 if later.size else ts[-1]
    return _surv(np.minimum(time, cap), event & (time <= cap))


def bootstrap_ci(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    surv: np.ndarray,
    times: np.ndarray,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of each metric over patients (one out-of-fold prediction each);
    the censoring weights use the whole cohort."""
    rng = np.random.default_rng(seed)
    n = len(time)
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        vals = survival_metrics((time, event), (time[idx], event[idx]), risk[idx], surv[idx], times)
        for m, v in vals.items():
            draws[m].append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for m, vs in draws.items():
        a = np.asarray(vs)[np.isfinite(vs)]
        out[m] = (float(np.percentile(a, lo)), float(np.percentile(a, hi))) if a.size else (np.nan, np.nan)
    return out
