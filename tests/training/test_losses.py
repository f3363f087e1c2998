from __future__ import annotations

import torch

from duplus.losses.segmentation import PartialLabelDiceBCELoss


def test_unsupervised_targets_contribute_nothing():
    loss_fn = PartialLabelDiceBCELoss()
    logits = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    target = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    mask = torch.tensor([[True, False, True], [False, True, False]])
    loss = loss_fn(logits, target, mask)
    loss.backward()
    assert logits.grad is not None
    for b, k in [(0, 1), (1, 0), (1, 2)]:
        assert torch.all(logits.grad[b, k] == 0)
    assert logits.grad[0, 0].abs().sum() > 0
    target2 = target.clone()
    target2[0, 1] = 1 - target2[0, 1]  # relabelling an unsupervised target changes nothing
    assert torch.isclose(loss_fn(logits, target2, mask), loss)


def test_perfect_prediction_has_low_loss_and_nothing_supervised_is_zero():
    loss_fn = PartialLabelDiceBCELoss(bce_weight=0.5)
    target = torch.zeros(1, 2, 8, 8, 8)
    target[0, 0, 2:6, 2:6, 2:6] = 1  # target 1 absent from the patch
    good = (target * 2 - 1) * 20
    bad = -good
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert loss_fn(good, target, mask) < 0.01
    assert loss_fn(bad, target, mask) > 0.9
    assert loss_fn(bad, target, torch.zeros(1, 2, dtype=torch.bool)) == 0


def test_absent_target_is_taught_by_bce_only():
    loss_fn = PartialLabelDiceBCELoss(bce_weight=1.0)
    target = torch.zeros(1, 1, 8, 8, 8)
    logits = torch.full((1, 1, 8, 8, 8), -3.0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.isclose(loss_fn(logits, target, torch.ones(1, 1, dtype=torch.bool)), expected)


def test_summarise_dice_splits_organs_and_lesions():
    from duplus.training.trainer import summarise_dice

    metrics = {"train_loss": 0.3, "dice/A/liver": 0.9, "dice/A/spleen": 0.7, "dice/B/liver tumour": 0.2}
    out = summarise_dice(metrics)
    assert out["train_loss"] == 0.3
    assert abs(out["dice/mean"] - 0.6) < 1e-9
    assert abs(out["dice/organs"] - 0.8) < 1e-9 and abs(out["dice/lesions"] - 0.2) < 1e-9
    only_organs = summarise_dice({"dice/A/liver": 0.9})
    assert only_organs["dice/mean"] == 0.9 and "dice/organs" not in only_organs
