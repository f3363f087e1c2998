"""Model parts: residual blocks, conditioners, stems, encoder/decoder, dynamic head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from duplus.errors import ConfigError
from duplus.models import ChannelGate, DynamicHead, FiLM, ModalityStems, NoConditioning
from duplus.models.blocks import Conv3d, InstanceNorm3d, ResidualBlock, UpSample, build_activation
from duplus.models.decoder import UNetDecoder
from duplus.models.encoder import UNetEncoder
from duplus.models.film import build_conditioner
from duplus.vocab import MODALITIES


@pytest.mark.parametrize(
    ("kwargs", "in_shape", "out_shape"),
    [
        ({"in_channels": 4, "out_channels": 4}, (2, 4, 8, 8, 8), (2, 4, 8, 8, 8)),
        ({"in_channels": 4, "out_channels": 6}, (1, 4, 8, 8, 8), (1, 6, 8, 8, 8)),
        ({"in_channels": 4, "out_channels": 8, "stride": 2}, (1, 4, 8, 8, 8), (1, 8, 4, 4, 4)),
        ({"in_channels": 3, "out_channels": 3, "act": "elu"}, (1, 3, 4, 4, 4), (1, 3, 4, 4, 4)),
    ],
)
def test_residual_block_shapes(kwargs: dict, in_shape: tuple, out_shape: tuple) -> None:
    block = ResidualBlock(3, **kwargs)
    assert block(torch.randn(in_shape)).shape == out_shape
    identity_shortcut = kwargs["in_channels"] == kwargs["out_channels"] and kwargs.get("stride", 1) == 1
    assert isinstance(block.shortcut, nn.Identity) == identity_shortcut


def _kernels(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize(("kernel", "stride", "batch"), [(3, 1, 1), (3, 2, 1), (1, 1, 1), (3, 1, 2)])
def test_conv3d_batch_of_one_uses_onednn_and_matches_nn_conv3d(
    kernel: int, stride: int, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    ours = Conv3d(8, 8, kernel, stride, padding=kernel // 2, bias=True)
    ref = nn.Conv3d(8, 8, kernel, stride, padding=kernel // 2, bias=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(batch, 8, 16, 16, 16)  # 1 x 8 x 16 x 16 is below PyTorch's native-path threshold
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    (ya * yb.detach()).sum().backward()
    (yb * yb.detach()).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        if batch == 1 and kernel == 3:  # where PyTorch's own choice is the native im2col kernel
            assert "aten::mkldnn_convolution" not in _kernels(lambda: ref(x))
        assert "aten::mkldnn_convolution" in _kernels(lambda: ours(x))
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
        assert "aten::mkldnn_convolution" not in _kernels(lambda: ours(x))
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("stride", "grad", "channels_last"), [(1, True, True), (2, True, False), (1, False, False)]
)
def test_conv3d_trains_channels_last_on_fine_levels(
    stride: int, grad: bool, channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training convs over at least 16^3 output voxels run on a channels-last copy; the result, its
    layout and the gradients are those of ``nn.Conv3d``."""
    torch.manual_seed(0)
    ours = Conv3d(4, 8, 3, stride, padding=1)
    ref = nn.Conv3d(4, 8, 3, stride, padding=1)
    ref.load_state_dict(ours.state_dict())
    layouts: list[bool] = []
    base = nn.Conv3d._conv_forward

    def spy(self: nn.Conv3d, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if self is ours:
            layouts.append(input.is_contiguous(memory_format=torch.channels_last_3d))
        return base(self, input, weight, bias)

    monkeypatch.setattr(nn.Conv3d, "_conv_forward", spy)
    x = torch.randn(2, 4, 16, 16, 16)
    xa, xb = x.clone().requires_grad_(grad), x.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        ya, yb = ours(xa), ref(xb)
    assert layouts == [channels_last]
    assert ya.is_contiguous()
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    if grad:
        g = torch.randn_like(yb)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_matches_torch_and_loads_its_state(affine: bool) -> None:
    torch.manual_seed(0)
    ref = nn.InstanceNorm3d(6, affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-1.0, 1.0)
    ours = InstanceNorm3d(6, affine=affine)
    ours.load_state_dict(ref.state_dict())
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = 3.0 * torch.randn(2, 6, 5, 6, 7) + 2.0
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    if affine:
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours(x[0]), ref(x[0]), rtol=1e-4, atol=1e-4)  # unbatched: torch's path


def test_conv3d_takes_unbatched_input_like_nn_conv3d() -> None:
    """``(C, D, H, W)`` with ``C == 1`` is not a batch of one (it once went to oneDNN as one)."""
    torch.manual_seed(0)
    ours = Conv3d(1, 4, 3, padding=1)
    ref = nn.Conv3d(1, 4, 3, padding=1)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8, 8, 8)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_conv3d_compiles_for_a_batch_of_one() -> None:
    """``torch.compile`` traces with fake tensors, which the direct oneDNN call cannot take."""
    torch.manual_seed(0)
    conv = Conv3d(2, 8, 3, padding=1)
    x = torch.randn(1, 2, 16, 16, 16)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), conv(x), rtol=1e-4, atol=1e-4)


def test_block_applies_modulation_after_last_norm() -> None:
    block = ResidualBlock(3, 2, 2).eval()
    x = torch.randn(1, 2, 4, 4, 4)
    seen = {}

    def spy(h: torch.Tensor) -> torch.Tensor:
        seen["mean"] = h.mean(dim=(2, 3, 4))
        return torch.zeros_like(h)

    out = block(x, spy)
    # instance-normalised with unit affine: zero mean per channel
    torch.testing.assert_close(seen["mean"], torch.zeros(1, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, torch.nn.functional.leaky_relu(x, 0.01))  # only the shortcut is left


def test_upsample_and_bad_options() -> None:
    assert UpSample(3, 8, 4)(torch.randn(1, 8, 2, 3, 4)).shape == (1, 4, 4, 6, 8)
    with pytest.raises(ConfigError, match="activation"):
        build_activation("swishy")
    with pytest.raises(ConfigError, match="3D"):
        ResidualBlock(2, 2, 2)
    with pytest.raises(ConfigError, match="conditioning"):
        build_conditioner("attention", 8, [4])


def test_film_math_and_zero_init() -> None:
    film = FiLM(text_dim=5, block_channels=[2, 3], hidden_dim=7)
    params = film.compute(torch.randn(4, 5))
    assert [p.shape for p in params] == [(4, 4), (4, 6)]
    assert all(torch.count_nonzero(p) == 0 for p in params)
    x = torch.randn(4, 2, 3, 3, 3)
    torch.testing.assert_close(film.modulate(x, params[0]), x)
    p = torch.tensor([[0.5, -1.0, 2.0, 3.0]])  # gamma (0.5, -1), beta (2, 3)
    y = film.modulate(x[:1], p)
    torch.testing.assert_close(y[0, 0], x[0, 0] * 1.5 + 2.0)
    torch.testing.assert_close(y[0, 1], x[0, 1] * 0.0 + 3.0)


def test_gate_is_identity_at_init_and_a_sigmoid_gate_after() -> None:
    gate = ChannelGate(text_dim=5, block_channels=[3])
    (params,) = gate.compute(torch.randn(2, 5))
    assert params.shape == (2, 4)
    x = torch.randn(2, 3, 4, 4, 4)
    torch.testing.assert_close(gate.modulate(x, params), x)
    p = torch.tensor([[1.0, 0.0, -1.0, 0.5]]).expand(2, -1)
    expected = x * 2 * torch.sigmoid(x[:, 0] - x[:, 2] + 0.5).unsqueeze(1)
    torch.testing.assert_close(gate.modulate(x, p), expected)


def test_no_conditioning_has_no_parameters() -> None:
    cond = NoConditioning(text_dim=5, block_channels=[3, 4])
    params = cond.compute(torch.randn(2, 5))
    assert [p.shape for p in params] == [(2, 0), (2, 0)]
    x = torch.randn(2, 3, 2, 2, 2)
    assert cond.modulate(x, params[0]) is x
    assert sum(p.numel() for p in cond.parameters()) == 0


def test_model_apply_still_works() -> None:
    """Conditioners must not shadow nn.Module.apply (used by recursive initialisers)."""
    film = FiLM(text_dim=5, block_channels=[3])
    seen: list[nn.Module] = []
    assert film.apply(seen.append) is film
    assert seen[-1] is film and len(seen) == len(list(film.modules()))


def test_stems_group_by_modality() -> None:
    stems = ModalityStems(3, out_channels=4).eval()
    assert list(stems.keys()) == list(MODALITIES)
    image = torch.randn(4, 2, 8, 8, 8)
    mods = torch.tensor([3, 0, 1, 0])
    out = stems(image, mods)
    assert out.shape == (4, 4, 8, 8, 8)
    torch.testing.assert_close(out[0], stems["PETCT"](image[:1])[0])
    torch.testing.assert_close(out[1], stems["CT"](image[1:2, :1])[0])
    torch.testing.assert_close(out[2], stems["MRI"](image[2:3, :1])[0])
    # channel 1 is ignored by single-channel modalities
    image2 = image.clone()
    image2[1, 1] = 100.0
    torch.testing.assert_close(stems(image2, mods)[1], out[1])


def test_single_stem_ablation() -> None:
    stems = ModalityStems(3, out_channels=4, single_stem=True)
    assert list(stems.keys()) == ["shared"]
    image = torch.randn(2, 2, 8, 8, 8)
    torch.testing.assert_close(stems(image, torch.tensor([0, 1])), stems(image, torch.tensor([2, 3])))


def test_encoder_decoder_skips_and_block_channels() -> None:
    feats = (4, 8, 16)
    enc = UNetEncoder(3, feats, num_blocks=(1, 2, 2))
    dec = UNetDecoder(3, feats, out_channels=3, num_blocks=2)
    assert enc.block_channels == (4, 8, 8, 16, 16)
    assert dec.block_channels == (8, 8, 4, 4)
    skips = enc(torch.randn(2, 4, 16, 16, 16))
    assert [s.shape for s in skips] == [(2, 4, 16, 16, 16), (2, 8, 8, 8, 8), (2, 16, 4, 4, 4)]
    assert dec(skips).shape == (2, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="modulators"):
        enc(torch.randn(1, 4, 16, 16, 16), [None])
    with pytest.raises(ConfigError):
        UNetEncoder(3, feats, num_blocks=(1, 2))


def test_dynamic_head_equals_explicit_grouped_conv() -> None:
    torch.manual_seed(0)
    head = DynamicHead(text_dim=6, in_channels=8, bottleneck_channels=5)
    assert head.num_params == 153
    b, k = 2, 3
    feats = torch.randn(b, 8, 4, 4, 4)
    bottleneck = torch.randn(b, 5, 2, 2, 2)
    t2 = torch.randn(b, k, 6)
    logits = head(feats, head.compute_text(t2), bottleneck)
    assert logits.shape == (b, k, 4, 4, 4)
    # reference: the per-target conv stack as one grouped conv3d over (1, B*K*8, D, H, W)
    params = head.compute_params(head.compute_text(t2), bottleneck).reshape(b * k, -1)
    x = feats.unsqueeze(1).expand(b, k, 8, 4, 4, 4).reshape(1, b * k * 8, 4, 4, 4)
    offset = 0
    for i, (c_out, c_in) in enumerate(head.layer_shapes):
        w = params[:, offset : offset + c_out * c_in].reshape(b * k * c_out, c_in, 1, 1, 1)
        offset += c_out * c_in
        bias = params[:, offset : offset + c_out].reshape(-1)
        offset += c_out
        x = torch.nn.functional.conv3d(x, w, bias, groups=b * k)
        if i < len(head.layer_shapes) - 1:
            x = torch.relu(x)
    torch.testing.assert_close(logits, x.reshape(b, k, 4, 4, 4), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("grad", [False, True])
def test_dynamic_head_chunks_equal_the_whole_window(num_layers: int, grad: bool) -> None:
    """Chunked evaluation (with a ragged last chunk) gives the same logits and gradients as one
    chunk over the whole window."""
    torch.manual_seed(0)
    head = DynamicHead(text_dim=6, in_channels=8, bottleneck_channels=5, num_layers=num_layers)
    feats = torch.randn(2, 8, 5, 6, 7, requires_grad=grad)  # 210 voxels
    params = head.compute_params(head.compute_text(torch.randn(2, 4, 6)), torch.randn(2, 5, 2, 2, 2))

    def run(chunk: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        head.chunk_voxels = head.chunk_voxels_grad = chunk
        with torch.set_grad_enabled(grad):
            out = head.run_heads(feats, params.detach())
        if not grad:
            return out, None
        (g,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), feats)
        return out, g

    whole, g_whole = run(10_000)
    chunked, g_chunked = run(64)
    assert chunked.shape == (2, 4, 5, 6, 7)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)  # BLAS blocking differs by size
    if grad:
        torch.testing.assert_close(g_chunked, g_whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("features_grad", [True, False])
def test_dynamic_head_recomputing_backward_equals_autograd(num_layers: int, features_grad: bool) -> None:
    """The head's hand-written chunked backward gives autograd's gradients (through the explicit
    grouped convolution) for the features and for the generated parameters (float32: 1e-5)."""
    torch.manual_seed(0)
    head = DynamicHead(text_dim=6, in_channels=8, bottleneck_channels=5, num_layers=num_layers)
    head.chunk_voxels_grad = 64  # several chunks and a ragged last one
    b, k, shape = 2, 3, (5, 6, 7)
    feats = torch.randn(b, 8, *shape, requires_grad=features_grad)
    params = torch.randn(b, k, head.num_params, requires_grad=True)
    weight = torch.linspace(-1, 1, b * k * 210).view(b, k, *shape)
    out = head.run_heads(feats, params)
    grads = torch.autograd.grad((out * weight).sum(), [feats, params] if features_grad else [params])
    x = feats.unsqueeze(1).expand(b, k, 8, *shape).reshape(1, b * k * 8, *shape)
    flat, offset = params.reshape(b * k, -1), 0
    for i, (c_out, c_in) in enumerate(head.layer_shapes):
        w = flat[:, offset : offset + c_out * c_in].reshape(b * k * c_out, c_in, 1, 1, 1)
        offset += c_out * c_in
        x = torch.nn.functional.conv3d(x, w, flat[:, offset : offset + c_out].reshape(-1), groups=b * k)
        offset += c_out
        x = torch.relu(x) if i < len(head.layer_shapes) - 1 else x
    ref = x.reshape(b, k, *shape)
    ref_grads = torch.autograd.grad((ref * weight).sum(), [feats, params] if features_grad else [params])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_dynamic_head_controller_split_is_exact() -> None:
    head = DynamicHead(text_dim=6, in_channels=8, bottleneck_channels=5, controller_hidden=16)
    t2 = torch.randn(1, 2, 6)
    bottleneck = torch.randn(1, 5, 2, 2, 2)
    text = head.text_proj(t2)
    image = head.image_proj(bottleneck.mean(dim=(2, 3, 4)))
    joint = torch.cat([text, image.unsqueeze(1).expand(-1, 2, -1)], dim=-1)
    w = torch.cat([head.controller_text.weight, head.controller_image.weight], dim=1)
    reference = head.controller_rest(joint @ w.T + head.controller_text.bias)
    torch.testing.assert_close(head.compute_params(head.compute_text(t2), bottleneck), reference)


def test_dynamic_head_starts_near_prior_foreground() -> None:
    torch.manual_seed(0)
    head = DynamicHead(text_dim=6, in_channels=8, bottleneck_channels=5)
    t2 = torch.nn.functional.normalize(torch.randn(2, 3, 6), dim=-1)
    logits = head(torch.randn(2, 8, 4, 4, 4), head.compute_text(t2), torch.randn(2, 5, 2, 2, 2))
    assert torch.sigmoid(logits).mean() < 0.1
    with pytest.raises(ConfigError, match="prior_prob"):
        DynamicHead(text_dim=6, prior_prob=1.5)
