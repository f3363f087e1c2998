"""Partial-label segmentation loss: per-target sigmoid Dice + BCE over supervised targets only.

MONAI's ``DiceCELoss(sigmoid=True)`` computes softmax cross-entropy when there are several output
channels, which is wrong for independent per-target sigmoid maps; we use ``DiceLoss(sigmoid=True)``
plus ``binary_cross_entropy_with_logits`` and mask both with the ``(B, K)`` partial-label mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn


class PartialLabelDiceBCELoss(nn.Module):
    """``Dice + bce_weight * BCE`` per (sample, target), averaged over supervised pairs.

    The Dice term is taken over the supervised pairs whose target is present in the patch; a
    supervised target absent from the patch is taught by the BCE term alone. (A per-patch soft Dice
    of an absent target is ~1 for any non-zero prediction, which drives small organs to
    under-segmentation when patches often miss them.)

    Args:
        bce_weight: weight of the BCE term (the authors' code uses 0.5).
        smooth: Dice smoothing (numerator and denominator).
    """

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice = DiceLoss(sigmoid=True, reduction="none", smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            logits: ``(B, K, D, H, W)`` raw logits, one map per target.
            target: ``(B, K, D, H, W)`` binary masks.
            label_mask: ``(B, K)`` bool, True where target k is supervised for sample b. Padded or
                unlabelled targets contribute nothing (not even to the normaliser).

        Returns:
            Scalar loss; 0 (with a graph) when nothing is supervised.
        """
        mask = label_mask.to(logits.dtype)
        n = mask.sum()
        if n == 0:
            return logits.sum() * 0.0
        target = target.to(logits.dtype)
        bce = (
            F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(-1)
        )  # (B, K)
        loss = self.bce_weight * (bce * mask).sum() / n
        present = mask * (target.flatten(2).amax(-1) > 0).to(mask.dtype)
        if present.sum() > 0:
            dice = self.dice(logits, target).reshape(mask.shape)  # (B, K)
            loss = loss + (dice * present).sum() / present.sum()
        return loss
