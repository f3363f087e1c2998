"""Cox partial likelihood: lifelines agreement (Efron), a numpy reference (Breslow), edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from duplus.losses.cox import cox_ph_loss


def _cohort(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponential survival with coefficients (0.8, -0.5, 0.3), times rounded to force ties."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    t = rng.exponential(1.0 / np.exp(x @ np.array([0.8, -0.5, 0.3])))
    c = rng.exponential(2.0, size=n)
    event = (t <= c).astype(float)
    time = np.ceil(np.minimum(t, c) * 4) / 4
    return x, time, event


def _fit_torch(x: np.ndarray, time: np.ndarray, event: np.ndarray, ties: str) -> np.ndarray:
    xt, tt, et = (torch.tensor(a, dtype=torch.float64) for a in (x, time, event))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = cox_ph_loss(xt @ w, tt, et, ties=ties, reduction="sum")
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def _breslow_loglik_numpy(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    total = 0.0
    for t in np.unique(time[event == 1]):
        dying = (time == t) & (event == 1)
        at_risk = time >= t
        total += risk[dying].sum() - dying.sum() * np.log(np.exp(risk[at_risk]).sum())
    return float(total)


def _efron_loglik_numpy(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    total = 0.0
    for t in np.unique(time[event == 1]):
        dying = (time == t) & (event == 1)
        d = int(dying.sum())
        a = np.exp(risk[time >= t]).sum()
        b = np.exp(risk[dying]).sum()
        total += risk[dying].sum() - sum(np.log(a - k / d * b) for k in range(d))
    return float(total)


def test_efron_coefficients_match_lifelines() -> None:
    from lifelines import CoxPHFitter

    x, time, event = _cohort()
    assert len(np.unique(time)) < len(time) / 4  # heavily tied
    df = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    cph = CoxPHFitter(penalizer=0.0).fit(df, "T", "E")
    w = _fit_torch(x, time, event, "efron")
    np.testing.assert_allclose(w, cph.params_.to_numpy(), atol=1e-3)
    loglik = -cox_ph_loss(torch.tensor(x @ w), torch.tensor(time), torch.tensor(event), reduction="sum")
    assert loglik.item() == pytest.approx(cph.log_likelihood_, abs=1e-6)


@pytest.mark.parametrize(
    "ties, reference", [("breslow", _breslow_loglik_numpy), ("efron", _efron_loglik_numpy)]
)
def test_loss_matches_numpy_reference(ties: str, reference) -> None:
    x, time, event = _cohort(n=80, seed=1)
    risk = x @ np.array([0.3, 0.2, -0.4])
    loss = cox_ph_loss(
        torch.tensor(risk), torch.tensor(time), torch.tensor(event), ties=ties, reduction="sum"
    )
    assert loss.item() == pytest.approx(-reference(risk, time, event), rel=1e-10)
    mean = cox_ph_loss(torch.tensor(risk), torch.tensor(time), torch.tensor(event), ties=ties)
    assert mean.item() == pytest.approx(loss.item() / event.sum(), rel=1e-10)


def test_breslow_fit_is_the_numpy_optimum() -> None:
    x, time, event = _cohort(n=150, seed=2)
    w = _fit_torch(x, time, event, "breslow")
    base = _breslow_loglik_numpy(x @ w, time, event)
    for k in range(3):  # a stationary point: every small step lowers the numpy log-likelihood
        for step in (1e-3, -1e-3):
            w2 = w.copy()
            w2[k] += step
            assert _breslow_loglik_numpy(x @ w2, time, event) < base


def test_no_events_gives_zero_loss_and_zero_grad() -> None:
    risk = torch.randn(10, requires_grad=True)
    loss = cox_ph_loss(risk, torch.rand(10), torch.zeros(10))
    loss.backward()
    assert loss.item() == 0.0
    assert risk.grad is not None and torch.all(risk.grad == 0)


def test_large_risks_are_stable() -> None:
    risk = torch.tensor([1000.0, 999.0, -1000.0, 500.0], requires_grad=True)
    loss = cox_ph_loss(risk, torch.tensor([1.0, 1.0, 2.0, 3.0]), torch.tensor([1, 1, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.all(torch.isfinite(risk.grad))


def test_invariant_to_shift_and_order() -> None:
    x, time, event = _cohort(n=50, seed=3)
    risk = torch.tensor(x[:, 0])
    t, e = torch.tensor(time), torch.tensor(event)
    base = cox_ph_loss(risk, t, e)
    assert cox_ph_loss(risk + 7.0, t, e).item() == pytest.approx(base.item(), rel=1e-10)
    perm = torch.randperm(50)
    assert cox_ph_loss(risk[perm], t[perm], e[perm]).item() == pytest.approx(base.item(), rel=1e-10)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ties"):
        cox_ph_loss(torch.zeros(3), torch.ones(3), torch.ones(3), ties="exact")
    with pytest.raises(ValueError, match="same length"):
        cox_ph_loss(torch.zeros(3), torch.ones(2), torch.ones(3))
