"""The result of :meth:`Predictor.predict` and the lean way it is assembled.

Memory is what limits a CPU user on a big CT (25 targets on a 512 x 512 x 300 grid are 7.9 GB
as float32 maps). The default path therefore never builds full-resolution float maps of every
target: the stitched probabilities stay on the model's grid (``(K, d, h, w)``, the body crop at
the training spacing), each target is resampled onto the input grid on its own and thresholded
into its uint8 mask slab by slab (the same masks as thresholding the resampled float32 stack: the
resampling is per channel),
and the model-grid maps are then kept as float16. A target's probability map on the input grid
is recomputed from them on demand (:meth:`Prediction.probability`, float16 rounding: < 5e-4).
Only when the caller asks for the probabilities (``probabilities=True``, ``--save-probabilities``)
is the float32 ``(K, I, J, K)`` stack built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duplus.data.resample import resample_mask_to_grid, resample_to_grid


@dataclass
class Prediction:
    """Per-target results on the input grid.

    Attributes:
        masks: ``(K, I, J, K)`` uint8 binary masks (probability >= threshold).
        targets: the K target names as asked.
        affine: the input's affine, unchanged.
        prompts: the T1 prompt and the T2 prompt of each target.
        probabilities: ``(K, I, J, K)`` float32 sigmoid probabilities on the input grid, only when
            they were asked for (``Predictor.predict(..., probabilities=True)``); else ``None``:
            use :meth:`probability`.
        model_probabilities: ``(K, d, h, w)`` float16 probabilities on the model's grid (the body
            crop at the training spacing), the source of :meth:`probability`.
        model_affine: ``(4, 4)`` voxel -> world of that grid.
        run: how the windows ran (precision, layout, overlap, windows run and skipped).
    """

    masks: np.ndarray
    targets: list[str]
    affine: np.ndarray
    prompts: dict[str, Any] = field(default_factory=dict)
    probabilities: np.ndarray | None = None
    model_probabilities: np.ndarray | None = None
    model_affine: np.ndarray | None = None
    run: dict[str, Any] = field(default_factory=dict)

    def probability(self, k: int) -> np.ndarray:
        """Target ``k``'s float32 probability map ``(I, J, K)`` on the input grid."""
        if self.probabilities is not None:
            return np.asarray(self.probabilities[k], dtype=np.float32)
        if self.model_probabilities is None or self.model_affine is None:
            raise ValueError("this prediction holds no probabilities")
        return target_to_input_grid(
            self.model_probabilities[k], self.model_affine, self.masks.shape[1:], self.affine
        )

    def probability_maps(self) -> ProbabilityMaps:
        """The probability maps as a sequence whose items are computed one at a time."""
        return ProbabilityMaps(self)


class ProbabilityMaps(Sequence[np.ndarray]):
    """``maps[k]`` is :meth:`Prediction.probability` ``(k)``: one full-resolution map in memory at a time."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction

    def __len__(self) -> int:
        return len(self.prediction.targets)

    def __getitem__(self, k: int) -> np.ndarray:  # type: ignore[override]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        return self.prediction.probability(k % len(self))


def target_to_input_grid(
    prob: np.ndarray, model_affine: np.ndarray, shape: Sequence[int], affine: np.ndarray
) -> np.ndarray:
    """One target's model-grid probabilities ``(d, h, w)`` resampled (trilinear, 0 outside) onto
    the input grid ``shape`` / ``affine``, float32 ``(I, J, K)``."""
    src = np.asarray(prob, dtype=np.float32)[None]
    return resample_to_grid(src, model_affine, tuple(shape), affine, mode="linear", padding_value=0.0)[0]


def masks_on_input_grid(
    prob: np.ndarray, model_affine: np.ndarray, shape: Sequence[int], affine: np.ndarray, threshold: float
) -> np.ndarray:
    """``(K, I, J, K)`` uint8 masks from model-grid probabilities ``(K, d, h, w)``, one target at a
    time and thresholded slab by slab: beyond the masks, no float map on the input grid is held."""
    masks = np.empty((prob.shape[0], *(int(s) for s in shape)), dtype=np.uint8)
    for k in range(prob.shape[0]):
        resample_mask_to_grid(prob[k], model_affine, shape, affine, threshold, out=masks[k])
    return masks


__all__ = ["Prediction", "ProbabilityMaps", "masks_on_input_grid", "target_to_input_grid"]
