"""Cox proportional-hazards loss: the negative partial log-likelihood of risk scores.

The risk set of an event time ``t`` is every subject still under observation at ``t``
(``time >= t``). Tied event times are handled with Efron's approximation (the default, as in
lifelines and R's ``survival::coxph``) or Breslow's. Everything is computed in log space
(``logcumsumexp``), so large risk scores neither overflow nor lose precision.

Note that under DDP the risk set is the local batch only: gather the scores across ranks, or use
large batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cox_ph_loss"]

_TIES = ("efron", "breslow")
_REDUCTIONS = ("mean", "sum")


def cox_ph_loss(
    risk: Tensor,
    time: Tensor,
    event: Tensor,
    ties: str = "efron",
    reduction: str = "mean",
) -> Tensor:
    """Negative Cox partial log-likelihood.

    Args:
        risk: ``(N,)`` log-hazard ratios (higher = earlier event expected).
        time: ``(N,)`` follow-up times (event or censoring).
        event: ``(N,)`` 1 for an observed event, 0 for censored (bool, int or float).
        ties: ``"efron"`` (default) or ``"breslow"`` handling of tied event times.
        reduction: ``"mean"`` (divided by the number of events) or ``"sum"``.

    Returns:
        A scalar tensor, differentiable with respect to ``risk``. With no event in the batch the
        likelihood is constant and the loss is ``0`` (still attached to the graph, never NaN).
    """
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    risk = risk.reshape(-1)
    time = time.reshape(-1).to(risk.device)
    event = event.reshape(-1).to(risk.device).bool()
    if not (risk.numel() == time.numel() == event.numel()):
        raise ValueError(
            f"risk, time and event must have the same length, got {risk.numel()}, {time.numel()}, {event.numel()}"
        )
    n_events = int(event.sum())
    if n_events == 0:
        return risk.sum() * 0.0

    # Sort by time, latest first: the risk set of position i is then the prefix [0, last of its tie group].
    order = torch.argsort(time, descending=True, stable=True)
    r, t, e = risk[order], time[order], event[order]
    _, group, counts = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    log_at_risk = torch.logcumsumexp(r, 0)[last][group]  # (N,) log sum_{j: t_j >= t_i} exp(r_j)

    ev_r = r[e]
    ev_group = group[e]
    ev_log_risk_set = log_at_risk[e]
    if ties == "breslow":
        log_denominator = ev_log_risk_set
    else:
        n_groups = counts.numel()
        # Events tied at one time: d_g of them, log of the sum of their exp(risk) (stable per group).
        d = torch.zeros(n_groups, dtype=torch.long, device=r.device).index_add_(
            0, ev_group, torch.ones_like(ev_group)
        )
        gmax = torch.full((n_groups,), float("-inf"), dtype=r.dtype, device=r.device)
        gmax = gmax.scatter_reduce(0, ev_group, ev_r.detach(), reduce="amax", include_self=True)
        shifted = torch.exp(ev_r - gmax[ev_group])
        gsum = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add(0, ev_group, shifted)
        log_tied = (torch.log(gsum[ev_group]) + gmax[ev_group]).to(r.dtype)
        # Rank l = 0..d-1 of each event within its tie group.
        ev_pos = torch.arange(n_events, device=r.device)
        first_in_group = torch.zeros(n_groups, dtype=torch.long, device=r.device)
        first_in_group = first_in_group.scatter_reduce(0, ev_group, ev_pos, reduce="amin", include_self=False)
        rank = ev_pos - first_in_group[ev_group]
        frac = rank.to(r.dtype) / d[ev_group].to(r.dtype)
        # log(A - frac * B) = log A + log1p(-frac * B / A); B <= A and frac < 1 keep it finite.
        ratio = torch.exp(log_tied - ev_log_risk_set).clamp(max=1.0)
        log_denominator = ev_log_risk_set + torch.log1p(-frac * ratio)
    nll = -(ev_r - log_denominator).sum()
    return nll / n_events if reduction == "mean" else nll
