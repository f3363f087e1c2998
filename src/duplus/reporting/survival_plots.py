"""Kaplan-Meier curves of risk groups, with the log-rank p-value in the title.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``, no global backend change),
so this works headless and inside other applications, and the PNG is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from duplus.fileio import atomic_path
from duplus.metrics.survival import logrank_pvalue

__all__ = ["plot_km"]


def _default_names(n: int) -> list[str]:
    if n == 2:
        return ["low risk", "high risk"]
    return [f"risk group {i + 1}" for i in range(n)]


def plot_km(
    time: ArrayLike,
    event: ArrayLike,
    groups: ArrayLike,
    path: str | Path,
    title: str = "Kaplan-Meier curves by risk group",
    *,
    group_names: Sequence[str] | None = None,
    time_label: str = "time",
) -> float:
    """Plot one Kaplan-Meier curve (with 95% band) per risk group and save a PNG.

    Args:
        time: ``(N,)`` follow-up times.
        event: ``(N,)`` 1 = event, 0 = censored.
        groups: ``(N,)`` integer group labels (e.g. from :func:`duplus.metrics.survival.risk_groups`;
            0 = lowest risk).
        path: output PNG, written atomically.
        title: figure title; the log-rank p-value is appended.
        group_names: legend label per group value in ascending order.
        time_label: x-axis label (e.g. ``"RFS (days)"``).

    Returns:
        The log-rank p-value (NaN with a single group).
    """
    from lifelines import KaplanMeierFitter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(time, dtype=float).reshape(-1)
    e = np.asarray(event, dtype=float).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if not (t.size == e.size == g.size):
        raise ValueError(
            f"time, event and groups must have the same length, got {t.size}, {e.size}, {g.size}"
        )
    levels = np.unique(g)
    names = list(group_names) if group_names is not None else _default_names(levels.size)
    if len(names) < levels.size:
        raise ValueError(f"{levels.size} groups but only {len(names)} group names")
    p = logrank_pvalue(t, e, g)

    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for level, name in zip(levels, names, strict=False):
        sel = g == level
        kmf = KaplanMeierFitter(label=f"{name} (n={int(sel.sum())}, events={int(e[sel].sum())})")
        kmf.fit(t[sel], e[sel])
        kmf.plot_survival_function(ax=ax, ci_show=True, show_censors=True)
    p_text = "n/a" if not np.isfinite(p) else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")
    ax.set_title(f"{title}\nlog-rank p = {p_text}", fontsize=10)
    ax.set_xlabel(time_label)
    ax.set_ylabel("survival probability")
    ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return p
