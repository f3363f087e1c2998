"""Cross-validation splits for survival data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_kfold"]


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
