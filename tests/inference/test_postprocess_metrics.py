from __future__ import annotations

import math

import numpy as np

from duplus.inference.postprocess import merge_to_multilabel, target_filename
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
    assert empty["dice"] == 1.0
    miss = compute_case_metrics(np.zeros_like(ref), ref, (1, 1, 1))
    assert miss["dice"] == 0.0 and math.isnan(miss["hd95"])
