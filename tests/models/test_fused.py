"""The fast paths of the network compute what the reference paths compute: FiLM folded into the
instance norm against FiLM applied after it (outputs and gradients), and a channels-last network
against the contiguous one.

Tolerances are stated with each test: the folded FiLM is checked against a float64 reference,
the layouts against each other in float32 (``1e-4``).
"""

from __future__ import annotations

import pytest
import torch

from duplus.config import ModelConfig
from duplus.models import DuPLUS, build_model
from duplus.models.blocks import InstanceNorm3d, NormModulation, is_channels_last

E = 24
S = 16
CL = torch.channels_last_3d


def _model(**kw) -> DuPLUS:
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny", **kw), text_dim=E)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-trivial FiLM and norm affines (both start as the identity)
        for p in model.conditioner.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, InstanceNorm3d) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def _inputs(b: int, k: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(b, 2, S, S, S, generator=g)
    image[:, 1] = 0.0
    t1 = torch.nn.functional.normalize(torch.randn(b, E, generator=g), dim=-1)
    t2 = torch.nn.functional.normalize(torch.randn(b, k, E, generator=g), dim=-1)
    return image, torch.zeros(b, dtype=torch.long), t1, t2


def _grads(model: DuPLUS) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _run(model: DuPLUS, fused: bool, dtype: torch.dtype, batch: int) -> tuple[torch.Tensor, dict]:
    model.conditioner.fuse_into_norm = fused  # type: ignore[attr-defined]
    model.zero_grad(set_to_none=True)
    image, mods, t1, t2 = (t.to(dtype) if t.is_floating_point() else t for t in _inputs(batch))
    out = model(image, mods, t1, t2)
    (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
    return out.detach().double(), {n: g.double() for n, g in _grads(model).items()}


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("single_prompt", [False, True])
def test_film_folded_into_the_norm_equals_film_after_it(batch: int, single_prompt: bool) -> None:
    """In float64 the two are the same function (1e-9). In float32 the folded FiLM's outputs and
    gradients are as close to that reference as the unfolded float32 path's, within 1e-4 of each
    tensor's largest value or twice the unfolded path's own error, whichever is larger (gradients
    that sum over many voxels carry float32 errors of up to ~1e-2 on either path)."""
    model = _model(single_prompt=single_prompt)
    out_f, g_f = _run(model, True, torch.float32, batch)
    out_u, g_u = _run(model, False, torch.float32, batch)
    model64 = _model(single_prompt=single_prompt).double()
    out64_f, g64_f = _run(model64, True, torch.float64, batch)
    out64_u, g64_u = _run(model64, False, torch.float64, batch)
    torch.testing.assert_close(out64_f, out64_u, rtol=1e-9, atol=1e-9)
    assert g64_f.keys() == g64_u.keys() == g_f.keys() == g_u.keys()
    assert any(k.startswith("conditioner.") for k in g_f)  # FiLM's own weights are trained

    def close(got: torch.Tensor, other: torch.Tensor, ref: torch.Tensor, name: str) -> None:
        scale = float(ref.abs().max()) or 1.0
        bound = max(1e-4 * scale, 2.0 * float((other - ref).abs().max()))
        assert float((got - ref).abs().max()) <= bound, name

    close(out_f, out_u, out64_u, "logits")
    for name, ref in g64_u.items():
        torch.testing.assert_close(g64_f[name], ref, rtol=1e-9, atol=1e-9, msg=name)
        close(g_f[name], g_u[name], ref, name)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_norm_per_sample_affine(channels_last: bool) -> None:
    """Each sample gets its own FiLM (the batch folded into the channels, or the channels-last
    fallback), ``gamma``/``beta`` of one row broadcast over a batch."""
    torch.manual_seed(0)
    norm = InstanceNorm3d(4, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = 2.0 * torch.randn(3, 4, 5, 6, 7) + 1.0
    if channels_last:
        x = x.contiguous(memory_format=CL)
    gamma, beta = torch.randn(3, 4), torch.randn(3, 4)
    ref = norm(x) * (1 + gamma.view(3, 4, 1, 1, 1)) + beta.view(3, 4, 1, 1, 1)
    torch.testing.assert_close(norm(x, NormModulation(gamma, beta)), ref, rtol=1e-4, atol=1e-4)
    one = NormModulation(gamma[:1], beta[:1])  # a volume's conditioning over its windows
    ref1 = norm(x) * (1 + gamma[:1].view(1, 4, 1, 1, 1)) + beta[:1].view(1, 4, 1, 1, 1)
    torch.testing.assert_close(norm(x, one), ref1, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 2])
def test_channels_last_network_equals_contiguous(batch: int) -> None:
    """The fast inference layout: same logits (float32), and the features stay channels-last."""
    model = _model().eval()
    image, mods, t1, t2 = _inputs(batch)
    with torch.no_grad():
        ref = model(image, mods, t1, t2)
        model.to(memory_format=CL)
        seen: list[bool] = []
        hook = model.decoder.proj.register_forward_hook(lambda m, i, o: seen.append(is_channels_last(o)))
        out = model(image.contiguous(memory_format=CL), mods, t1, t2)
        hook.remove()
    assert seen == [True]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
