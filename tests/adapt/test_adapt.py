"""``duplus adapt``: what trains, zero forgetting for text-side adapters, the adapter file round trip,
``--merge``, the base-checkpoint check and the CLI.

A tiny base model is trained for a few steps on the phantom abdominal CT (no pancreas, no aorta)
and adapted to the phantom pancreas dataset (pancreas + aorta). The numbers are not the point
here (the base is barely trained); identities are.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from duplus.adapt.api import build_adapt_trainer, run_adaptation
from duplus.adapt.config import AdaptConfig, resolve_adapt_config
from duplus.adapt.router import PromptRouter
from duplus.api.segmentation import load_predictor
from duplus.errors import CheckpointError, ConfigError
from duplus.inference.predictor import Predictor
from duplus.inference.sliding import predict_volume_logits
from duplus.training.data import TrainingData

PATCH = [32, 32, 32]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from duplus.data.phantoms import make_phantoms

    root = tmp_path_factory.mktemp("adapt")
    make_phantoms(root / "ph", cases=2, test_cases=1, shape=(48, 48, 48), progress=False)
    return root


@pytest.fixture(scope="module")
def base_ckpt(root: Path) -> Path:
    from duplus.training.api import train

    cfg = {
        "datasets": [{"spec": "ph/Task01_PhantomAbdomenCT/dataset.json"}],
        "model": {"preset": "tiny"},
        "preprocess": {"spacing": [3.0, 3.0, 3.0]},  # ~32^3 volumes: one window per case
        "patch_size": PATCH,
        "batch_size": 2,
        "iterations": 3,
        "steps_per_epoch": 3,
        "warmup_steps": 1,
        "val_max_cases": 1,
        "threads": 2,
    }
    (root / "base.yaml").write_text(yaml.safe_dump(cfg))
    train(config=root / "base.yaml", out=root / "base", progress=False)
    return root / "base" / "checkpoint_last.pt"


def adapt_yaml(root: Path, name: str, train: list[str], **extra: Any) -> Path:
    cfg = {
        "datasets": [{"spec": "ph/Task02_PhantomPancreasCT/dataset.json"}],
        "train": train,
        "iterations": 3,
        "steps_per_epoch": 3,
        "warmup_steps": 1,
        "val_max_cases": 1,
        "original_val_max_cases": 1,
        "threads": 2,
        **extra,
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def text_run(root: Path, base_ckpt: Path) -> tuple[Any, dict[str, Any]]:
    """An adaptation with only text LoRA, kept in memory, with its adapter and merged checkpoint."""
    trainer = build_adapt_trainer(
        base_ckpt, adapt_yaml(root, "text", ["text_lora"]), root / "run_text", progress=False
    )
    report = run_adaptation(trainer, merge=True)
    return trainer, report


@torch.no_grad()
def case_logits(model: Any, prompts: Any, ds: Any, case: Any, targets: list[str]) -> torch.Tensor:
    """Sliding-window logits ``(1, K, D, H, W)`` of a prepared case with the canonical prompts."""
    from duplus.text.prompts import t2_prompts

    model.eval()
    image, _ = TrainingData.load_case(ds, case)
    t1 = prompts.get([ds.t1_prompt], device="cpu")
    t2 = prompts.get([t2_prompts(t, ds.modality)[0] for t in targets], device="cpu")[None]
    cond = model.condition(torch.tensor([ds.modality_index]), t1, t2)
    return predict_volume_logits(model, torch.from_numpy(image)[None], cond, PATCH)


# ---------------------------------------------------------------------------------------- config
def test_config_is_strict_and_resolves_paths(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"datasets": [{"spec": "../data/dataset.json"}], "train": ["head"]}))
    cfg = resolve_adapt_config(path)
    assert cfg.datasets[0].spec == str((tmp_path / "data" / "dataset.json").resolve())
    assert not cfg.text_side_only
    path.write_text(yaml.safe_dump({"datasets": [{"spec": "x.json"}], "train": ["lora"]}))
    with pytest.raises(ConfigError, match="unknown part"):
        resolve_adapt_config(path)
    path.write_text(yaml.safe_dump({"datasets": [{"spec": "x.json"}], "lora_rank": 4}))
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_adapt_config(path)
    with pytest.raises(ConfigError, match="datasets"):
        resolve_adapt_config(AdaptConfig())


# ---------------------------------------------------------------------------------------- parts
@pytest.mark.parametrize("part", ["text_lora", "head", "film", "backbone_lora"])
def test_only_the_chosen_parts_train(root: Path, base_ckpt: Path, part: str) -> None:
    cfg = resolve_adapt_config(adapt_yaml(root, f"part_{part}", [part], eval_original=False))
    trainer = build_adapt_trainer(base_ckpt, cfg, root / f"run_part_{part}", progress=False)
    trainer.setup()
    net = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    text = {n for n, p in trainer.text_encoder.model.named_parameters() if p.requires_grad}
    expected_net = {
        "text_lora": lambda n: False,
        "head": lambda n: n.startswith("head."),
        "film": lambda n: n.startswith("conditioner."),
        "backbone_lora": lambda n: n.startswith(("encoder.", "decoder.")) and "lora_" in n,
    }[part]
    assert net == {n for n, _ in trainer.model.named_parameters() if expected_net(n)}
    assert bool(text) == (part == "text_lora") and all("lora_" in n for n in text)
    counts = trainer.parameter_counts
    n_opt = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    assert counts["trainable"] == n_opt == counts["by_part"][part] > 0
    if part in ("text_lora", "head"):
        assert counts["fraction"] <= 0.02
    if part == "text_lora":  # the new targets' prompts, not the original (shared) abdominal CT T1
        scope = trainer.prompt_cache.scope
        assert "pancreas" in scope and "aorta" in scope
        assert trainer.data.train_sets[0].t1_prompt not in scope and "liver" not in scope


def test_text_lora_without_new_prompts_is_refused(root: Path, base_ckpt: Path) -> None:
    cfg = resolve_adapt_config(adapt_yaml(root, "same", ["text_lora"], eval_original=False))
    cfg.datasets[0].spec = str(root / "ph" / "Task01_PhantomAbdomenCT" / "dataset.json")
    trainer = build_adapt_trainer(base_ckpt, cfg, root / "run_same", progress=False)
    with pytest.raises(ConfigError, match="nothing to learn"):
        trainer.setup()


# ---------------------------------------------------------------------------------------- forgetting
def test_text_lora_has_zero_forgetting(base_ckpt: Path, text_run: tuple[Any, dict[str, Any]]) -> None:
    trainer, report = text_run
    assert report["text_side_only"] and report["parameters"]["fraction"] <= 0.02
    original = report["original"]
    assert original["per_target"] and original["max_abs_delta"] == 0.0
    base = Predictor.from_checkpoint(base_ckpt, device="cpu")
    ds = trainer.original_sets[0]
    before = case_logits(base.model, base.prompt_cache, ds, ds.cases[0], ds.targets)
    after = case_logits(trainer.model, trainer.prompt_cache, ds, ds.cases[0], ds.targets)
    assert torch.equal(before, after)  # bit-identical: original prompts never touch the adapters
    assert not torch.allclose(base.prompt_cache.get(["pancreas"]), trainer.prompt_cache.get(["pancreas"]))
    assert torch.equal(base.prompt_cache.get(["liver"]), trainer.prompt_cache.get(["liver"]))
    for name in ("adapter.pt", "adapt_report.json", "adapt_report.md", "merged.pt", "metrics.csv"):
        assert (trainer.run_dir / name).is_file(), name
    assert set(report["new_task"]["dice"]) == {"PhantomPancreasCT/pancreas", "PhantomPancreasCT/aorta"}
    assert report["new_task"]["added_targets"] == ["pancreas", "aorta"]


# ---------------------------------------------------------------------------------------- files
def test_adapter_file_and_merged_checkpoint_reproduce_the_adapted_model(
    base_ckpt: Path, text_run: tuple[Any, dict[str, Any]]
) -> None:
    from duplus.data.io import load_nifti

    trainer, _ = text_run
    ds = trainer.data.val_sets[0]
    targets = ["pancreas", "aorta"]
    expected = case_logits(trainer.model, trainer.prompt_cache, ds, ds.cases[0], targets)
    adapted = load_predictor(base_ckpt, adapter=trainer.run_dir / "adapter.pt", device="cpu")
    merged = load_predictor(trainer.run_dir / "merged.pt", device="cpu")
    assert isinstance(adapted.prompt_cache, PromptRouter)
    assert adapted.label_space is not None and "pancreas" in adapted.label_space
    assert merged.label_space is not None and "pancreas" in merged.label_space
    for pred in (adapted, merged):
        got = case_logits(pred.model, pred.prompt_cache, ds, ds.cases[0], targets)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    image = load_nifti(
        sorted((base_ckpt.parents[1] / "ph" / "Task02_PhantomPancreasCT" / "imagesTs").iterdir())[0]
    )
    p1 = adapted.predict(image, "CT", "abdomen", ["pancreas"], overlap=0.25, probabilities=True)
    p2 = merged.predict(image, "CT", "abdomen", ["pancreas"], overlap=0.25, probabilities=True)
    assert p1.probabilities is not None and p2.probabilities is not None
    assert p1.probabilities.shape[1:] == image.spatial_shape
    torch.testing.assert_close(
        torch.from_numpy(p1.probabilities), torch.from_numpy(p2.probabilities), rtol=0, atol=1e-5
    )


def test_adapter_refuses_another_base_checkpoint(
    tmp_path: Path, base_ckpt: Path, text_run: tuple[Any, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    from duplus.adapt.api import apply_adapter_file
    from duplus.checkpoint import load_checkpoint, save_checkpoint

    trainer, _ = text_run
    adapter = trainer.run_dir / "adapter.pt"
    other = tmp_path / "other.pt"
    payload = load_checkpoint(base_ckpt)
    payload["best_metric"] = 0.5
    save_checkpoint(other, payload)
    with pytest.raises(CheckpointError, match="sha256") as err:
        load_predictor(other, adapter=adapter, device="cpu")
    assert str(adapter) in str(err.value) and str(other) in str(err.value)
    with pytest.raises(CheckpointError, match="not a DuPLUS adapter"):
        load_predictor(base_ckpt, adapter=base_ckpt, device="cpu")
    base = Predictor.from_checkpoint(base_ckpt, device="cpu")
    with caplog.at_level(logging.WARNING):
        apply_adapter_file(base.model, base.text_encoder, adapter, base_checkpoint=None)
    assert "cannot verify" in caplog.text


def test_task_scoped_network_parts_keep_the_original_targets(root: Path, base_ckpt: Path) -> None:
    """Head + backbone LoRA + text LoRA, task-scoped (the default): original targets run the base
    network (bit-identical), new ones the adapted network, also within one mixed request; the
    adapter file and the merged checkpoint reproduce both."""
    from duplus.adapt.scoped import ScopedDuPLUS

    cfg = adapt_yaml(root, "net", ["text_lora", "head", "backbone_lora"], iterations=2, steps_per_epoch=2)
    trainer = build_adapt_trainer(base_ckpt, cfg, root / "run_net", progress=False)
    report = run_adaptation(trainer, merge=True)
    assert report["zero_forgetting_by_construction"] and not report["text_side_only"]
    assert report["original"]["per_target"] and report["original"]["max_abs_delta"] == 0.0
    assert set(report["parameters"]["by_part"]) == {"text_lora", "head", "backbone_lora"}
    scoped = trainer.eval_model()
    assert isinstance(scoped, ScopedDuPLUS)
    base = Predictor.from_checkpoint(base_ckpt, device="cpu")
    orig = trainer.original_sets[0]
    torch.testing.assert_close(
        case_logits(scoped, trainer.prompt_cache, orig, orig.cases[0], orig.targets),
        case_logits(base.model, base.prompt_cache, orig, orig.cases[0], orig.targets),
        rtol=0,
        atol=0,
    )
    ds = trainer.data.val_sets[0]
    mixed = case_logits(scoped, trainer.prompt_cache, ds, ds.cases[0], ["liver", "pancreas"])
    liver = case_logits(base.model, base.prompt_cache, ds, ds.cases[0], ["liver"])
    pancreas = case_logits(trainer.model, trainer.prompt_cache, ds, ds.cases[0], ["pancreas"])
    torch.testing.assert_close(mixed, torch.cat([liver, pancreas], 1), rtol=0, atol=0)
    merged_ckpt = torch.load(trainer.run_dir / "merged.pt", weights_only=True)
    assert not any("lora_" in k for k in merged_ckpt["adapted_model"])
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in merged_ckpt["model"].items())
    for pred in (
        load_predictor(base_ckpt, adapter=trainer.run_dir / "adapter.pt", device="cpu"),
        load_predictor(trainer.run_dir / "merged.pt", device="cpu"),
    ):
        got = case_logits(pred.model, pred.prompt_cache, ds, ds.cases[0], ["liver", "pancreas"])
        torch.testing.assert_close(got, mixed, rtol=1e-4, atol=1e-4)


def test_shared_network_parts_replace_the_base_network(root: Path, base_ckpt: Path) -> None:
    """``network_scope: shared``: the adapted head serves every target; forgetting is measured."""
    cfg = adapt_yaml(root, "shared", ["head"], iterations=2, steps_per_epoch=2, network_scope="shared")
    trainer = build_adapt_trainer(base_ckpt, cfg, root / "run_shared", progress=False)
    report = run_adaptation(trainer, merge=True)
    assert not report["zero_forgetting_by_construction"] and trainer.eval_model() is trainer.model
    assert report["original"]["per_target"]
    merged_ckpt = torch.load(trainer.run_dir / "merged.pt", weights_only=True)
    assert "adapted_model" not in merged_ckpt
    key = "head.controller_text.weight"
    torch.testing.assert_close(merged_ckpt["model"][key], trainer.model.state_dict()[key])
    ds = trainer.original_sets[0]
    merged = load_predictor(trainer.run_dir / "merged.pt", device="cpu")
    torch.testing.assert_close(
        case_logits(merged.model, merged.prompt_cache, ds, ds.cases[0], ds.targets),
        case_logits(trainer.model, trainer.prompt_cache, ds, ds.cases[0], ds.targets),
        rtol=1e-5,
        atol=1e-5,
    )


# ---------------------------------------------------------------------------------------- CLI
def test_cli_adapt_end_to_end(root: Path, base_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from duplus.cli import main

    cfg = adapt_yaml(root, "cli", ["head"], iterations=2, steps_per_epoch=2, eval_original=False)
    out = root / "run_cli"
    argv = ["adapt", "-c", str(base_ckpt), "--config", str(cfg), "--out", str(out), "-q"]
    assert main(argv) == 0
    assert (out / "adapter.pt").is_file() and "forgetting" in (out / "adapt_report.md").read_text()
    assert "adapter:" in capsys.readouterr().out
    assert main(argv) == 2  # never overwrites a finished adaptation
    assert "already holds an adaptation" in capsys.readouterr().err
    bad = adapt_yaml(root, "cli_bad", ["everything"])
    assert main(["adapt", "-c", str(base_ckpt), "--config", str(bad), "--out", str(root / "run_bad")]) == 2
    assert "unknown part" in capsys.readouterr().err
    shutil.rmtree(out)
