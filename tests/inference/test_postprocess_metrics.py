from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from duplus.inference.postprocess import merge_to_multilabel, target_filename
from duplus.metrics.api import summary_markdown
from duplus.metrics.segmentation import compute_case_metrics


def test_multilabel_priority_keeps_smaller_structure():
    masks = np.zeros((2, 10, 10, 10), np.uint8)
    masks[0, 1:9, 1:9, 1:9] = 1  # liver
    masks[1, 4:6, 4:6, 4:6] = 1  # tumour inside it
    merged, order = merge_to_multilabel(masks)
    assert order == [0, 1]
    assert merged[5, 5, 5] == 2 and merged[2, 2, 2] == 1 and merged[0, 0, 0] == 0


def test_target_filename():
    assert target_filename("Left kidney") == "left_kidney"
    assert target_filename("  ../../etc ") == "etc"


def test_metrics_known_values():
    ref = np.zeros((20, 20, 20), bool)
    ref[5:15, 5:15, 5:15] = True
    m = compute_case_metrics(ref, ref, (1.0, 1.0, 1.0))
    assert m["dice"] == 1.0 and m["hd95"] == 0.0 and m["nsd"] == 1.0
    shifted = np.roll(ref, 3, axis=0)
    m = compute_case_metrics(shifted, ref, (2.0, 1.0, 1.0))
    assert math.isclose(m["dice"], 0.7, abs_tol=1e-6)
    assert math.isclose(m["hd95"], 6.0, abs_tol=1e-6)  # 3 voxels x 2 mm
    assert 0 < m["nsd"] < 1
    empty = compute_case_metrics(np.zeros_like(ref), np.zeros_like(ref), (1, 1, 1))
    assert empty["dice"] == 1.0 and empty["missed"] == 0.0


def test_a_missed_target_counts_in_every_mean() -> None:
    """A miss has HD95 = the image diagonal (not NaN, which means drop out of the mean) and is counted."""
    ref = np.zeros((20, 10, 5), bool)
    ref[5:9, 2:6, 1:3] = True
    miss = compute_case_metrics(np.zeros_like(ref), ref, (2.0, 1.0, 3.0))
    diagonal = math.sqrt(40.0**2 + 10.0**2 + 15.0**2)
    assert miss == {"dice": 0.0, "hd95": pytest.approx(diagonal), "nsd": 0.0, "missed": 1.0, "spurious": 0.0}
    spurious = compute_case_metrics(ref, np.zeros_like(ref), (2.0, 1.0, 3.0))
    assert spurious["spurious"] == 1.0 and spurious["missed"] == 0.0
    hit = compute_case_metrics(ref, ref, (2.0, 1.0, 3.0))
    df = pd.DataFrame([{"case": "a", "target": "liver", **miss}, {"case": "b", "target": "liver", **hit}])
    row = summary_markdown(df).splitlines()[2]
    assert row.startswith("| liver | 2 | 1 | 0.500 ± 0.500 |")
    assert f"{diagonal / 2:.3f}" in row  # the miss's diagonal is in the HD95 mean


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by definition: in the mask with a face neighbour outside it (or at the border)."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def _nsd_by_hand(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tol: float) -> float:
    """NSD from its definition: the fraction of both surfaces within ``tol`` mm of the other one,
    with every pair of surface points measured in millimetres."""
    sp = np.asarray(spacing, float)
    a, b = np.argwhere(_surface(pred)) * sp, np.argwhere(_surface(ref)) * sp
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return float(((dist.min(1) <= tol).sum() + (dist.min(0) <= tol).sum()) / (len(a) + len(b)))


def test_nsd_equals_a_hand_computation_and_depends_on_spacing() -> None:
    ref = np.zeros((16, 16, 16), bool)
    ref[4:12, 4:12, 4:12] = True
    pred = np.roll(ref, 1, axis=0)  # one voxel along the anisotropic axis
    spacing, tol = (3.0, 1.0, 1.0), 2.0
    expected = _nsd_by_hand(pred, ref, spacing, tol)
    isotropic = _nsd_by_hand(pred, ref, (1.0, 1.0, 1.0), tol)
    assert expected < isotropic == 1.0  # a 3 mm shift is outside a 2 mm tolerance; 1 mm is not
    got = compute_case_metrics(pred, ref, spacing, nsd_tolerance_mm=tol)["nsd"]
    assert got == pytest.approx(expected, abs=1e-6)
    assert compute_case_metrics(pred, ref, spacing, nsd_tolerance_mm=3.0)["nsd"] == pytest.approx(1.0)
