"""Inputs of the end-to-end benchmarks: synthetic CT files of a given grid, and untrained
checkpoints of a given preset (a network's cost and memory do not depend on its weights).

The CT is an adult-sized abdomen in HU: an elliptic body of fat and soft tissue, 300 x 220 mm in
the axial plane over the whole scan length, with a few organ-like blobs, in air, written as int16
like a scanner's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from duplus.checkpoint import save_checkpoint
from duplus.config import ModelConfig, PreprocessConfig, TextConfig, to_dict
from duplus.data.io import save_nifti
from duplus.models.registry import build_model


def synthetic_abdomen_hu(
    shape: Sequence[int], spacing: Sequence[float] | float = 1.5, seed: int = 0
) -> np.ndarray:
    """``(I, J, K)`` float32 HU: an adult abdomen (see the module docstring) on a grid of ``shape``
    voxels of ``spacing`` mm (one value or one per axis)."""
    rng = np.random.default_rng(seed)
    ni, nj, nk = (int(s) for s in shape)
    si, sj, sk = (float(spacing),) * 3 if np.isscalar(spacing) else (float(v) for v in spacing)  # type: ignore[arg-type, union-attr]
    x = ((np.arange(ni) - (ni - 1) / 2) * si).astype(np.float32)
    y = ((np.arange(nj) - (nj - 1) / 2) * sj).astype(np.float32)
    z = ((np.arange(nk) - (nk - 1) / 2) * sk).astype(np.float32)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    body2d = (xx / 150.0) ** 2 + (yy / 110.0) ** 2 <= 1.0
    inner2d = (xx / 135.0) ** 2 + (yy / 95.0) ** 2 <= 1.0
    hu = np.full((ni, nj, nk), -1000.0, dtype=np.float32)
    hu[body2d] = -100.0  # fat
    hu[inner2d] = 40.0  # soft tissue
    for cx, cy, cz, r, v in [(-60, 10, 20, 70, 60.0), (80, 20, 30, 45, 50.0), (0, -60, 0, 25, 400.0)]:
        d2 = (x[:, None] - cx) ** 2 + (y[None, :] - cy) ** 2  # (I, J)
        for k in range(nk):
            blob = d2 + (z[k] - cz) ** 2 < r**2
            hu[..., k][blob & body2d] = v
    hu += rng.normal(0.0, 15.0, hu.shape).astype(np.float32)
    return hu


def write_ct(path: Path, shape: Sequence[int], spacing: Sequence[float]) -> Path:
    """Write :func:`synthetic_abdomen_hu` as an int16 NIfTI with an RAS affine of ``spacing``."""
    affine = np.diag([*(float(s) for s in spacing), 1.0])
    hu = synthetic_abdomen_hu(shape, spacing)
    return save_nifti(np.round(hu).astype(np.int16), affine, path, dtype=np.int16)


def write_untrained_checkpoint(
    path: Path, preset: str, patch: int, spacing: float, targets: Sequence[str] = ()
) -> Path:
    """A checkpoint of a freshly initialised ``preset`` network with the default text encoder,
    ``patch^3`` windows and ``spacing`` mm preprocessing: what ``duplus segment`` reads."""
    from duplus.text.encoder import TextEncoder

    text = TextConfig()
    encoder = TextEncoder(text.encoder, pooling=text.pooling, max_length=text.max_length)
    model_cfg = ModelConfig(preset=preset)
    torch.manual_seed(0)
    model = build_model(model_cfg, text_dim=encoder.embed_dim)
    preprocess = PreprocessConfig(spacing=(spacing, spacing, spacing))
    payload = {
        "model": model.state_dict(),
        "model_config": to_dict(model_cfg),
        "text_config": to_dict(text),
        "text_encoder_id": encoder.model_id,
        "text_dim": encoder.embed_dim,
        "preprocess": to_dict(preprocess),
        "patch_size": [patch] * 3,
        "label_space": {"targets": list(targets)},
        "datasets": [],
        "train_config": {},
        "step": 0,
        "best_metric": 0.0,
    }
    return save_checkpoint(path, payload)


__all__ = ["synthetic_abdomen_hu", "write_ct", "write_untrained_checkpoint"]
