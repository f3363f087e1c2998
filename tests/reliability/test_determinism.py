"""Determinism on the CPU: the same seed gives the same cache, the same losses and the same weights.

The second run repeats the shared tiny run of ``conftest.py`` (same config, same seed, a fresh run
folder and cache) and must match it exactly: ``metrics.csv`` row for row (all but the wall-clock
``seconds`` column), and every tensor of the saved model.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duplus.checkpoint import load_checkpoint
from duplus.training.api import train

TIMING_COLUMNS = {"seconds"}


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(fh)]


def _cache_digests(run_dir: Path) -> dict[str, str]:
    return {
        p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((run_dir / "cache").rglob("*.npy"))
    }


def test_same_seed_same_metrics_and_weights(trained_run: Any, tmp_path: Path) -> None:
    run_a = trained_run.run_dir
    steps = int(load_checkpoint(run_a / "checkpoint_last.pt")["step"])
    run_b = tmp_path / "run_b"
    train(config=trained_run.config, out=run_b, progress=False, max_steps=steps)

    rows_a, rows_b = _metrics(run_a), _metrics(run_b)
    assert rows_a and rows_a == rows_b  # same train_loss, to the last printed digit
    loss = float(rows_a[-1]["train_loss"])
    assert np.isfinite(loss) and loss > 0

    assert _cache_digests(run_a) == _cache_digests(run_b)  # preprocessing is deterministic

    ckpt_a, ckpt_b = (
        load_checkpoint(run_a / "checkpoint_last.pt"),
        load_checkpoint(run_b / "checkpoint_last.pt"),
    )
    assert ckpt_a["step"] == ckpt_b["step"] == steps
    weights_a, weights_b = ckpt_a["model"], ckpt_b["model"]
    assert weights_a.keys() == weights_b.keys()
    different = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert not different, f"weights differ between runs of the same seed: {different[:5]}"
