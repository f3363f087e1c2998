"""How windows run (no trained model needed): settings per device and flag, converted model copies,
air windows skipped, and lean predictions whose masks equal the float32 stack's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duplus.config import ModelConfig
from duplus.data.io import Volume
from duplus.errors import InputError
from duplus.inference import runtime
from duplus.inference.prediction import Prediction, masks_on_input_grid
from duplus.inference.runtime import RunSettings, prepare_model, resolve_run_settings
from duplus.inference.sliding import AIR_LOGIT, _pad_like_monai, predict_volume_logits
from duplus.models import build_model

E = 16
CPU = torch.device("cpu")


def _model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny"), text_dim=E).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.conditioner.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def _cond(model, k: int = 2):
    g = torch.Generator().manual_seed(1)
    t1 = torch.nn.functional.normalize(torch.randn(1, E, generator=g), dim=-1)
    t2 = torch.nn.functional.normalize(torch.randn(1, k, E, generator=g), dim=-1)
    with torch.no_grad():
        return model.condition(torch.zeros(1, dtype=torch.long), t1, t2)


@pytest.mark.parametrize("native", [True, False])
def test_settings_of_the_default_and_the_fast_path(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    default = resolve_run_settings(CPU)
    assert (default.precision, default.cast, default.channels_last, default.overlap, default.skip_air) == (
        "fp32", "none", False, 0.5, False,
    )  # fmt: skip
    fast = resolve_run_settings(CPU, fast=True)
    assert fast.precision == ("bf16" if native else "fp32")  # bf16 only where the CPU has it
    assert fast.cast == ("weights" if native else "none")
    assert (fast.channels_last, fast.overlap, fast.skip_air) == (True, 0.25, True)
    assert resolve_run_settings(CPU, fast=True, overlap=0.5).overlap == 0.5  # an explicit overlap wins
    assert resolve_run_settings(CPU, precision="bf16").cast == "weights"
    with pytest.raises(InputError, match="--precision: fp16 needs a GPU"):
        resolve_run_settings(CPU, precision="fp16")
    with pytest.raises(InputError, match="--precision: unknown precision 'half'"):
        resolve_run_settings(CPU, precision="half")


def test_prepared_model_is_a_converted_copy() -> None:
    model = _model()
    assert prepare_model(model, RunSettings()) is model
    fast = prepare_model(model, RunSettings(precision="bf16", cast="weights", channels_last=True))
    assert fast is not model
    assert next(model.parameters()).dtype == torch.float32  # the original is untouched
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    conv = fast.encoder.stages[0][0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()


def test_fast_windows_give_the_reference_logits() -> None:
    """float32 channels-last: the reference logits (1e-4); bfloat16 weights: float32 logits within
    bfloat16's precision (0.1 on logits of magnitude ~1-10), and the same sign almost everywhere."""
    model = _model()
    cond = _cond(model)
    image = torch.randn(1, 2, 40, 32, 48)
    image[:, 1] = 0
    ref = predict_volume_logits(model, image, cond, (32, 32, 32), overlap=0.25)
    cl = RunSettings(channels_last=True, overlap=0.25)
    out = predict_volume_logits(
        prepare_model(model, cl), image, cond, (32, 32, 32), overlap=0.25, settings=cl
    )
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    bf = RunSettings(precision="bf16", cast="weights", channels_last=True, overlap=0.25)
    out = predict_volume_logits(
        prepare_model(model, bf), image, cond, (32, 32, 32), overlap=0.25, settings=bf
    )
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max()) < 0.1 * max(1.0, float(ref.abs().max()))
    assert float(((out > 0) != (ref > 0)).float().mean()) < 0.01


def test_windows_without_body_are_not_run() -> None:
    """A body in one corner of a large grid: only the windows that touch it run; where every
    window covering a voxel was run, the logits are the full run's."""
    model = _model()
    cond = _cond(model)
    image = torch.full((1, 2, 64, 64, 64), -1.0)
    image[:, 1] = 0
    body = torch.zeros(64, 64, 64, dtype=torch.bool)
    body[:20, :20, :20] = True
    image[0, 0, :20, :20, :20] = torch.randn(20, 20, 20)
    stats: dict[str, int] = {}
    full = predict_volume_logits(model, image, cond, (32, 32, 32), overlap=0.25)
    part = predict_volume_logits(model, image, cond, (32, 32, 32), overlap=0.25, run_mask=body, stats=stats)
    assert stats["windows_run"] + stats["windows_skipped"] == 27 and stats["windows_run"] == 1
    torch.testing.assert_close(part[..., :16, :16, :16], full[..., :16, :16, :16])  # only window 0 covers
    torch.testing.assert_close(part[..., 48:, 48:, 48:], torch.full_like(part[..., 48:, 48:, 48:], AIR_LOGIT))


def test_window_mask_padded_like_monai_pads_a_small_image() -> None:
    mask = torch.ones(10, 32, 7, dtype=torch.bool)
    padded = _pad_like_monai(mask, (16, 16, 16))
    assert padded.shape == (16, 32, 16)
    assert padded[3:13, :, 4:11].all() and int(padded.sum()) == mask.numel()


def test_lean_masks_equal_the_float32_stack_and_probability_is_close() -> None:
    """Masks made one target at a time equal thresholding the resampled float32 stack (any
    affine: here an oblique, finer input grid); float16 model-grid maps give each probability map
    back within 5e-4."""
    from duplus.data.resample import resample_to_grid

    rng = np.random.default_rng(0)
    prob = 1.0 / (1.0 + np.exp(-rng.normal(0, 3, (3, 12, 10, 14)).astype(np.float32)))
    model_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    angle = 0.2
    affine = np.array([[np.cos(angle), -np.sin(angle), 0, 1.0], [np.sin(angle), np.cos(angle), 0, -2.0],
                       [0, 0, 1.5, 3.0], [0, 0, 0, 1]])  # fmt: skip
    shape = (20, 18, 16)
    stack = resample_to_grid(prob, model_affine, shape, affine, mode="linear", padding_value=0.0)
    masks = masks_on_input_grid(prob, model_affine, shape, affine, 0.5)
    np.testing.assert_array_equal(masks, (stack >= 0.5).astype(np.uint8))
    pred = Prediction(
        masks=masks,
        targets=["a", "b", "c"],
        affine=affine,
        model_probabilities=prob.astype(np.float16),
        model_affine=model_affine,
    )
    assert pred.probabilities is None
    maps = pred.probability_maps()
    assert len(maps) == 3
    for k in range(3):
        np.testing.assert_allclose(maps[k], stack[k], atol=5e-4, rtol=0)
    with pytest.raises(IndexError):
        maps[3]


def test_predictor_default_path_keeps_no_float32_stack(tmp_path) -> None:
    """``Predictor.predict`` end to end with an untrained network: the default path holds float16
    model-grid maps and the same masks as the path that builds the float32 stack."""
    from duplus.config import PreprocessConfig
    from duplus.inference.predictor import Predictor

    class Prompts:
        def get(self, texts, device=None):
            g = torch.Generator().manual_seed(len("".join(texts)))
            return torch.nn.functional.normalize(torch.randn(len(texts), E, generator=g), dim=-1)

    predictor = Predictor(_model(), None, PreprocessConfig(spacing=(2.0, 2.0, 2.0)), [32, 32, 32])
    predictor.prompt_cache = Prompts()
    rng = np.random.default_rng(1)
    image = np.full((1, 40, 36, 30), -1000.0, dtype=np.float32)
    image[0, 5:35, 6:30, 4:26] = rng.normal(40, 30, (30, 24, 22))
    volume = Volume(image, np.diag([1.5, 1.5, 2.5, 1.0]))
    probe = predictor.predict(volume, "CT", "abdomen", ["liver", "spleen"], probabilities=True)
    assert probe.probabilities is not None
    cut = float(np.median(probe.probabilities[probe.probabilities > 0]))  # cuts through the maps
    lean = predictor.predict(volume, "CT", "abdomen", ["liver", "spleen"], threshold=cut)
    full = predictor.predict(volume, "CT", "abdomen", ["liver", "spleen"], threshold=cut, probabilities=True)
    assert lean.probabilities is None and lean.model_probabilities.dtype == np.float16
    assert full.probabilities is not None and full.probabilities.dtype == np.float32
    np.testing.assert_array_equal(lean.masks, full.masks)
    assert 0 < int(full.masks.sum()) < full.masks.size
    np.testing.assert_allclose(lean.probability(1), full.probabilities[1], atol=5e-4, rtol=0)
    assert lean.run["overlap"] == 0.5 and lean.run["windows_skipped"] == 0
