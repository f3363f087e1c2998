"""DuPLUS network: shapes, conditioning semantics, precomputed path, single-prompt baseline."""

from __future__ import annotations

import pytest
import torch

from duplus.config import ModelConfig
from duplus.errors import InputError
from duplus.models import DuPLUS, build_model
from duplus.vocab import MODALITIES, modality_index

E = 24  # small fake text dim: these tests do not need a real encoder
S = 32


def _model(**kw) -> DuPLUS:
    torch.manual_seed(0)
    return build_model(ModelConfig(preset="tiny", **kw), text_dim=E)


def _inputs(b: int = 2, k: int = 3, modalities: tuple[str, ...] = ("CT", "MRI"), size: int = S):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(b, 2, size, size, size, generator=g)
    mods = torch.tensor([modality_index(modalities[i % len(modalities)]) for i in range(b)])
    image[mods != MODALITIES.index("PETCT"), 1] = 0.0
    t1 = torch.nn.functional.normalize(torch.randn(b, E, generator=g), dim=-1)
    t2 = torch.nn.functional.normalize(torch.randn(b, k, E, generator=g), dim=-1)
    return image, mods, t1, t2


def _perturb_conditioner(model: DuPLUS, scale: float = 0.3) -> None:
    """Give the conditioner's zero-initialised output layer non-trivial weights."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.conditioner.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_output_shape_for_k_targets(k: int) -> None:
    model = _model().eval()
    image, mods, t1, t2 = _inputs(b=2, k=k)
    with torch.no_grad():
        out = model(image, mods, t1, t2)
    assert out.shape == (2, k, S, S, S)
    assert torch.isfinite(out).all()


def test_mixed_modality_batch_routes_each_sample_through_its_stem() -> None:
    model = _model().eval()
    image, mods, t1, t2 = _inputs(b=3, k=2, modalities=("CT", "MRI", "PETCT"))
    with torch.no_grad():
        out = model(image, mods, t1, t2)
        singles = [model(image[i : i + 1], mods[i : i + 1], t1[i : i + 1], t2[i : i + 1]) for i in range(3)]
    assert out.shape == (3, 2, S, S, S)
    torch.testing.assert_close(out, torch.cat(singles), atol=1e-5, rtol=1e-4)
    # a different stem gives a different output for the same image
    with torch.no_grad():
        as_mri = model(image[:1], torch.tensor([modality_index("MRI")]), t1[:1], t2[:1])
    assert not torch.allclose(as_mri, out[:1], atol=1e-4)


@pytest.mark.parametrize("conditioning", ["film", "gate"])
def test_untrained_conditioning_is_identity(conditioning: str) -> None:
    model = _model(conditioning=conditioning).eval()
    plain = _model(conditioning="none").eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("conditioner.") for k in unexpected)
    image, mods, t1, t2 = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(image, mods, t1, t2), plain(image, mods, t1, t2))


@pytest.mark.parametrize("conditioning", ["film", "gate"])
def test_t1_matters_after_one_step_not_before(conditioning: str) -> None:
    model = _model(conditioning=conditioning)
    image, mods, t1, t2 = _inputs(b=1, k=2)
    t1_other = torch.nn.functional.normalize(torch.randn(1, E), dim=-1)
    with torch.no_grad():
        assert torch.equal(model(image, mods, t1, t2), model(image, mods, t1_other, t2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = (torch.rand(1, 2, S, S, S) > 0.5).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(image, mods, t1, t2), target)
    loss.backward()
    opt.step()
    with torch.no_grad():
        a, b = model(image, mods, t1, t2), model(image, mods, t1_other, t2)
    assert (a - b).abs().max() > 1e-6


def test_unconditioned_model_ignores_t1() -> None:
    model = _model(conditioning="none").eval()
    _perturb_conditioner(model)
    image, mods, t1, t2 = _inputs(b=1)
    with torch.no_grad():
        assert torch.equal(model(image, mods, t1, t2), model(image, mods, -t1, t2))


@pytest.mark.parametrize("head_context", ["bottleneck", "none"])
def test_target_output_independent_of_other_targets(head_context: str) -> None:
    model = _model(head_context=head_context).eval()
    _perturb_conditioner(model)
    image, mods, t1, t2 = _inputs(b=2, k=4)
    with torch.no_grad():
        full = model(image, mods, t1, t2)
        perm = torch.tensor([2, 0, 3, 1])
        permuted = model(image, mods, t1, t2[:, perm])
        subset = model(image, mods, t1, t2[:, [3]])
    torch.testing.assert_close(permuted, full[:, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(subset, full[:, [3]], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("conditioning", ["film", "gate"])
def test_precomputed_conditioning_equals_direct_forward(conditioning: str) -> None:
    model = _model(conditioning=conditioning).eval()
    _perturb_conditioner(model)
    image, mods, t1, t2 = _inputs(b=2, k=3)
    with torch.no_grad():
        direct = model(image, mods, t1, t2)
        cond = model.condition(mods, t1, t2)
        torch.testing.assert_close(model.forward_conditioned(image, cond), direct, atol=1e-5, rtol=0)
        # three windows of one volume share a B=1 conditioning
        windows = torch.randn(3, 2, S, S, S)
        windows[:, 1] = 0.0
        cond1 = model.condition(mods[:1], t1[:1], t2[:1])
        shared = model.forward_conditioned(windows, cond1)
        expanded = model(windows, mods[:1].expand(3), t1[:1].expand(3, -1), t2[:1].expand(3, -1, -1))
        first = model(windows[:1], mods[:1], t1[:1], t2[:1])
    assert shared.shape == (3, 3, S, S, S)
    torch.testing.assert_close(shared, expanded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[:1], first, atol=1e-4, rtol=1e-4)  # batch-size rounding only


def test_conditioning_for_two_cannot_serve_three() -> None:
    model = _model().eval()
    image, mods, t1, t2 = _inputs(b=2)
    cond = model.condition(mods, t1, t2)
    with pytest.raises(InputError, match="batch of 2"):
        model.forward_conditioned(torch.zeros(3, 2, S, S, S), cond)


def test_works_with_monai_sliding_window() -> None:
    from monai.inferers import sliding_window_inference

    model = _model().eval()
    _perturb_conditioner(model)
    volume = torch.randn(1, 2, 48, 32, 32)
    volume[:, 1] = 0
    _, mods, t1, t2 = _inputs(b=1, k=2)
    with torch.no_grad():
        cond = model.condition(mods, t1, t2)
        out = sliding_window_inference(
            volume, (32, 32, 32), 2, model.forward_conditioned, overlap=0.5, mode="gaussian", cond=cond
        )
    assert out.shape == (1, 2, 48, 32, 32)


def test_single_prompt_baseline_same_signature_t2_drives_both() -> None:
    model = _model(single_prompt=True).eval()
    _perturb_conditioner(model)
    image, mods, t1, t2 = _inputs(b=2, k=3, size=16)
    with torch.no_grad():
        out = model(image, mods, t1, t2)
        # t1 is ignored
        torch.testing.assert_close(model(image, mods, torch.zeros_like(t1), t2), out)
        # each target is its own backbone pass, so subsets and windows agree too
        torch.testing.assert_close(model(image, mods, t1, t2[:, [1]]), out[:, [1]], atol=1e-5, rtol=0)
        cond = model.condition(mods[:1], t1[:1], t2[:1])
        windows = image[:1].expand(2, -1, -1, -1, -1)
        torch.testing.assert_close(
            model.forward_conditioned(windows, cond), out[:1].expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0
        )
    assert out.shape == (2, 3, 16, 16, 16)


def test_extract_features_shapes() -> None:
    model = _model().eval()
    image, mods, t1, _ = _inputs(b=2)
    with torch.no_grad():
        feats = model.extract_features(image, mods, t1)
    assert feats["bottleneck"].shape == (2, 64, 4, 4, 4)
    assert feats["decoder"].shape == (2, 8, S, S, S)


def test_bad_inputs_give_clear_errors() -> None:
    model = _model().eval()
    image, mods, t1, t2 = _inputs(b=1)
    with pytest.raises(InputError, match="multiple of 8"):
        model(torch.zeros(1, 2, 30, 32, 32), mods, t1, t2)
    with pytest.raises(InputError, match="shape"):
        model(torch.zeros(1, 1, 32, 32, 32), mods, t1, t2)
    with pytest.raises(InputError, match="out of range"):
        model(image, torch.tensor([7]), t1, t2)
    with pytest.raises(InputError, match="T2 embeddings"):
        model(image, mods, t1, torch.zeros(1, 2, E + 1))
    with pytest.raises(InputError, match="unknown modality"):
        modality_index("ultrasound")


def test_shared_t2_for_the_batch() -> None:
    model = _model().eval()
    image, mods, t1, t2 = _inputs(b=2, k=2)
    shared = t2[0]
    with torch.no_grad():
        torch.testing.assert_close(
            model(image, mods, t1, shared), model(image, mods, t1, shared.expand(2, -1, -1))
        )


@pytest.mark.parametrize("single_prompt", [False, True])
def test_head_position_reads_the_voxel_positions(single_prompt: bool) -> None:
    from duplus.models.position import volume_positions

    model = _model(head_position=True, single_prompt=single_prompt).eval()
    assert model.head.in_channels == model.decoder.out_channels + 3
    image, mods, t1, t2 = _inputs(b=2, k=2)
    with torch.no_grad():
        default = model(image, mods, t1, t2)
        explicit = model(image, mods, t1, t2, volume_positions(image.shape[2:]).expand(2, -1, -1, -1, -1))
        shifted = model(image, mods, t1, t2, volume_positions(image.shape[2:]) + 0.5)
    torch.testing.assert_close(default, explicit)  # no position = the input is a whole volume
    assert (default - shifted).abs().max() > 1e-3  # and the head does read them
    with pytest.raises(InputError, match="position must have shape"):
        model(image, mods, t1, t2, torch.zeros(2, 3, 8, 8, 8))
    plain = _model().eval()
    with torch.no_grad():  # a model without head_position ignores positions
        torch.testing.assert_close(plain(image, mods, t1, t2), plain(image, mods, t1, t2, torch.zeros(1)))


def test_sliding_windows_get_their_slice_of_the_volume_positions() -> None:
    from duplus.inference.sliding import predict_volume_logits
    from duplus.models.position import volume_positions

    model = _model(head_position=True).eval()
    image, mods, t1, t2 = _inputs(b=1, k=2, modalities=("CT",), size=48)
    image[:, 0] = volume_positions(image.shape[2:])[:, 2]  # the image shows its own z position
    real = model.forward_conditioned
    windows = []

    def spy(window: torch.Tensor, cond, position=None):
        windows.append(window.shape[0])
        torch.testing.assert_close(position[:, 2], window[:, 0])
        return real(window, cond, position)

    model.forward_conditioned = spy  # type: ignore[method-assign]
    cond = model.condition(mods, t1, t2)
    out = predict_volume_logits(model, image, cond, (32, 32, 32), overlap=0.5, sw_batch_size=2)
    assert out.shape == (1, 2, 48, 48, 48) and sum(windows) == 8  # 2 x 2 x 2 windows
    flipped = torch.flip(volume_positions(image.shape[2:]), (4,))
    image[:, 0] = flipped[:, 2]
    predict_volume_logits(model, image, cond, (32, 32, 32), overlap=0.5, position=flipped)
