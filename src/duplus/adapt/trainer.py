"""Adaptation training: the :class:`~duplus.training.trainer.Trainer` with a frozen base model and
a few trainable parts (text LoRA, head, conditioner, backbone LoRA), plus the forgetting measure.

The hooks it overrides: :meth:`AdaptTrainer.build_text` (LoRA on the text encoder and the scoped
:class:`~duplus.adapt.router.PromptRouter`), :meth:`AdaptTrainer.build_model` (the base weights,
frozen, with the chosen parts unfrozen or LoRA-adapted), :meth:`AdaptTrainer.trainable_parameters`,
:meth:`AdaptTrainer.train_step` / :meth:`AdaptTrainer.validate` (router mode),
:meth:`AdaptTrainer.eval_model` (with ``network_scope: task``, the base network beside the adapted
one, see :mod:`duplus.adapt.scoped`) and :meth:`AdaptTrainer.save` (the adapter file instead of a
full checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn

from duplus.adapt.adapter_file import lora_entry, write_adapter_file
from duplus.adapt.config import AdaptConfig
from duplus.adapt.lora import apply_lora, count_trainable, default_target_modules, resolve_target_modules
from duplus.adapt.router import PromptRouter, task_prompts
from duplus.adapt.scoped import ScopedDuPLUS
from duplus.config import TrainConfig, to_dict
from duplus.data.label_space import LabelSpace
from duplus.data.prepared import PreparedDataset
from duplus.errors import CheckpointError, ConfigError
from duplus.training.trainer import LAST, Trainer

__all__ = [
    "ADAPTER_NAME",
    "AdaptTrainer",
    "build_adapt_train_config",
    "load_original_validation",
    "text_lora_targets",
]

logger = logging.getLogger(__name__)

ADAPTER_NAME = "adapter.pt"
_BACKBONE = ("encoder.", "decoder.")
_QUERY_VALUE = ("query", "value", "q_proj", "v_proj")


_SCHEDULE_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(AdaptConfig)
    if f.name in {g.name for g in dataclasses.fields(TrainConfig)}
    and f.name not in ("datasets", "cache_dir", "patch_size", "threads")
)
"""The settings an adaptation shares with training by name (schedule, sampling, validation, device)."""


def build_adapt_train_config(
    cfg: AdaptConfig, base_cfg: TrainConfig, base_patch_size: list[int]
) -> TrainConfig:
    """The training config of an adaptation: the base run's network, text encoder, preprocessing
    and loss, with the new task's data and the adaptation's schedule (every setting the two
    configs share by name comes from the adaptation)."""
    return dataclasses.replace(
        base_cfg,
        **{name: getattr(cfg, name) for name in _SCHEDULE_FIELDS},
        datasets=[dataclasses.replace(d) for d in cfg.datasets],
        cache_dir=cfg.cache_dir or base_cfg.cache_dir,
        patch_size=list(cfg.patch_size or base_patch_size),
        threads=cfg.threads if cfg.threads is not None else base_cfg.threads,
        ema=None,
        tensorboard=False,
    )


def text_lora_targets(model: nn.Module, wanted: list[str] | None) -> list[str]:
    """Text-encoder layers for LoRA: ``wanted`` resolved, or by default the attention query and
    value projections (``query``/``value``, CLIP ``q_proj``/``v_proj``), LoRA's classic choice,
    which keeps the adapter file small; models without them get
    :func:`~duplus.adapt.lora.default_target_modules`."""
    if wanted is not None:
        return resolve_target_modules(model, wanted)
    names = default_target_modules(model)
    qv = [n for n in names if n.rsplit(".", 1)[-1] in _QUERY_VALUE]
    return qv or names


def load_original_validation(
    cfg: TrainConfig, cache: Path, *, progress: bool = True
) -> list[PreparedDataset]:
    """The validation cases of a finished run, split exactly as
    :func:`duplus.training.data.build_training_data` split them (same specs, exclusions, seeds).

    Only the validation cases are kept (nothing is loaded into memory here).
    """
    from duplus.data.prepared import load_prepared, prepare_dataset, safe_name
    from duplus.data.specs import load_dataset_spec
    from duplus.training.data import split_cases, without_targets

    out: list[PreparedDataset] = []
    for i, entry in enumerate(cfg.datasets):
        spec = load_dataset_spec(
            Path(entry.spec), modality=entry.modality, region=entry.region, name=entry.name
        )
        prepare_dataset(spec, cache, cfg.preprocess, progress=progress)
        prepared = load_prepared(cache / safe_name(spec.name))
        if entry.exclude_targets:
            prepared = without_targets(prepared, entry.exclude_targets)
        if not prepared.target_values:
            continue
        _, val = split_cases(prepared.cases, cfg.val_fraction, cfg.seed + i)
        if val:
            out.append(dataclasses.replace(prepared, cases=val))
    return out


class AdaptTrainer(Trainer):
    """Adapt a trained DuPLUS checkpoint to a new task with the backbone frozen.

    Args:
        config: the adaptation's training config (:func:`build_adapt_train_config`).
        run_dir: run folder; receives ``adapter.pt``, ``config.yaml``, ``metrics.csv``.
        adapt: the adaptation config (what trains, LoRA settings).
        base_path: the base checkpoint file.
        base_ckpt: its loaded payload.
        base_sha256: its SHA-256 (recorded in the adapter file).
        original_config: the base run's training config with a usable ``cache_dir``, for the
            forgetting measure (``None``: not measured).
        progress, max_steps: as for :class:`~duplus.training.trainer.Trainer`.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        adapt: AdaptConfig,
        base_path: Path,
        base_ckpt: dict[str, Any],
        base_sha256: str,
        original_config: TrainConfig | None = None,
        progress: bool = True,
        max_steps: int | None = None,
    ) -> None:
        super().__init__(config, run_dir, resume=False, progress=progress, max_steps=max_steps)
        self.adapt = adapt
        self.parts = set(adapt.train)
        self.base_path = Path(base_path)
        self.base_ckpt = base_ckpt
        self.base_sha256 = base_sha256
        self.original_config = original_config
        self.original_sets: list[PreparedDataset] = []
        self.original_before: dict[str, float] | None = None
        self.text_lora_settings: dict[str, Any] | None = None
        self.backbone_lora_settings: dict[str, Any] | None = None
        self.added_targets: list[str] = []
        self.parameter_counts: dict[str, Any] = {}
        self.base_model: nn.Module | None = None  # frozen base network beside a task-scoped adaptation
        self.scoped: ScopedDuPLUS | None = None

    @property
    def network_parts(self) -> bool:
        """Whether network parts (head, conditioner, backbone LoRA) train."""
        return bool(self.parts - {"text_lora"})

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("duplus adapt runs in one process; launch it without torchrun")
        super().setup()
        base_space = LabelSpace.from_dict(self.base_ckpt.get("label_space", {}))
        self.added_targets = [t for t in self.label_space.targets if t not in base_space]
        base_space.extend(self.label_space.targets)
        self.label_space = base_space
        self.prompt_cache.added_targets = list(self.added_targets)
        if self.base_model is not None:
            self.base_model.to(self.device)
            self.scoped = ScopedDuPLUS(cast(Any, self.base_model), cast(Any, self.model)).to(self.device)
        self.parameter_counts = self.count_parameters()
        c = self.parameter_counts
        logger.info(
            "adapting %s (%s): %d of %d parameters trainable (%.3f%%); new targets %s",
            self.base_path,
            ", ".join(self.adapt.train),
            c["trainable"],
            c["total"],
            100 * c["fraction"],
            self.added_targets,
        )
        if self.original_config is not None:
            self.original_sets = load_original_validation(
                self.original_config, Path(str(self.original_config.cache_dir)), progress=self.progress
            )
            self.original_before = self.evaluate_original()

    def _base_prompts(self) -> set[str]:
        """Every prompt the base model was trained with (never routed through the adapters)."""
        single = self.config.model.single_prompt
        prompts: set[str] = set(self.base_ckpt.get("prompt_overrides", {}).get("texts", []))
        for d in self.base_ckpt.get("datasets", []):
            names = list(d.get("labels", {}).values())
            prompts.update(task_prompts(d["t1"], d["modality"], names, single_prompt=single))
        return prompts

    def _scope(self) -> list[str]:
        """The new task's prompts the base model never used: what the adaptation serves (the text
        adapter embeds them; a task-scoped network segments their targets)."""
        base = self._base_prompts()
        new: list[str] = []
        for ds in self.data.train_sets + self.data.val_sets:
            new += task_prompts(
                ds.t1_prompt, ds.modality, ds.targets, single_prompt=self.config.model.single_prompt
            )
        return [p for p in dict.fromkeys(new) if p not in base]

    def _lora_settings(self, targets: list[str]) -> dict[str, Any]:
        a = self.adapt
        return {"r": a.lora_r, "alpha": a.lora_alpha, "dropout": a.lora_dropout, "target_modules": targets}

    def build_text(self) -> tuple[Any, Any]:
        """The base text encoder, LoRA-adapted for ``text_lora``, behind a scoped router."""
        from duplus.text.encoder import TextEncoder

        t = self.config.text
        encoder = TextEncoder(t.encoder, pooling=t.pooling, max_length=t.max_length)
        if encoder.model_id != self.base_ckpt.get("text_encoder_id"):
            logger.warning(
                "base was trained with text encoder %s, loaded %s",
                self.base_ckpt.get("text_encoder_id"),
                encoder.model_id,
            )
        scope = self._scope()
        if not scope and (self.parts == {"text_lora"} or self.adapt.network_scope == "task"):
            raise ConfigError(
                "the new task uses no prompt the base model was not trained with, so a text adapter or a "
                "task-scoped network would never be used (nothing to learn); give the new task new targets "
                "or a new modality/region, or train network parts with network_scope: shared"
            )
        if "text_lora" in self.parts:
            try:
                targets = text_lora_targets(encoder.model, self.adapt.text_target_modules)
            except ValueError as exc:
                raise ConfigError(f"text_target_modules: {exc}") from exc
            self.text_lora_settings = self._lora_settings(targets)
            apply_lora(
                encoder.model,
                r=self.adapt.lora_r,
                alpha=self.adapt.lora_alpha,
                dropout=self.adapt.lora_dropout,
                target_modules=targets,
            )
            encoder.to(self.device)
        overrides = self.base_ckpt.get("prompt_overrides")
        router = PromptRouter(encoder, scope=scope)
        if overrides:
            router.overrides.update(PromptRouter.from_overrides(encoder, overrides).overrides)
        return encoder, router

    def build_model(self) -> nn.Module:
        """The base network with its weights, frozen except for the chosen parts."""
        from duplus.models.registry import build_model

        model = build_model(self.config.model, text_dim=self.text_encoder.embed_dim)
        try:
            model.load_state_dict(self.base_ckpt["model"])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(
                self.base_path,
                f"weights do not fit the model it describes ({str(exc).splitlines()[0][:200]})",
            ) from exc
        model.requires_grad_(False)
        if self.network_parts and self.adapt.network_scope == "task":
            self.base_model = copy.deepcopy(model)  # original targets keep running through this
        if "backbone_lora" in self.parts:
            targets = self._backbone_targets(model)
            self.backbone_lora_settings = self._lora_settings(targets)
            apply_lora(
                model,
                r=self.adapt.lora_r,
                alpha=self.adapt.lora_alpha,
                dropout=self.adapt.lora_dropout,
                target_modules=targets,
            )
        if "head" in self.parts:
            model.get_submodule("head").requires_grad_(True)
        if "film" in self.parts:
            model.get_submodule("conditioner").requires_grad_(True)
        return model

    def _backbone_targets(self, model: nn.Module) -> list[str]:
        wanted = self.adapt.backbone_target_modules
        try:
            names = default_target_modules(model) if wanted is None else resolve_target_modules(model, wanted)
        except ValueError as exc:
            raise ConfigError(f"backbone_target_modules: {exc}") from exc
        names = [n for n in names if n.startswith(_BACKBONE)]
        if not names:
            raise ConfigError("backbone_target_modules: no encoder/decoder layer matched")
        return names

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.model, self.text_encoder) for p in m.parameters() if p.requires_grad]

    def count_parameters(self) -> dict[str, Any]:
        """Trainable and total parameters of the adapted system (network + text encoder), by part."""
        net_trainable, net_total = count_trainable(self.model)
        text_trainable, text_total = count_trainable(self.text_encoder.model)
        by_part: dict[str, int] = {}
        if "text_lora" in self.parts:
            by_part["text_lora"] = text_trainable
        if "head" in self.parts:
            by_part["head"] = sum(p.numel() for p in self.model.get_submodule("head").parameters())
        if "film" in self.parts:
            by_part["film"] = sum(p.numel() for p in self.model.get_submodule("conditioner").parameters())
        if "backbone_lora" in self.parts:
            by_part["backbone_lora"] = sum(
                p.numel() for n, p in self.model.named_parameters() if "lora_" in n
            )
        total = net_total + text_total
        trainable = net_trainable + text_trainable
        return {
            "trainable": trainable,
            "total": total,
            "fraction": trainable / total,
            "network_trainable": net_trainable,
            "network_total": net_total,
            "network_fraction": net_trainable / net_total,
            "text_encoder_trainable": text_trainable,
            "text_encoder_total": text_total,
            "by_part": by_part,
        }

    # ------------------------------------------------------------------ hooks
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.prompt_cache.train(True)
        return super().train_step(batch)

    def eval_model(self) -> nn.Module:
        """The network as inference will run it: task-scoped (base + adapted) or the adapted one."""
        return self.scoped if self.scoped is not None else self.model

    def refresh_scope(self) -> None:
        """Evaluation mode for the prompts, and the scoped network's routing table to match them."""
        self.prompt_cache.eval()
        if self.scoped is not None:
            self.scoped.set_scope(self.prompt_cache.scope_table()["embeddings"])

    def validate(self) -> dict[str, float]:
        self.refresh_scope()
        return super().validate()

    def evaluate_original(self) -> dict[str, float]:
        """Dice per ``dataset/target`` of the base run's validation cases, original prompts."""
        self.refresh_scope()
        scores: dict[str, list[float]] = {}
        for ds in self.original_sets:
            for case in ds.cases[: self.adapt.original_val_max_cases]:
                for target, d in self.evaluate_case(ds, case).items():
                    scores.setdefault(f"{ds.name}/{target}", []).append(d)
        return {k: float(np.mean(v)) for k, v in scores.items()}

    # ------------------------------------------------------------------ state
    def adapter_payload(self) -> dict[str, Any]:
        """Everything the adaptation learnt, and what it applies to (see :mod:`duplus.adapt.adapter_file`)."""
        trained_modules = {m for part, m in (("head", "head"), ("film", "conditioner")) if part in self.parts}
        return {
            "base_checkpoint": {"path": str(self.base_path.absolute()), "sha256": self.base_sha256},
            "adapt_config": to_dict(self.adapt),
            "train": list(self.adapt.train),
            "network_scope": self.adapt.network_scope,
            "text_lora": lora_entry(self.text_encoder.model, self.text_lora_settings)
            if self.text_lora_settings
            else None,
            "backbone_lora": lora_entry(self.model, self.backbone_lora_settings)
            if self.backbone_lora_settings
            else None,
            "model_state": {
                k: v.detach().cpu().clone()
                for k, v in self.model.state_dict().items()
                if k.split(".", 1)[0] in trained_modules
            },
            "scope": {
                "prompts": sorted(self.prompt_cache.scope),
                "added_targets": list(self.added_targets),
                "datasets": [d.identity() for d in self.data.train_sets],
            },
            "label_space": self.label_space.to_dict(),
            "text_encoder_id": self.text_encoder.model_id,
            "step": self.step,
            "parameters": dict(self.parameter_counts),
        }

    def save(self, name: str) -> Path:
        """The adapter file replaces full checkpoints (``name`` ``checkpoint_last.pt``); an
        adaptation keeps its last state, so a best-so-far copy is not written."""
        path = self.run_dir / ADAPTER_NAME
        if name == LAST:
            write_adapter_file(path, self.adapter_payload())
        return path
