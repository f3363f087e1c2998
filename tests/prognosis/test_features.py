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

    def extract_features(
        self, image: Tensor, modality_index: Tensor, t1_emb: Tensor, decoder: bool = True
    ) -> dict[str, Tensor]:
        b = image.shape[0]
        assert modality_index.tolist() == [3] * b and t1_emb.shape == (b, 5)
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
    assert model.calls == [(2, 2, 8, 8, 8)]  # padded to multiples of 4, then one batch
    assert model.training  # the model's mode is restored
    data = load_feature_cache(cache)
    assert data["ids"] == ["a", "b"] and data["names"] == image_feature_names(3, tumour=True)
    np.testing.assert_array_equal(data["features"], feats)
    again = extract_image_features(
        model, vols, t1_embedding=t1, modality="PETCT", tumour_masks=masks, ids=["a", "b"], cache_path=cache
    )
    assert len(model.calls) == 1  # served from the cache
    np.testing.assert_array_equal(again, feats)
    extract_image_features(
        model, vols, t1_embedding=t1 + 1, modality=3, tumour_masks=masks, ids=["a", "b"], cache_path=cache
    )
    assert len(model.calls) == 2  # a different prompt invalidates the cache


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batches_group_same_shape_cases(batch_size: int) -> None:
    shapes = [(2, 8, 8, 8), (2, 7, 8, 8), (2, 4, 8, 8), (2, 8, 8, 8), (2, 8, 5, 8)]
    vols = [torch.rand(*shape) for shape in shapes]
    masks = [(v[0] > 0.5).float() for v in vols]
    model = StandIn()
    feats = extract_image_features(
        model, vols, t1_embedding=torch.zeros(5), modality=3, tumour_masks=masks, batch_size=batch_size
    )
    one = [
        extract_image_features(model, [v], t1_embedding=torch.zeros(5), modality=3, tumour_masks=[m])[0]
        for v, m in zip(vols, masks, strict=True)
    ]
    np.testing.assert_allclose(feats, np.stack(one), rtol=1e-6, atol=1e-6)
    sizes = [c[0] for c in model.calls[: len(model.calls) - len(vols)]]
    # padded: (8,8,8) x2, (4,8,8), (8,8,8) x2; batches by shape, the rest when the cases run out
    expected = {1: [1, 1, 1, 1, 1], 2: [2, 2, 1], 3: [3, 1, 1]}[batch_size]
    assert sizes == expected


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


def test_decoder_is_skipped_with_the_same_features() -> None:
    from duplus.config import ModelConfig
    from duplus.models.registry import build_model
    from duplus.vocab import modality_index

    model = build_model(ModelConfig(preset="tiny"), text_dim=16).eval()
    decoder_runs: list[int] = []
    model.decoder.register_forward_hook(lambda *_: decoder_runs.append(1))
    vols = [torch.rand(2, 32, 16, 16) for _ in range(3)]
    t1 = torch.randn(16)
    feats = extract_image_features(model, vols, t1_embedding=t1, modality="PETCT")
    assert not decoder_runs
    with torch.no_grad():
        mod = torch.tensor([modality_index("PETCT")])
        expected = [
            pool_bottleneck(model.extract_features(v[None], mod, t1[None])["bottleneck"][0]).numpy()
            for v in vols
        ]
    np.testing.assert_allclose(feats, np.stack(expected), rtol=1e-5, atol=1e-5)


def test_cohort_feature_fingerprint_follows_the_input_files(tmp_path: Path) -> None:
    import os

    from duplus.prognosis.api import _features_fingerprint

    files = [tmp_path / n for n in ("a__PT.nii.gz", "a__CT.nii.gz", "a.nii.gz", "model.pt")]
    for f in files:
        f.write_bytes(b"x")
    cases = [("a", files[:2], files[2])]
    first = _features_fingerprint(cases, files[3], "PETCT")
    assert _features_fingerprint(cases, files[3], "PETCT") == first
    assert _features_fingerprint(cases, files[3], "PET") != first
    assert _features_fingerprint([("a", files[:2], None)], files[3], "PETCT") != first
    st = files[1].stat()
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewritten CT
    assert _features_fingerprint(cases, files[3], "PETCT") != first
