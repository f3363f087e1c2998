"""End-to-end training on tiny phantoms: outputs, cached prompts, SIGKILL + resume, torchrun DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from duplus.checkpoint import load_checkpoint
from duplus.errors import ConfigError, InputError
from duplus.training.api import resolve_train_config, train
from duplus.training.trainer import LAST, Trainer


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    from duplus.data.phantoms import make_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    make_phantoms(root, cases=3, test_cases=1, shape=(32, 32, 32), progress=False)
    return root


def write_config(path: Path, root: Path, cache: Path, **overrides) -> Path:
    cfg = {
        "datasets": [
            {"spec": str(root / "Task01_PhantomAbdomenCT" / "dataset.json")},
            {"spec": str(root / "Task04_PhantomBrainMRI" / "dataset.json"), "weight": 0.5},
            {"spec": str(root / "Task06_PhantomHeadNeckPET" / "dataset.json"), "weight": 0.5},
        ],
        "cache_dir": str(cache),
        "preprocess": {"spacing": [3.0, 3.0, 3.0]},
        "model": {"preset": "tiny"},
        "patch_size": [32, 32, 32],
        "batch_size": 2,
        "iterations": 4,
        "steps_per_epoch": 2,
        "warmup_steps": 1,
        "val_fraction": 0.34,
        "val_max_cases": 1,
        "checkpoint_every_steps": 1,
        "threads": 1,
        **overrides,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_writes_a_self_describing_run(tmp_path, phantom_root):
    cfg = write_config(tmp_path / "c.yaml", phantom_root, tmp_path / "cache")
    metrics = train(config=cfg, out=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "checkpoint_last.pt", "checkpoint_best.pt", "prompt_cache.pt"):
        assert (run / name).is_file(), name
    assert "dice/mean" in metrics and 0.0 <= metrics["dice/mean"] <= 1.0
    ckpt = load_checkpoint(run / "checkpoint_last.pt")
    assert ckpt["step"] == 4
    assert set(ckpt["label_space"]["targets"]) >= {"liver", "spleen", "white matter", "primary tumour"}
    assert ckpt["text_encoder_id"] and ckpt["model_config"]["preset"] == "tiny"
    assert {"optimizer", "scheduler", "rng"} <= set(ckpt["train_state"])
    assert [d["modality"] for d in ckpt["datasets"]] == ["CT", "MRI", "PET"]
    # torch.load with weights_only=True is what load_checkpoint uses: nothing pickled
    torch.load(run / "checkpoint_best.pt", weights_only=True)
    with pytest.raises(Exception, match="already holds a run"):
        train(config=cfg, out=run, progress=False)


def test_encoder_forward_count_is_zero_in_steady_state(tmp_path, phantom_root):
    from duplus.training.api import resolve_train_config

    cfg = resolve_train_config(
        write_config(tmp_path / "c.yaml", phantom_root, tmp_path / "cache", iterations=3)
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.fit()
    assert trainer.encoder_calls_after_warmup >= 1  # the warm-up encoded the prompts, once
    assert trainer.text_encoder.forward_count == trainer.encoder_calls_after_warmup  # then never again


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "duplus.cli", "train", *args]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, phantom_root):
    cfg = write_config(
        tmp_path / "c.yaml",
        phantom_root,
        tmp_path / "cache",
        iterations=8,
        steps_per_epoch=4,
        val_fraction=0.0,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd("--config", str(cfg), "--out", str(reference), "-q"), check=True, env=env)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd("--config", str(cfg), "--out", str(run), "-q"), env=env)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if (run / LAST).exists():
            try:
                step = load_checkpoint(run / LAST)["step"]
            except Exception:  # noqa: BLE001 - never half-written, but it may be replaced while read
                step = 0
            if step >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / LAST)["step"]
    assert 3 <= killed_at < 8
    subprocess.run(_train_cmd("--resume", str(run), "-q"), check=True, env=env)
    a = load_checkpoint(reference / LAST)
    b = load_checkpoint(run / LAST)
    assert b["step"] == 8
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, phantom_root):
    cfg = write_config(tmp_path / "c.yaml", phantom_root, tmp_path / "cache", iterations=2, steps_per_epoch=2)
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "duplus.cli", "train", "--config", str(cfg), "--out", str(run), "-q",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(run / LAST)
    assert ckpt["step"] == 2
    assert not list(run.glob(".*tmp*")), "a temporary checkpoint was left behind"
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 2  # header + one epoch, written once (rank 0 only)


def test_head_position_run_trains_on_patch_positions_and_predicts_with_them(tmp_path, phantom_root):
    from duplus.data.io import load_image
    from duplus.inference.predictor import Predictor
    from duplus.training.api import resolve_train_config

    model = {"preset": "tiny", "head_position": True}
    cfg = resolve_train_config(
        write_config(
            tmp_path / "c.yaml",
            phantom_root,
            tmp_path / "cache",
            iterations=2,
            model=model,
            mirror_axes=["ap", "si"],
        )
    )
    seen = []

    class Spy(Trainer):
        def train_step(self, batch):
            seen.append(tuple(batch["position"].shape))
            return super().train_step(batch)

    Spy(cfg, tmp_path / "run", progress=False).fit()
    assert seen == [(2, 3, 32, 32, 32)] * 2
    ckpt_path = tmp_path / "run" / "checkpoint_last.pt"
    assert load_checkpoint(ckpt_path)["model_config"]["head_position"] is True
    predictor = Predictor.from_checkpoint(ckpt_path)
    assert predictor.model.head_position and predictor.model.head.in_channels == 11
    vol = load_image(next((phantom_root / "Task01_PhantomAbdomenCT" / "imagesTs").glob("*.nii.gz")))
    plain = predictor.predict(vol, "CT", "abdomen", ["liver", "left kidney"], probabilities=True)
    assert predictor.mirror_axes == ("ap", "si")  # read from the checkpoint's train config
    assert predictor._tta_flips() == [(), (3,), (4,), (3, 4)]
    mirrored = predictor.predict(vol, "CT", "abdomen", ["liver", "left kidney"], tta=True, probabilities=True)
    assert plain.masks.shape == mirrored.masks.shape == (2, *vol.spatial_shape)
    assert not np.allclose(plain.probabilities, mirrored.probabilities)  # TTA ran (and averaged)
    # a model trained without mirroring refuses TTA, naming its checkpoint
    predictor.mirror_axes = ()
    with pytest.raises(InputError, match="checkpoint_last.pt: --tta needs a model trained with mirroring"):
        predictor.predict(vol, "CT", "abdomen", ["liver"], tta=True)


@pytest.mark.parametrize("axes", [["lr"], ["ap", "ap"]])
def test_mirror_axes_are_validated(tmp_path, phantom_root, axes):
    from duplus.training.api import resolve_train_config

    path = write_config(tmp_path / "c.yaml", phantom_root, tmp_path / "cache", mirror_axes=axes)
    with pytest.raises(
        ConfigError, match=r"c\.yaml: mirror_axes must be distinct names among \['ap', 'si'\]"
    ):
        resolve_train_config(path)


def test_ddp_averages_gradients_and_ranks_agree(tmp_path, phantom_root):
    """Under torchrun (gloo), each step's gradient is the mean of the ranks' own gradients (which
    differ: the ranks see different patches), and after the steps every rank holds the same weights."""
    import json

    cfg = write_config(
        tmp_path / "c.yaml", phantom_root, tmp_path / "cache", iterations=2, steps_per_epoch=2,
        paraphrase_t2=False, augment="none", val_fraction=0.0,
    )  # fmt: skip
    run = tmp_path / "ddp"
    probe = Path(__file__).with_name("ddp_probe.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(probe), str(cfg), str(run)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "ddp_probe.json").read_text())
    assert result["world_size"] == 2 and len(result["steps"]) == 2
    for step in result["steps"]:
        assert step["local_vs_other_rank"] > 1e-4 * step["grad_scale"]  # the ranks' data differ
        assert step["ddp_vs_mean_of_local"] <= 1e-5 * max(step["grad_scale"], 1.0)  # averaged, not summed
    assert result["weights_max_diff_across_ranks"] == 0.0


def test_two_ranks_follow_the_loss_curve_of_one_process_with_twice_the_batch(tmp_path, phantom_root):
    """``torchrun --nproc_per_node 2`` (gloo) with batch B per rank trains like one process with
    batch 2B: the same patches (rank r takes samples r*B..r*B+B-1 of each step's 2B), so the mean
    of the ranks' losses is the big batch's loss and the averaged gradient its gradient. Patches
    cover the whole 32^3 phantom, so every rank supervises the same number of present targets and
    the per-rank means average to the global one. Equal up to float rounding (batch-size-dependent
    kernels, all-reduce order): losses within 1e-4 relative over 4 steps, weights within 1e-4."""
    import json

    common = dict(
        iterations=4, steps_per_epoch=4, paraphrase_t2=False, augment="none", val_fraction=0.0,
        fg_oversample=0.0, datasets=[{"spec": str(phantom_root / "Task01_PhantomAbdomenCT" / "dataset.json")}],
    )  # fmt: skip
    cfg2 = write_config(tmp_path / "ddp.yaml", phantom_root, tmp_path / "cache", batch_size=2, **common)
    run = tmp_path / "ddp"
    probe = Path(__file__).with_name("ddp_probe.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(probe), str(cfg2), str(run)]  # fmt: skip
    done = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = [step["loss_mean_over_ranks"] for step in json.loads((run / "ddp_probe.json").read_text())["steps"]]

    losses: list[float] = []

    class Recorder(Trainer):
        def train_step(self, batch):
            out = super().train_step(batch)
            losses.append(out["loss"])
            return out

    cfg4 = write_config(tmp_path / "one.yaml", phantom_root, tmp_path / "cache", batch_size=4, **common)
    single = Recorder(resolve_train_config(cfg4), tmp_path / "one", progress=False)
    single.fit()
    assert len(ddp) == len(losses) == 4
    assert losses[0] != losses[-1]  # it trained
    np.testing.assert_allclose(ddp, losses, rtol=1e-4, atol=0)
    weights = torch.load(run / "ddp_weights.pt", weights_only=True)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-4, msg=name)


def test_resume_reads_the_prompt_cache_instead_of_encoding_again(tmp_path, phantom_root):
    cfg = write_config(tmp_path / "c.yaml", phantom_root, tmp_path / "cache", val_fraction=0.0)
    train(config=cfg, out=tmp_path / "run", progress=False, max_steps=2)
    assert (tmp_path / "run" / "prompt_cache.pt").is_file()
    resumed = Trainer(
        resolve_train_config(tmp_path / "run" / "config.yaml"), tmp_path / "run", resume=True, progress=False
    )
    resumed.setup()
    assert len(resumed.prompt_cache) > 0 and resumed.text_encoder.forward_count == 0
    fresh = Trainer(resolve_train_config(cfg), tmp_path / "run2", progress=False)
    fresh.setup()
    assert fresh.text_encoder.forward_count > 0  # without the file the warm-up encodes
