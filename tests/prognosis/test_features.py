"""Image features from the frozen backbone: pooling, padding, tumour mean, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from duplus.prognosis.features import (
    extract_image_features,
    image_feature_names,
    load_feature_cache,
    pool_bottleneck,
    tumour_volume_ml,
)


class StandIn(nn.Module):
    """Same ``extract_features`` contract as DuPLUS: bottleneck at 1/4 resolution, 3 channels."""

    size_divisor = 4

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv3d(2, 3, 1)
        self.calls: list[tuple[int, ...]] = []

    def extract_features(self, image: Tensor, modality_index: Tensor, t1_emb: Tensor) -> dict[str, Tensor]:
        assert image.shape[0] == 1 and modality_index.tolist() == [3] and t1_emb.shape == (1, 5)
        assert not torch.is_grad_enabled()
        self.calls.append(tuple(image.shape))
        pooled = nn.functional.avg_pool3d(image, 4)
        return {"bottleneck": self.proj(pooled), "decoder": image[:, :1].repeat(1, 8, 1, 1, 1)}


def test_pool_bottleneck_valid_and_tumour_cells() -> None:
    b = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 2, 2, 2)
    valid = torch.zeros(2, 2, 2, dtype=torch.bool)
    valid[0] = True
    tumour = torch.zeros(2, 2, 2, dtype=torch.bool)
    tumour[0, 0, 0] = True
    out = pool_bottleneck(b, valid, tumour)
    assert out.tolist() == [1.5, 9.5, 3.0, 11.0, 0.0, 8.0]
    assert len(image_feature_names(2, tumour=True)) == out.numel()


def test_extract_pads_and_caches(tmp_path: Path) -> None:
    model = StandIn()
    second = torch.rand(2, 5, 8, 8)
    vols = [np.random.rand(2, 8, 8, 6).astype(np.float32), lambda: second]  # an array, and a loader
    masks = [np.zeros((8, 8, 6)), None]
    masks[0][1:3, 1:3, 1:3] = 1
    t1 = torch.randn(5)
    cache = tmp_path / "features.npz"
    feats = extract_image_features(
        model, vols, t1_embedding=t1, modality="PETCT", tumour_masks=masks, ids=["a", "b"], cache_path=cache
    )
    assert feats.shape == (2, 9) and feats.dtype == np.float32
    assert model.calls == [(1, 2, 8, 8, 8), (1, 2, 8, 8, 8)]  # padded to multiples of 4
    assert model.training  # the model's mode is restored
    data = load_feature_cache(cache)
    assert data["ids"] == ["a", "b"] and data["names"] == image_feature_names(3, tumour=True)
    np.testing.assert_array_equal(data["features"], feats)
    again = extract_image_features(
        model, vols, t1_embedding=t1, modality="PETCT", tumour_masks=masks, ids=["a", "b"], cache_path=cache
    )
    assert len(model.calls) == 2  # served from the cache
    np.testing.assert_array_equal(again, feats)
    extract_image_features(
        model, vols, t1_embedding=t1 + 1, modality=3, tumour_masks=masks, ids=["a", "b"], cache_path=cache
    )
    assert len(model.calls) == 4  # a different prompt invalidates the cache


def test_frozen_duplus_backbone() -> None:
    from duplus.config import ModelConfig
    from duplus.models.registry import build_model

    model = build_model(ModelConfig(preset="tiny"), text_dim=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vols = [np.random.rand(2, 12, 16, 16).astype(np.float32)]
    feats = extract_image_features(
        model, vols, t1_embedding=torch.randn(16), tumour_masks=[np.ones((12, 16, 16))]
    )
    assert feats.shape == (1, 3 * model.encoder.block_channels[-1]) and np.isfinite(feats).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mask_shape_mismatch_and_volume() -> None:
    from duplus.errors import InputError

    with pytest.raises(InputError, match="tumour mask"):
        extract_image_features(
            StandIn(),
            [np.zeros((2, 8, 8, 8))],
            t1_embedding=torch.zeros(5),
            tumour_masks=[np.zeros((4, 4, 4))],
        )
    assert tumour_volume_ml(np.ones((10, 10, 10)), (2.0, 2.0, 2.0)) == pytest.approx(8.0)
