"""Library entry points behind ``duplus adapt``: :func:`adapt_checkpoint` (and :func:`run_adapt` for
the CLI); :func:`adapt_for_inference` for the predictor (``duplus segment --adapter``, merged
checkpoints)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duplus.adapt.adapter_file import adapt_for_inference, apply_adapter_file, merge_adapter
from duplus.adapt.config import AdaptConfig, resolve_adapt_config
from duplus.adapt.report import compute_forgetting, summary_lines, write_report
from duplus.bundle_file import checkpoint_identity
from duplus.config import TrainConfig, from_dict, save_config
from duplus.errors import CheckpointError, ConfigError
from duplus.fileio import OutputFolder

if TYPE_CHECKING:
    from duplus.adapt.trainer import AdaptTrainer

__all__ = [
    "adapt_checkpoint",
    "adapt_for_inference",
    "apply_adapter_file",
    "build_adapt_trainer",
    "merge_adapter",
    "run_adaptation",
]

logger = logging.getLogger(__name__)

MERGED_NAME = "merged.pt"


def _cache_dir(cfg: AdaptConfig, run_dir: Path) -> str:
    """Where prepared data lives: the adaptation config's ``cache_dir``, ``$DUPLUS_CACHE``, else
    ``<adapt run>/cache``. Never the base run's folder: a command writes only where it is told."""
    if cfg.cache_dir:
        return cfg.cache_dir
    if os.environ.get("DUPLUS_CACHE"):
        return str(Path(os.environ["DUPLUS_CACHE"]).expanduser())
    return str(run_dir.absolute() / "cache")


def build_adapt_trainer(
    checkpoint: str | Path,
    config: str | Path | AdaptConfig,
    out: str | Path,
    *,
    progress: bool = True,
    max_steps: int | None = None,
) -> AdaptTrainer:
    """Resolve the config against the base checkpoint and make the :class:`AdaptTrainer` (not run)."""
    from duplus.adapt.trainer import ADAPTER_NAME, AdaptTrainer, build_adapt_train_config
    from duplus.checkpoint import load_checkpoint

    cfg = resolve_adapt_config(config)
    base_path, run_dir = Path(checkpoint), Path(out)
    if (run_dir / ADAPTER_NAME).exists():
        raise ConfigError(f"{run_dir}: already holds an adaptation ({ADAPTER_NAME}); choose another --out")
    base = load_checkpoint(base_path)
    if "train_config" not in base or "model" not in base:
        raise CheckpointError(base_path, "has no training config or weights; cannot adapt it")
    if "adapted_model" in base:
        raise CheckpointError(
            base_path, "is a merged task-scoped adaptation; adapt its base checkpoint instead"
        )
    base_cfg = from_dict(TrainConfig, base["train_config"], where=f"{base_path}: train_config")
    cache = _cache_dir(cfg, run_dir)
    original_cfg = dataclasses.replace(base_cfg, cache_dir=cache) if cfg.eval_original else None
    train_cfg = build_adapt_train_config(
        dataclasses.replace(cfg, cache_dir=cache), base_cfg, list(base["patch_size"])
    )
    save_config(cfg, run_dir / "adapt_config.yaml")
    return AdaptTrainer(
        train_cfg,
        run_dir,
        adapt=cfg,
        base_path=base_path,
        base_ckpt=base,
        base_sha256=checkpoint_identity(base_path),
        original_config=original_cfg,
        progress=progress,
        max_steps=max_steps,
    )


def run_adaptation(trainer: AdaptTrainer, *, merge: bool = False) -> dict[str, Any]:
    """Train, write the adapter, measure the new task and the forgetting, write the report (and
    with ``merge`` the standalone checkpoint). The trainer keeps the adapted model in memory."""
    from duplus.training.trainer import LAST, per_target_dice

    t0 = time.perf_counter()
    cfg, run_dir = trainer.adapt, trainer.run_dir
    metrics = trainer.fit()
    adapter_path = trainer.save(LAST)
    new_dice = per_target_dice(metrics)
    if not new_dice:  # stopped early (max_steps) or no validation at the last step
        new_dice = per_target_dice(trainer.validate())
    if trainer.original_before is not None:
        original: dict[str, Any] = compute_forgetting(trainer.original_before, trainer.evaluate_original())
        original["cases_per_dataset"] = cfg.original_val_max_cases
    else:
        reason = "eval_original is false" if not cfg.eval_original else "no original validation cases"
        original = {"skipped": reason}
    merged = merge_adapter(trainer.base_path, adapter_path, run_dir / MERGED_NAME) if merge else None
    report: dict[str, Any] = {
        "base_checkpoint": {"path": str(trainer.base_path.absolute()), "sha256": trainer.base_sha256},
        "train": list(cfg.train),
        "text_side_only": cfg.text_side_only,
        "network_scope": cfg.network_scope,
        "zero_forgetting_by_construction": cfg.zero_forgetting,
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout},
        "parameters": trainer.parameter_counts,
        "adapter": {"path": str(adapter_path), "size_kb": adapter_path.stat().st_size / 1024},
        "merged": str(merged) if merged else None,
        "steps": trainer.step,
        "seconds": time.perf_counter() - t0,
        "scoped_prompts": len(trainer.prompt_cache.scope),
        "new_task": {
            "datasets": [d.name for d in trainer.data.train_sets],
            "added_targets": list(trainer.added_targets),
            "dice": {k.removeprefix("dice/"): float(v) for k, v in new_dice.items()},
        },
        "original": original,
    }
    write_report(run_dir, report)
    for line in summary_lines(report):
        logger.info("%s", line)
    return report


def adapt_checkpoint(
    checkpoint: str | Path,
    config: str | Path | AdaptConfig,
    out: str | Path,
    *,
    merge: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Adapt a trained checkpoint to a new task; write the adapter, the report and, with ``merge``,
    a standalone checkpoint.

    Args:
        checkpoint: the base DuPLUS checkpoint (its ``train_config`` names the original data).
        config: adaptation YAML or :class:`AdaptConfig`.
        out: run folder: ``adapter.pt``, ``adapt_report.json``, ``adapt_report.md``,
            ``adapt_config.yaml``, ``config.yaml``, ``metrics.csv`` (and ``merged.pt``).
        merge: also write ``merged.pt``.
        progress: progress bars.
        max_steps: stop after this many steps (tests; the schedule is unchanged).

    Returns:
        The report (as written to ``adapt_report.json``).
    """
    inputs = [checkpoint, *([config] if isinstance(config, str | Path) else [])]
    with OutputFolder(out, inputs=inputs, name="adaptation folder") as folder:
        try:
            trainer = build_adapt_trainer(checkpoint, config, out, progress=progress, max_steps=max_steps)
            return run_adaptation(trainer, merge=merge)
        except ValueError as exc:  # peft / LoRA settings that do not fit
            _discard_partial(folder)
            raise ConfigError(f"{config}: {exc}") from exc
        except BaseException:
            _discard_partial(folder)
            raise


def _discard_partial(folder: OutputFolder) -> None:
    """After a failure before the adapter was written, remove the configs this run wrote (prepared
    cache entries stay: they are complete and reused)."""
    from duplus.adapt.trainer import ADAPTER_NAME

    if (folder.root / ADAPTER_NAME).exists():
        return
    for name in ("adapt_config.yaml", "config.yaml", "metrics.csv"):
        if folder.owns(folder.root / name) and (folder.root / name).exists():
            folder.remove(folder.root / name)
