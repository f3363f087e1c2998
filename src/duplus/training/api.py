"""Library entry point behind ``duplus train``: load, resolve and validate the config, then train."""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Any

import yaml

from duplus.config import TrainConfig, from_dict, load_yaml
from duplus.data.sampling import MIRROR_AXES
from duplus.device import select_device
from duplus.errors import ConfigError, InputError
from duplus.fileio import OutputFolder, check_not_inside_inputs
from duplus.paths import resolve_relative


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a mapping")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: invalid value ({str(exc).splitlines()[0]})") from exc
    return data


def resolve_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a training YAML strictly and make its dataset paths absolute (relative to the YAML)."""
    path = Path(path)
    raw = apply_overrides(load_yaml(path), overrides or [])
    cfg = from_dict(TrainConfig, raw, where=str(path))
    base = path.absolute().parent  # the folder the user named, not a symlink target
    if not cfg.datasets:
        raise ConfigError(f"{path}: no datasets listed")
    for entry in cfg.datasets:
        entry.spec = str(resolve_relative(entry.spec, base))
    if cfg.cache_dir:
        cfg.cache_dir = str(resolve_relative(cfg.cache_dir, base))
    validate_train_config(cfg, str(path))
    return cfg


def validate_train_config(cfg: TrainConfig, where: str) -> None:
    checks = [
        (cfg.iterations > 0, "iterations must be > 0"),
        (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
        (cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.steps_per_epoch > 0, "steps_per_epoch must be > 0"),
        (cfg.batch_size > 0, "batch_size must be > 0"),
        (len(cfg.patch_size) == 3 and all(p >= 8 for p in cfg.patch_size), "patch_size must be 3 sizes >= 8"),
        (0.0 <= cfg.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
        (cfg.amp in ("auto", "bf16", "off"), "amp must be auto, bf16 or off"),
        (cfg.augment in ("none", "light", "medium"), "augment must be none, light or medium"),
        (
            set(cfg.mirror_axes) <= set(MIRROR_AXES) and len(set(cfg.mirror_axes)) == len(cfg.mirror_axes),
            f"mirror_axes must be distinct names among {list(MIRROR_AXES)}, got {list(cfg.mirror_axes)}",
        ),
        (cfg.model.conditioning in ("film", "gate", "none"), "model.conditioning must be film, gate or none"),
        (cfg.model.head_context in ("bottleneck", "none"), "model.head_context must be bottleneck or none"),
        (all(d.weight > 0 for d in cfg.datasets), "dataset weights must be > 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{where}: {msg}")
    select_device(cfg.device, option=f"{where}: device")


RUN_FILES = ("config.yaml", "metrics.csv", "checkpoint_last.pt", "checkpoint_best.pt", "prompt_cache.pt")
"""What a run folder holds besides the data cache and tensorboard logs."""


def train(
    config: str | Path | None = None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train from a YAML config into the run folder ``out``, or continue the run in ``resume``.

    Args:
        config: training YAML (see ``configs/``).
        out: a new run folder: ``config.yaml``, ``metrics.csv``, ``checkpoint_last.pt``,
            ``checkpoint_best.pt`` (when validating), the prompt cache and, by default, the data cache.
        resume: a run folder to continue from its last checkpoint (instead of ``config``/``out``).
        overrides: ``key.sub=value`` settings applied over the YAML.
        progress: show a progress bar.
        max_steps: stop after this many steps in this process (the schedule is unchanged).

    Returns:
        The last epoch's metrics.
    """
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir}: not a run folder (no config.yaml)")
        cfg = resolve_train_config(run_dir / "config.yaml", overrides)
        inputs: list[Path] = []
    else:
        if not config or not out:
            raise ConfigError("duplus train needs --config and --out (or --resume RUN_DIR)")
        run_dir = Path(out)
        if (run_dir / "checkpoint_last.pt").exists():
            raise ConfigError(f"{run_dir}: already holds a run; use --resume {run_dir} or another --out")
        cfg = resolve_train_config(config, overrides)
        check_run_folder(run_dir, cfg, Path(config))
        inputs = [Path(config)]
    from duplus.training.trainer import Trainer

    main_rank = os.environ.get("RANK", "0") == "0"
    folder = OutputFolder(run_dir, inputs=inputs, replace_owned=bool(resume), name="run folder")
    if resume:  # a run folder made before duplus kept an output manifest: its own files
        folder.adopt(*(run_dir / name for name in RUN_FILES))
    with folder if main_rank else contextlib.nullcontext():
        trainer = Trainer(cfg, run_dir, resume=bool(resume), progress=progress, max_steps=max_steps)
        try:
            return trainer.fit()
        except BaseException:
            if not resume and main_rank:
                _remove_failed_run(folder)
            raise


def check_run_folder(run_dir: Path, cfg: TrainConfig, config_path: Path) -> None:
    """Refuse a run folder that would write into a dataset folder or over the config file itself.

    Raises:
        InputError: naming the run folder.
    """
    for entry in cfg.datasets:
        spec = Path(entry.spec)
        check_not_inside_inputs(run_dir, [spec if spec.is_dir() else spec.parent])
    if (run_dir / "config.yaml").resolve() == config_path.resolve():
        raise InputError(
            run_dir, f"the run would overwrite its own config {config_path}; choose another --out"
        )


def _remove_failed_run(folder: OutputFolder) -> None:
    """After a new run failed before its first checkpoint, remove the resolved ``config.yaml`` it
    wrote (empty folders go with the output folder). Cases already prepared into a cache inside
    the run folder are kept (they are complete and reused by the next run), and so is anything
    once a checkpoint exists."""
    config = folder.root / "config.yaml"
    if (folder.root / "checkpoint_last.pt").exists() or not folder.owns(config):
        return
    folder.remove(config)
