"""What a hostile user found: inputs that made duplus delete or overwrite user files, exhaust memory,
exit 0 on a broken model, or fail with the wrong exit code.

Each case runs ``duplus.cli.main`` in-process inside its own folder and checks:

* the exit code (2: the input is at fault, 1: the environment) and exactly one stderr line,
  ``duplus: error: ...``, naming the culprit;
* every file that existed before is byte-identical afterwards;
* no file appeared outside the command's output folder.

The data-loss cases also run once through the installed console script in a subprocess.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duplus.cli import main
from duplus.fileio import MANIFEST_NAME, STAGING_PREFIX, OutputFolder

_spec = importlib.util.spec_from_file_location(
    "reliability_fixtures", Path(__file__).with_name("conftest.py")
)
assert _spec is not None and _spec.loader is not None
fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fixtures  # dataclasses look their module up there
_spec.loader.exec_module(fixtures)

SHAPE = (16, 16, 16)


# ------------------------------------------------------------------------------------ helpers
def write_ct(path: Path, spacing: float = 2.0, shape: tuple[int, int, int] = SHAPE) -> Path:
    from duplus.data.phantoms import make_phantom_case

    case = make_phantom_case(1, "abdomen", "CT", shape=shape)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.rint(case.image).astype(np.int16), affine), str(path))
    return path


def write_dicom_files(folder: Path, n: int = 16) -> list[Path]:
    """``n`` files standing for a user's DICOM series (their bytes are what must survive)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        f = folder / f"IM{k:04d}.dcm"
        f.write_bytes(b"\0" * 128 + b"DICM" + bytes([k]) * 64)
        files.append(f)
    return files


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def checkpoint_copy(src: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    ckpt = torch.load(src, weights_only=True)
    change(ckpt)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


@dataclass
class Case:
    """One command in its own folder ``root``; ``out`` is the only place it may write."""

    root: Path
    argv: list[str]
    out: Path | None
    culprit: str


def run_case(case: Case, capsys: pytest.CaptureFixture[str], rc: int, *words: str) -> str:
    before = snapshot(case.root)
    code = main(case.argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == rc, f"exit {code}; stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("duplus: error: "), err
    assert case.culprit in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    after = snapshot(case.root)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"input files changed or removed: {changed}"
    new = [
        k
        for k in set(after) - set(before)
        if case.out is None or not (case.root / k).is_relative_to(case.out)
    ]
    assert not new, f"files outside the output folder: {new}"
    return lines[0]


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    yield
    logging.getLogger().setLevel(logging.WARNING)


def _segment_argv(
    image: Path, out: Path, ckpt: Path, *extra: str, targets: tuple[str, ...] = ("liver",)
) -> list[str]:
    return [
        "segment",
        *("-i", str(image), "-o", str(out), "-c", str(ckpt)),
        *("--modality", "CT", "--region", "abdomen", "--targets", *targets),
        *extra,
        "-q",
    ]


# ---------------------------------------------------------------- 1. segment never deletes a folder
def test_segment_keeps_an_existing_folder_of_the_case_name(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``segment -i data/nifti/patient7.nii.gz -o data`` once deleted the DICOM files in data/patient7."""
    data = tmp_path / "data"
    image = write_ct(data / "nifti" / "patient7.nii.gz")
    write_dicom_files(data / "patient7")
    case = Case(tmp_path, _segment_argv(image, data, trained_run.checkpoint), data, "patient7")
    run_case(case, capsys, 2, "not written by duplus", "never replaced")


def test_segment_refuses_to_replace_its_own_output_without_overwrite(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_ct(tmp_path / "in" / "ct.nii.gz")
    out = tmp_path / "seg"
    assert main(_segment_argv(image, out, trained_run.checkpoint)) == 0
    capsys.readouterr()
    first = snapshot(out)
    run_case(
        Case(tmp_path, _segment_argv(image, out, trained_run.checkpoint), out, "ct"), capsys, 2, "--overwrite"
    )
    assert main(_segment_argv(image, out, trained_run.checkpoint, "--overwrite", targets=("spleen",))) == 0
    assert (out / "ct" / "spleen.nii.gz").is_file() and snapshot(out) != first


def test_overwrite_never_replaces_a_user_file_in_an_output_folder(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_ct(tmp_path / "in" / "ct.nii.gz")
    out = tmp_path / "seg"
    assert main(_segment_argv(image, out, trained_run.checkpoint)) == 0
    (out / "ct" / "my_notes.txt").write_text("reviewed by Dr X")
    capsys.readouterr()
    case = Case(
        tmp_path, _segment_argv(image, out, trained_run.checkpoint, "--overwrite"), out, "my_notes.txt"
    )
    run_case(case, capsys, 2, "not written by duplus")


def test_ml_case_names_that_collide_are_refused(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cases ``a`` and ``a_probabilities`` both wrote ``a_probabilities.nii.gz``."""
    write_ct(tmp_path / "in" / "a.nii.gz")
    write_ct(tmp_path / "in" / "a_probabilities.nii.gz")
    argv = _segment_argv(
        tmp_path / "in", tmp_path / "seg", trained_run.checkpoint, "--ml", "--save-probabilities"
    )
    run_case(Case(tmp_path, argv, tmp_path / "seg", "a_probabilities"), capsys, 2, "would both write it")
    assert not (tmp_path / "seg").exists()


def kill_while_staging(out: Path) -> Path:
    """A process that dies by SIGKILL while assembling a case in a staging folder."""
    code = (
        "import os, sys; from pathlib import Path; from duplus.fileio import OutputFolder\n"
        "f = OutputFolder(sys.argv[1]); f.__enter__(); cm = f.staging_folder(); s = cm.__enter__()\n"
        "(s / 'masks').mkdir(); (s / 'masks' / 'liver.nii.gz').write_bytes(b'half-written')\n"
        "print(s, flush=True); os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    stage = Path(proc.stdout.strip())
    assert (stage / "masks" / "liver.nii.gz").is_file()
    return stage


def test_stale_staging_folders_are_cleaned_and_never_read(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGKILL leaves a staging folder; the next run into the folder removes it, and evaluate
    never reads hidden files."""
    image = write_ct(tmp_path / "in" / "ct.nii.gz")
    out = tmp_path / "seg"
    stage = kill_while_staging(out)
    (out / ".liver.nii.gz.tmp123.nii.gz").write_bytes(b"junk")  # a temporary file of a killed write
    assert main(_segment_argv(image, out, trained_run.checkpoint)) == 0
    assert not stage.exists() and not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())
    labels = tmp_path / "labels.json"
    labels.write_text('{"labels": {"0": "background", "1": "liver"}}')
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copyfile(out / "ct" / "liver.nii.gz", ref / "ct.nii.gz")
    argv = [
        "evaluate",
        "--pred",
        str(out),
        "--ref",
        str(ref),
        "--labels",
        str(labels),
        "--out",
        str(tmp_path / "ev"),
    ]
    assert main(argv) == 0
    assert (tmp_path / "ev" / "metrics.csv").read_text().count("\n") == 2  # one row: ct, liver


# ------------------------------------------------------------------------ 5. memory is bounded
def test_resampled_grid_is_bounded_before_allocating(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_ct(tmp_path / "in" / "huge_spacing.nii.gz", spacing=500.0, shape=(24, 24, 24))
    argv = _segment_argv(image, tmp_path / "seg", trained_run.checkpoint)
    run_case(
        Case(tmp_path, argv, tmp_path / "seg", "huge_spacing.nii.gz"),
        capsys,
        2,
        "exceeds the limit",
        "DUPLUS_MAX_VOXELS",
    )


def test_a_gzip_bomb_is_refused_from_its_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1 MB on disk that would decompress to 1.2 GiB: refused before one voxel is read."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((1100, 1100, 1000))
    hdr.set_zooms((1.0, 1.0, 1.0))
    hdr["vox_offset"] = 352
    bomb = tmp_path / "in" / "bomb.nii.gz"
    bomb.parent.mkdir()
    bomb.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 2**20))
    argv = ["segment", "-i", str(bomb), "-o", str(tmp_path / "seg"), "-c", "x.pt", "--modality", "CT"]
    argv += ["--region", "abdomen", "--targets", "liver", "-q"]
    run_case(
        Case(tmp_path, argv, tmp_path / "seg", "bomb.nii.gz"),
        capsys,
        2,
        "1,210,000,000 voxels",
        "exceeds the limit",
    )


def test_max_voxels_is_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DUPLUS_MAX_VOXELS", "1000")
    image = write_ct(tmp_path / "in" / "ct.nii.gz")
    argv = ["segment", "-i", str(image), "-o", str(tmp_path / "seg"), "-c", "x.pt", "--modality", "CT"]
    argv += ["--region", "abdomen", "--targets", "liver", "-q"]
    run_case(Case(tmp_path, argv, tmp_path / "seg", "ct.nii.gz"), capsys, 2, "limit of 1,000")


# --------------------------------------------------------------- checkpoints checked on load (5, 7, 8)
def _bad_checkpoint_case(tmp_path: Path, trained_run: Any, change: Callable[[dict[str, Any]], None]) -> Case:
    ckpt = checkpoint_copy(trained_run.checkpoint, tmp_path / "model" / "bad.pt", change)
    image = write_ct(tmp_path / "in" / "ct.nii.gz")
    return Case(tmp_path, _segment_argv(image, tmp_path / "seg", ckpt), tmp_path / "seg", "bad.pt")


def _nan_weight(ckpt: dict[str, Any]) -> None:
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = ckpt["model"][name].clone().fill_(float("nan"))


def _huge_features(ckpt: dict[str, Any]) -> None:
    ckpt["model_config"]["features"] = [4096] * 8


def _hub_encoder(ckpt: dict[str, Any]) -> None:
    ckpt["text_config"]["encoder"] = "someone/not-on-this-machine"
    ckpt["text_encoder_id"] = "someone/not-on-this-machine"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_nan_weight, ("NaN/Inf",)),
        (_huge_features, ("model.features", "4096")),
        (_hub_encoder, ("someone/not-on-this-machine", "--allow-download")),
    ],
    ids=["nan-weights", "huge-features", "hub-text-encoder"],
)
def test_checkpoints_are_checked_on_load(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str], change: Any, words: tuple[str, ...]
) -> None:
    run_case(_bad_checkpoint_case(tmp_path, trained_run, change), capsys, 2, *words)


def test_hub_encoder_is_never_fetched_without_consent(
    trained_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    calls: list[dict[str, Any]] = []
    real = transformers.AutoConfig.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    ckpt = checkpoint_copy(trained_run.checkpoint, tmp_path / "hub.pt", _hub_encoder)
    from duplus.errors import CheckpointError
    from duplus.inference.predictor import Predictor

    with pytest.raises(CheckpointError, match="--allow-download"):
        Predictor.from_checkpoint(ckpt, device="cpu")
    assert calls and all(c.get("local_files_only") for c in calls)


# -------------------------------------------------------------------- 6. full disk during train
def test_full_disk_during_train_names_the_file_and_keeps_metrics_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import duplus.checkpoint as ckpt_mod

    dataset = fixtures.write_tiny_dataset(tmp_path / "data")
    config = fixtures.write_tiny_config(tmp_path / "train.yaml", dataset)

    def torch_save_fails(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt_mod.torch, "save", torch_save_fails)
    monkeypatch.setattr(ckpt_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))  # type: ignore[attr-defined]
    run = tmp_path / "run"
    case = Case(
        tmp_path, ["train", "--config", str(config), "--out", str(run), "-q"], run, "checkpoint_last.pt"
    )
    run_case(case, capsys, 1, "no space left on device")
    assert not (run / "metrics.csv").exists()  # no row for a step that has no checkpoint
    assert not (run / "config.yaml").exists()


# ------------------------------------------------------------------- 9. adapt writes only in --out
def test_adapt_bounds_lora_rank(tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "adapt.yaml"
    cfg.write_text(
        f"datasets:\n  - {{spec: {trained_run.dataset_json}}}\ntrain: [text_lora]\nlora_r: 100000\n"
    )
    argv = [
        "adapt",
        "-c",
        str(trained_run.checkpoint),
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "ad"),
        "-q",
    ]
    run_case(Case(tmp_path, argv, tmp_path / "ad", "adapt.yaml"), capsys, 2, "lora_r must be in [1, 256]")
    assert not (tmp_path / "ad").exists()


def test_adapt_never_writes_into_the_base_run(
    tmp_path: Path, trained_run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from duplus.adapt.api import adapt_checkpoint
    from duplus.adapt.config import AdaptConfig
    from duplus.config import from_dict

    monkeypatch.delenv("DUPLUS_CACHE", raising=False)
    base = snapshot(trained_run.run_dir)
    raw = {
        "datasets": [{"spec": str(trained_run.dataset_json)}],
        "train": ["head"],
        "network_scope": "shared",
    }
    raw["iterations"] = 2
    raw |= {"steps_per_epoch": 2, "patch_size": [32, 32, 32], "val_fraction": 0.0, "eval_original": False}
    cfg = from_dict(AdaptConfig, {**raw, "threads": 2})
    out = tmp_path / "ad"
    adapt_checkpoint(trained_run.checkpoint, cfg, out, progress=False)
    assert snapshot(trained_run.run_dir) == base
    assert (out / "adapter.pt").is_file() and any((out / "cache").rglob("*.npy"))


# ------------------------------------------------------------------- 11. exit codes where input is at fault
@pytest.mark.parametrize(
    ("device", "words"),
    [("cuda", "CUDA is not available"), ("tpu:0", "unknown device"), ("cuda:x", "unknown device")],
)
def test_device_errors_are_input_errors(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str], device: str, words: str
) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = write_ct(tmp_path / "in" / "ct.nii.gz")
    argv = _segment_argv(image, tmp_path / "seg", trained_run.checkpoint, "--device", device)
    run_case(Case(tmp_path, argv, tmp_path / "seg", "--device"), capsys, 2, words)


@pytest.mark.parametrize(
    ("yaml_extra", "words"),
    [
        ("lr: .nan\n", "finite number"),
        ("lr: -0.1\n", "lr must be > 0"),
        ("preprocess: {spacing: [0, 1.5, 1.5]}\n", "spacing must be 3 positive mm"),
        ("device: cuda:7\n", "device"),
    ],
    ids=["nan-lr", "negative-lr", "zero-spacing", "absent-device"],
)
def test_bad_training_values_are_config_errors(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str], yaml_extra: str, words: str
) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"datasets:\n  - {{spec: {trained_run.dataset_json}}}\nmodel: {{preset: tiny}}\n{yaml_extra}"
    )
    if "cuda" in yaml_extra and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "-q"]
    run_case(Case(tmp_path, argv, tmp_path / "run", "train.yaml"), capsys, 2, words)


def test_a_binary_yaml_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "-q"]
    run_case(Case(tmp_path, argv, tmp_path / "run", "train.yaml"), capsys, 2, "not a UTF-8 text file")


def test_set_with_a_python_tag_is_refused(
    tmp_path: Path, trained_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "code_ran"
    argv = ["train", "--config", str(trained_run.config), "--out", str(tmp_path / "run")]
    argv += ["--set", f'lr=!!python/object/apply:os.system ["touch {marker}"]', "-q"]
    run_case(Case(tmp_path, argv, tmp_path / "run", "--set"), capsys, 2, "invalid value")
    assert not marker.exists()


# ------------------------------------------------------------------------ 13. no stray warnings
def test_library_warnings_stay_off_stderr_without_verbose(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import duplus.cli.commands as cli

    def noisy(args: Any) -> int:
        warnings.warn("numpy: Mean of empty slice", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "cmd_evaluate", noisy)
    argv = ["evaluate", "--pred", "p", "--ref", "r", "--out", "o"]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(argv) == 0
        assert capsys.readouterr().err == ""
        assert not [
            r for r in caplog.records if r.levelno >= logging.WARNING and "empty slice" in r.getMessage()
        ]
        assert main(["-v", *argv]) == 0
    assert [r for r in caplog.records if "empty slice" in r.getMessage()]  # shown with --verbose


def test_make_phantoms_quiet_shows_no_progress(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "duplus.cli",
            "make-phantoms",
            str(out),
            "--cases",
            "1",
            "--test-cases",
            "0",
            "--shape",
            "16",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "phantoms" not in proc.stderr and "%" not in proc.stderr and "it/s" not in proc.stderr, proc.stderr
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "duplus.cli",
            "make-phantoms",
            str(out),
            "--cases",
            "1",
            "--shape",
            "16",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr


# ------------------------------------------------------------- 14. no warning for a trained target
def test_no_warning_for_a_target_the_checkpoint_was_trained_on(
    tmp_path: Path, trained_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from duplus.data.label_space import LabelSpace

    ckpt = checkpoint_copy(
        trained_run.checkpoint,
        tmp_path / "brain.pt",
        lambda c: c.update(label_space=LabelSpace.from_names(["liver", "brain"]).to_dict()),
    )
    image = write_ct(tmp_path / "in" / "ct.nii.gz")
    with caplog.at_level(logging.WARNING):
        assert main(_segment_argv(image, tmp_path / "seg", ckpt, targets=("brain",))) == 0
        assert not [r for r in caplog.records if "brain" in r.getMessage()]
        assert main(_segment_argv(image, tmp_path / "seg2", ckpt, targets=("cerebellum thing",))) == 0
    assert any("cerebellum thing" in r.getMessage() for r in caplog.records)


# -------------------------------------------------------------- the data-loss case through the script
def test_segment_keeps_user_folder_through_the_console_script(tmp_path: Path, trained_run: Any) -> None:
    data = tmp_path / "data"
    image = write_ct(data / "nifti" / "patient7.nii.gz")
    write_dicom_files(data / "patient7")
    before = snapshot(tmp_path)
    script = Path(sys.executable).with_name("duplus")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "duplus.cli"]
    proc = subprocess.run(
        [*cmd, *_segment_argv(image, data, trained_run.checkpoint)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "patient7" in proc.stderr
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ the property
_COMMANDS = ("segment", "evaluate", "prepare", "prognosis")
_RELATIONS = ("equals", "inside", "contains")


def _layout(root: Path, command: str) -> tuple[Path, list[Path]]:
    """Inputs of ``command`` under ``root/data``; returns (the input folder, argv inputs)."""
    data = root / "data"
    if command == "segment":
        return data, [write_ct(data / "case1.nii.gz")]
    if command == "evaluate":
        for sub in ("pred", "ref"):
            (data / sub).mkdir(parents=True)
            nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.eye(4)), str(data / sub / "c.nii.gz"))
        (data / "labels.json").write_text('{"labels": {"0": "background", "1": "liver"}}')
        return data, [data / "pred", data / "ref", data / "labels.json"]
    if command == "prognosis":
        return data, [_write_survival_csv(data / "clinical.csv")]
    return data, [fixtures.write_tiny_dataset(data, cases=1, shape=SHAPE)]


def _write_survival_csv(path: Path, n: int = 24) -> Path:
    """A clinical table whose older patients relapse earlier (PatientID, RFS, Relapse, Age)."""
    rng = np.random.default_rng(0)
    age = rng.integers(40, 80, n)
    time = rng.exponential(2000.0 * np.exp(-(age - 60) / 10)).round(1) + 1
    rows = [
        f"P{i:03d},{t},{int(e)},{a}"
        for i, (t, e, a) in enumerate(zip(time, rng.random(n) < 0.7, age, strict=True))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("PatientID,RFS,Relapse,Age\n" + "\n".join(rows) + "\n")
    return path


def _argv(command: str, inputs: list[Path], out: Path, ckpt: Path) -> list[str]:
    if command == "segment":
        return _segment_argv(inputs[0], out, ckpt)
    if command == "evaluate":
        return [
            "evaluate",
            "--pred",
            str(inputs[0]),
            "--ref",
            str(inputs[1]),
            "--labels",
            str(inputs[2]),
            "--out",
            str(out),
            "-q",
        ]
    if command == "prognosis":
        return [
            "prognosis",
            "cv",
            "--clinical",
            str(inputs[0]),
            "--modes",
            "ehr",
            "--folds",
            "2",
            "--out",
            str(out),
            "-q",
        ]
    return ["prepare", str(inputs[0]), "--out", str(out), "-q"]


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(_COMMANDS),
    relation=st.sampled_from(_RELATIONS),
    name=st.sampled_from(["case1", "out", "ds", "pred"]),
)
def test_output_inside_equal_or_containing_an_input_never_changes_a_file(
    trained_run: Any, tmp_path_factory: pytest.TempPathFactory, command: str, relation: str, name: str
) -> None:
    root = tmp_path_factory.mktemp("prop")
    data, inputs = _layout(root, command)
    target = inputs[0] if inputs[0].is_dir() else data
    out = {"equals": target, "inside": target / name, "contains": root}[relation]
    before = snapshot(root)
    main(_argv(command, inputs, out, trained_run.checkpoint))
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before
    logging.getLogger().setLevel(logging.WARNING)


def test_manifest_is_never_an_output_name(tmp_path: Path) -> None:
    from duplus.errors import InputError
    from duplus.fileio import write_text_atomic

    with OutputFolder(tmp_path) as _, pytest.raises(InputError, match="manifest"):
        write_text_atomic(tmp_path / MANIFEST_NAME, "{}")


def test_outputs_need_no_manifest_to_be_read(tmp_path: Path) -> None:
    """The manifest is hidden and ignored by every reader (evaluate, segment inputs)."""
    from duplus.api.segmentation import discover_cases

    write_ct(tmp_path / "a.nii.gz")
    (tmp_path / MANIFEST_NAME).write_text('{"format": "duplus-output-manifest", "files": []}')
    (tmp_path / ".b.nii.gz.tmp.nii.gz").write_bytes(b"x")
    assert list(discover_cases(tmp_path)) == ["a"]
    assert os.path.exists(tmp_path / "a.nii.gz")
