"""Survival metrics: Harrell's C-index of risk scores, its bootstrap interval, risk groups and
the log-rank test, all delegating to lifelines.

Convention: a *risk* grows with the hazard (earlier events), as in the HECKTOR challenge. lifelines
wants a score that grows with survival, so risks are negated before they are passed on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "concordance_index",
    "bootstrap_cindex",
    "risk_group_cutoffs",
    "risk_groups",
    "logrank_pvalue",
]

logger = logging.getLogger(__name__)


def _as_arrays(time: ArrayLike, risk: ArrayLike, event: ArrayLike) -> tuple[np.ndarray, ...]:
    t = np.asarray(time, dtype=float).reshape(-1)
    r = np.asarray(risk, dtype=float).reshape(-1)
    e = np.asarray(event, dtype=float).reshape(-1)
    if not (t.size == r.size == e.size):
        raise ValueError(f"time, risk and event must have the same length, got {t.size}, {r.size}, {e.size}")
    if not np.all(np.isfinite(r)):
        raise ValueError("risk scores contain NaN or infinite values")
    return t, r, e


def concordance_index(time: ArrayLike, risk: ArrayLike, event: ArrayLike) -> float:
    """Harrell's C-index of risk scores (1.0: higher risk always fails first; 0.5: random).

    Args:
        time: ``(N,)`` follow-up times.
        risk: ``(N,)`` risk scores, anti-concordant with time.
        event: ``(N,)`` 1 = event observed, 0 = censored.

    Raises:
        ValueError: when no pair is comparable (e.g. every subject censored): the C-index is undefined.
    """
    from lifelines.utils import concordance_index as lifelines_cindex

    t, r, e = _as_arrays(time, risk, event)
    if e.sum() == 0:
        raise ValueError("C-index undefined: no observed event (every subject is censored)")
    try:
        return float(lifelines_cindex(t, -r, e))
    except ZeroDivisionError as exc:
        raise ValueError("C-index undefined: no comparable pair of subjects") from exc


def bootstrap_cindex(
    time: ArrayLike,
    risk: ArrayLike,
    event: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """C-index with a percentile bootstrap confidence interval.

    Resamples subjects with replacement ``n_boot`` times; resamples without a comparable pair are
    skipped.

    Returns:
        ``(c, lo, hi)``: the C-index on the full sample and the ``alpha/2`` and ``1 - alpha/2``
        percentiles of the bootstrap distribution.
    """
    t, r, e = _as_arrays(time, risk, event)
    c = concordance_index(t, r, e)
    rng = np.random.default_rng(seed)
    n = t.size
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        try:
            values.append(concordance_index(t[idx], r[idx], e[idx]))
        except ValueError:
            continue
    if not values:
        return c, float("nan"), float("nan")
    if len(values) < n_boot:
        logger.info(
            "bootstrap C-index: %d of %d resamples had no comparable pair", n_boot - len(values), n_boot
        )
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return c, float(lo), float(hi)


def risk_group_cutoffs(risk: ArrayLike, n_groups: int = 2) -> np.ndarray:
    """Quantile cut-offs ``(n_groups - 1,)`` splitting ``risk`` into equal-sized groups (median for 2).

    Fit them on training risks and pass them to :func:`risk_groups` to group held-out patients.
    """
    if n_groups < 2:
        raise ValueError(f"n_groups must be at least 2, got {n_groups}")
    r = np.asarray(risk, dtype=float).reshape(-1)
    return np.quantile(r, np.arange(1, n_groups) / n_groups)


def risk_groups(
    risk: ArrayLike, n_groups: int = 2, cutoffs: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """Risk-group labels ``(N,)`` in ``0..n_groups-1`` (0 = lowest risk).

    Args:
        risk: ``(N,)`` risk scores.
        n_groups: number of groups; the default is a median split into low (0) and high (1) risk.
        cutoffs: ascending cut-offs (e.g. from :func:`risk_group_cutoffs` on the training fold);
            by default the quantiles of ``risk`` itself. A risk above a cut-off goes to the higher group.
    """
    r = np.asarray(risk, dtype=float).reshape(-1)
    cuts = risk_group_cutoffs(r, n_groups) if cutoffs is None else np.asarray(cutoffs, dtype=float)
    return np.searchsorted(cuts, r, side="left").astype(int)


def logrank_pvalue(time: ArrayLike, event: ArrayLike, groups: ArrayLike) -> float:
    """p-value of the (multivariate) log-rank test that the groups share one survival curve.

    Returns NaN when fewer than two groups are present.
    """
    from lifelines.statistics import multivariate_logrank_test

    t = np.asarray(time, dtype=float).reshape(-1)
    e = np.asarray(event, dtype=float).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if np.unique(g).size < 2:
        return float("nan")
    return float(multivariate_logrank_test(t, g, e).p_value)
