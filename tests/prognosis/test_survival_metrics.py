"""C-index sign convention, bootstrap interval, risk groups, log-rank and the KM plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duplus.metrics.survival import (
    bootstrap_cindex,
    concordance_index,
    logrank_pvalue,
    risk_group_cutoffs,
    risk_groups,
)
from duplus.reporting.survival_plots import plot_km


def _cohort(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk))
    event = (rng.random(n) < 0.7).astype(int)
    return time, risk, event


def test_risk_equal_to_minus_time_is_perfect() -> None:
    time, _, event = _cohort()
    assert concordance_index(time, -time, event) == pytest.approx(1.0)
    assert concordance_index(time, time, event) == pytest.approx(0.0)


def test_true_risk_is_concordant() -> None:
    time, risk, event = _cohort()
    assert concordance_index(time, risk, event) > 0.65


def test_all_censored_is_an_error() -> None:
    time, risk, _ = _cohort(n=20)
    with pytest.raises(ValueError, match="censored"):
        concordance_index(time, risk, np.zeros(20))


def test_bootstrap_interval_contains_estimate() -> None:
    time, risk, event = _cohort()
    c, lo, hi = bootstrap_cindex(time, risk, event, n_boot=200, seed=1)
    assert lo <= c <= hi
    assert 0.0 < hi - lo < 0.3
    assert bootstrap_cindex(time, risk, event, n_boot=200, seed=1) == (c, lo, hi)


def test_risk_groups_median_split_and_fixed_cutoffs() -> None:
    risk = np.arange(10.0)
    groups = risk_groups(risk)
    assert groups.tolist() == [0] * 5 + [1] * 5
    cut = risk_group_cutoffs(risk)
    assert risk_groups(np.array([-1.0, 100.0]), cutoffs=cut).tolist() == [0, 1]
    assert sorted(set(risk_groups(risk, n_groups=3).tolist())) == [0, 1, 2]


def test_logrank_separates_groups() -> None:
    time, risk, event = _cohort(n=200)
    assert logrank_pvalue(time, event, risk_groups(risk)) < 0.01
    assert np.isnan(logrank_pvalue(time, event, np.zeros(200)))


def test_plot_km_writes_png(tmp_path: Path) -> None:
    time, risk, event = _cohort()
    out = tmp_path / "km" / "risk_groups.png"
    p = plot_km(time, event, risk_groups(risk), out, "test cohort")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert p == pytest.approx(logrank_pvalue(time, event, risk_groups(risk)))
    assert not [f for f in out.parent.iterdir() if f.name != out.name]  # no temp file left
