"""Turning per-target masks into files: per-target masks, or a multi-label map with labels.json."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from duplus.data.io import save_nifti
from duplus.fileio import write_json_atomic


def target_filename(target: str) -> str:
    """A file-system-safe name for a target prompt: "left kidney" -> "left_kidney"."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", target.strip().lower()).strip("_")
    return name[:80] or "target"


def merge_to_multilabel(masks: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Combine overlapping per-target masks into one label map.

    Priority: targets are painted from the largest predicted volume to the smallest, so where masks
    overlap the smaller structure wins (a tumour inside the liver keeps its label). Label values
    are ``k + 1`` for target k, whatever the painting order.

    Args:
        masks: ``(K, I, J, K)`` binary masks.

    Returns:
        ``(I, J, K)`` uint8/uint16 label map, and the painting order (target indices).
    """
    volumes = masks.reshape(masks.shape[0], -1).sum(axis=1)
    order = [int(k) for k in np.argsort(-volumes, kind="stable")]
    dtype = np.uint8 if masks.shape[0] < 255 else np.uint16
    out = np.zeros(masks.shape[1:], dtype=dtype)
    for k in order:
        out[masks[k] > 0] = k + 1
    return out, order


def write_per_target(case_dir: Path, targets: list[str], masks: np.ndarray, affine: np.ndarray) -> list[Path]:
    """Write ``case_dir/<target>.nii.gz`` uint8 masks, one per target."""
    names = [target_filename(t) for t in targets]
    if len(set(names)) != len(names):
        names = [f"{i + 1:02d}_{n}" for i, n in enumerate(names)]
    return [
        save_nifti(masks[k], affine, case_dir / f"{n}.nii.gz", dtype=np.uint8) for k, n in enumerate(names)
    ]


def write_multilabel(
    out_dir: Path, case: str, targets: list[str], masks: np.ndarray, affine: np.ndarray, prompts: dict
) -> Path:
    """Write ``out_dir/<case>.nii.gz`` (label map) and ``out_dir/labels.json`` (value -> target)."""
    label_map, order = merge_to_multilabel(masks)
    path = save_nifti(label_map, affine, out_dir / f"{case}.nii.gz")
    write_json_atomic(
        out_dir / "labels.json",
        {
            "labels": {"0": "background", **{str(k + 1): t for k, t in enumerate(targets)}},
            "prompts": prompts,
            "overlap_priority": "smaller predicted structures are painted over larger ones",
        },
    )
    return path
