"""Segmentation metrics through MONAI: Dice, HD95 (mm) and normalised surface Dice (NSD)."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice


def compute_case_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float], nsd_tolerance_mm: float = 2.0
) -> dict[str, float]:
    """Dice, HD95 and NSD of one binary mask pair, and whether the target was missed.

    Args:
        pred: ``(I, J, K)`` binary prediction.
        ref: ``(I, J, K)`` binary reference.
        spacing: voxel size in mm along each array axis.
        nsd_tolerance_mm: NSD boundary tolerance in mm.

    Returns:
        ``{"dice", "hd95", "nsd", "missed", "spurious"}``. Both empty: Dice 1, HD95 0, NSD 1. A
        missed target (empty prediction, reference present) or a spurious one (the reverse): Dice 0,
        NSD 0, and HD95 the image's diagonal in mm, the largest distance the grid allows, so a miss
        counts in every mean instead of dropping out as an undefined value; ``missed`` /
        ``spurious`` are 1 for those cases (0 otherwise), so tables can count them.
    """
    p, r = pred.astype(bool), ref.astype(bool)
    sp = [float(s) for s in spacing]
    if not p.any() and not r.any():
        return {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, "missed": 0.0, "spurious": 0.0}
    if not p.any() or not r.any():
        diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, sp, strict=True))))
        return {
            "dice": 0.0,
            "hd95": diagonal,
            "nsd": 0.0,
            "missed": float(not p.any()),
            "spurious": float(not r.any()),
        }
    pt = torch.from_numpy(p)[None, None].float()
    rt = torch.from_numpy(r)[None, None].float()
    dice = float(compute_dice(pt, rt, include_background=True)[0, 0])
    hd95 = float(compute_hausdorff_distance(pt, rt, include_background=True, percentile=95, spacing=sp)[0, 0])
    nsd = float(
        compute_surface_dice(
            pt, rt, class_thresholds=[nsd_tolerance_mm], include_background=True, spacing=sp
        )[0, 0]
    )
    return {"dice": dice, "hd95": hd95, "nsd": nsd, "missed": 0.0, "spurious": 0.0}
