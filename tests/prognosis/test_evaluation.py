"""Survival metrics of out-of-fold risks: the Breslow survival curves and the metric set."""

from __future__ import annotations

import numpy as np

from duplus.prognosis.api import PrognosisRequest, _config_with_preset
from duplus.prognosis.evaluation import bootstrap_ci, breslow_survival, eval_times, survival_metrics


def _data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t = rng.exponential(100 * np.exp(-risk))
    c = rng.uniform(10, 300, n)
    return risk, np.round(np.minimum(t, c), 1), (t <= c).astype(int)


def test_breslow_matches_scikit_survival() -> None:
    from sksurv.linear_model.coxph import BreslowEstimator

    risk, time, event = _data()
    times = eval_times(time, event)
    ours = breslow_survival(risk[:150], time[:150], event[:150], risk[150:], times)
    ref = BreslowEstimator().fit(risk[:150], event[:150].astype(bool), time[:150])
    expected = np.vstack([f(times) for f in ref.get_survival_function(risk[150:])])
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9)


def test_metrics_reward_the_true_risk() -> None:
    risk, time, event = _data(300)
    tr, te = slice(0, 200), slice(200, 300)
    times = eval_times(time[tr], event[tr])
    noise = np.random.default_rng(1).normal(size=300)
    good = survival_metrics(
        (time[tr], event[tr]),
        (time[te], event[te]),
        risk[te],
        breslow_survival(risk[tr], time[tr], event[tr], risk[te], times),
        times,
    )
    bad = survival_metrics(
        (time[tr], event[tr]),
        (time[te], event[te]),
        noise[te],
        breslow_survival(noise[tr], time[tr], event[tr], noise[te], times),
        times,
    )
    assert good["c_index"] > 0.65 and good["uno_c"] > 0.65 and good["auc"] > 0.65
    assert abs(bad["c_index"] - 0.5) < 0.1
    assert good["ibs"] < bad["ibs"]
    surv = breslow_survival(risk[tr], time[tr], event[tr], risk[te], times)
    ci = bootstrap_ci(time[te], event[te], risk[te], surv, times, n_boot=30)
    lo, hi = ci["c_index"]
    assert lo < good["c_index"] < hi


def test_preset_and_config_file(tmp_path) -> None:
    assert _config_with_preset(PrognosisRequest(action="cv", out=tmp_path, preset="cpu")).lora_r == 0
    paper = _config_with_preset(PrognosisRequest(action="cv", out=tmp_path, preset="paper"))
    assert (paper.lora_r, paper.lora_alpha, paper.epochs) == (32, 128.0, 20)
    cfg = tmp_path / "p.yaml"
    cfg.write_text("lora_r: 4\nepochs: 3\n")
    mixed = _config_with_preset(PrognosisRequest(action="cv", out=tmp_path, preset="paper", config=cfg))
    assert (mixed.lora_r, mixed.epochs, mixed.lora_alpha) == (4, 3, 128.0)  # the file wins


def test_auc_defined_with_administrative_censoring() -> None:
    """Everyone still event-free at 52 weeks is censored there and some events fall in week 52 (as
    in the Rossi study): the censoring weight at 52 is 1/0, which must not make the AUC undefined."""
    risk, time, event = _data(300)
    time = np.ceil(time / 5)
    event = np.where(time > 52, 0, event)
    time = np.minimum(time, 52)
    at_end = np.flatnonzero(time == 52)
    event[at_end[::3]] = 1  # some events in the last week too, the rest censored there
    tr, te = slice(0, 200), slice(200, 300)
    times = eval_times(time[tr], event[tr])
    surv = breslow_survival(risk[tr], time[tr], event[tr], risk[te], times)
    m = survival_metrics((time[tr], event[tr]), (time[te], event[te]), risk[te], surv, times)
    assert np.isfinite(m["auc"]) and m["auc"] > 0.6
