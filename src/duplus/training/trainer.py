"""Multi-dataset, partial-label training of DuPLUS.

The trainer is a class with hooks (``setup``, ``train_step``, ``validation_step``,
``on_epoch_end``), in the manner of nnU-Net's trainer; the loop in :meth:`Trainer.fit` stays short.
Data, losses, optimisers and checkpoints live in their own modules.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from duplus.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from duplus.config import TrainConfig, save_config, to_dict
from duplus.data.label_space import LabelSpace
from duplus.data.sampling import target_masks
from duplus.device import select_device
from duplus.errors import ConfigError
from duplus.fileio import write_text_atomic
from duplus.inference.sliding import predict_volume_logits
from duplus.losses.segmentation import PartialLabelDiceBCELoss
from duplus.training import distributed as dist_utils
from duplus.training.data import TrainingData, build_training_data

logger = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer:
    """Train a DuPLUS model on several partially labelled datasets.

    Args:
        config: resolved training config (dataset paths absolute).
        run_dir: run folder; receives ``config.yaml``, ``metrics.csv``, checkpoints, the prompt cache.
        resume: continue from ``run_dir/checkpoint_last.pt``.
        progress: show a progress bar.
        max_steps: stop after this many steps in this process (tests; the schedule is unchanged).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        max_steps: int | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.progress = progress
        self.max_steps = max_steps
        self.step = 0
        self.best_metric = -math.inf
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = select_device(cfg.device, option="device")
        self.dist = dist_utils.init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        seed_everything(cfg.seed + self.dist.rank)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        dist_utils.barrier(self.dist)

        self.data: TrainingData = build_training_data(
            cfg, self.run_dir, dist=self.dist, progress=self.progress
        )
        self.label_space = LabelSpace.from_names(t for d in self.data.train_sets for t in d.targets)

        self.text_encoder, self.prompt_cache = self.build_text()
        self.prompt_cache.get(self.data.all_prompts())  # warm-up: every prompt the loop can ask for
        self.encoder_calls_after_warmup = self.text_encoder.forward_count
        self.model = self.build_model().to(self.device)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # stems of modalities absent from a batch get no gradient
            )
        self.loss_fn = PartialLabelDiceBCELoss(bce_weight=cfg.bce_weight)
        self.optimizer = torch.optim.AdamW(
            self.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        from monai.optimizers import WarmupCosineSchedule

        self.scheduler = WarmupCosineSchedule(
            self.optimizer,
            warmup_steps=min(cfg.warmup_steps, max(cfg.iterations - 1, 0)),
            t_total=cfg.iterations,
        )
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if cfg.ema:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema)
            )
        amp = cfg.amp if cfg.amp != "auto" else ("bf16" if self.device.type == "cuda" else "off")
        self.autocast_dtype = torch.bfloat16 if amp == "bf16" else None
        self.t2_rng = random.Random(cfg.seed * 1000 + self.dist.rank)
        if self.resume:
            self._load_state(self.run_dir / LAST)

    def build_text(self) -> tuple[Any, Any]:
        """The text encoder (frozen) and its prompt-embedding cache."""
        from duplus.text.cache import EmbeddingCache
        from duplus.text.encoder import TextEncoder

        t = self.config.text
        encoder = TextEncoder(t.encoder, pooling=t.pooling, max_length=t.max_length)
        return encoder, EmbeddingCache(encoder)

    def build_model(self) -> nn.Module:
        """A freshly initialised network of the configured preset."""
        from duplus.models.registry import build_model

        return build_model(self.config.model, text_dim=self.text_encoder.embed_dim)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates (everything here; adaptation trains a small subset)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ prompts
    def prompt_texts(
        self, t1: str, modality: str, targets: list[str], *, sample: bool
    ) -> tuple[str, list[str]]:
        """The T1 text and the T2 texts of ``targets`` ("" stays "" for padding).

        T2 is a paraphrase drawn per step when ``sample``, else the canonical name. For the
        single-prompt ablation each T2 text carries the T1 context ("A CT scan of the abdomen: liver").
        """
        from duplus.text.prompts import sample_t2_prompt, single_prompt_text, t2_prompts

        texts = [
            (sample_t2_prompt(t, modality, self.t2_rng) if sample else t2_prompts(t, modality)[0])
            if t
            else ""
            for t in targets
        ]
        if self.config.model.single_prompt:
            texts = [single_prompt_text(t1, x) if x else "" for x in texts]
        return t1, texts

    def embed_prompts(
        self, t1_texts: list[str], modalities: list[str], targets: list[list[str]], *, sample: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T1 ``(B, E)`` and T2 ``(B, K, E)`` embeddings from the cache (zero rows for padding)."""
        t1 = self.prompt_cache.get(t1_texts, device="cpu")
        t2 = torch.zeros(len(targets), max(len(t) for t in targets), t1.shape[-1])
        for b, (t1_text, modality, names) in enumerate(zip(t1_texts, modalities, targets, strict=True)):
            _, texts = self.prompt_texts(t1_text, modality, names, sample=sample)
            rows = [k for k, x in enumerate(texts) if x]
            if rows:
                t2[b, rows] = self.prompt_cache.get([texts[k] for k in rows], device="cpu")
        return t1.to(self.device), t2.to(self.device)

    # ------------------------------------------------------------------ hooks
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.net.train()
        image = batch["image"].to(self.device)
        label = batch["label"].to(self.device)
        label_mask = batch["label_mask"].to(self.device)
        modality_index = batch["modality_index"].to(self.device)
        position = batch["position"].to(self.device) if "position" in batch else None
        t1, t2 = self.embed_prompts(
            batch["t1"], batch["modality"], batch["targets"], sample=self.config.paraphrase_t2
        )
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            logits = self.net(image, modality_index, t1, t2, position)
        loss = self.loss_fn(logits.float(), label, label_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], 12.0)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"loss": float(loss.detach()), "lr": self.optimizer.param_groups[0]["lr"]}

    def eval_model(self) -> Any:
        return self.ema.module if self.ema is not None else self.model

    def validation_step(self, dataset_index: int, case: Any) -> dict[str, float]:
        """Sliding-window Dice per target of one held-out preprocessed case."""
        return self.evaluate_case(self.data.val_sets[dataset_index], case)

    def evaluate_case(self, ds: Any, case: Any) -> dict[str, float]:
        """Dice per target of ``case`` of the prepared dataset ``ds`` (any dataset, e.g. another
        run's validation set), with the dataset's canonical prompts."""
        from monai.metrics import compute_dice

        model = self.eval_model()
        model.eval()
        image, label = self.data.load_case(ds, case)
        targets = ds.targets
        t1, t2 = self.embed_prompts([ds.t1_prompt], [ds.modality], [targets], sample=False)
        modality_index = torch.tensor([self.data.modality_index(ds.modality)])
        with torch.no_grad():
            cond = model.condition(modality_index.to(self.device), t1, t2)
            logits = predict_volume_logits(
                model,
                torch.from_numpy(image)[None].to(self.device),
                cond,
                self.config.patch_size,
                overlap=self.config.sw_overlap,
                sw_batch_size=self.config.sw_batch_size,
            )
        pred = (logits.float().cpu() > 0).float()
        ref = torch.from_numpy(target_masks(label, ds.target_values)).float()[None]
        dice = compute_dice(pred, ref, include_background=True, ignore_empty=False)[0]
        return {t: float(d) for t, d in zip(targets, dice, strict=True)}

    def validate(self) -> dict[str, float]:
        scores: dict[str, list[float]] = {}
        for i, ds in enumerate(self.data.val_sets):
            for case in ds.cases[: self.config.val_max_cases]:
                for target, d in self.validation_step(i, case).items():
                    scores.setdefault(f"dice/{ds.name}/{target}", []).append(d)
        metrics = {k: float(np.mean(v)) for k, v in scores.items()}
        return summarise_dice(metrics)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        row = {"epoch": epoch, "step": self.step, **metrics}
        self.history.append(row)
        if not self.dist.is_main:
            return
        score = metrics.get("dice/mean")
        if score is not None and score > self.best_metric:
            self.best_metric = score
            self.save(BEST)
        self.save(LAST)
        self._write_metrics_csv()  # after the checkpoint: no row for a step that has none
        tb = getattr(self, "tb", None)
        if tb is not None:
            for k, v in metrics.items():
                tb.add_scalar(k, v, self.step)
        logger.info(
            "epoch %d step %d: %s", epoch, self.step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        )

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Run training to ``config.iterations`` steps; return the last epoch's metrics."""
        from tqdm.auto import tqdm

        self.setup()
        cfg = self.config
        self.tb = None
        if cfg.tensorboard and self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed; pip install 'duplus[tensorboard]'")
        end = cfg.iterations if self.max_steps is None else min(cfg.iterations, self.step + self.max_steps)
        bar = tqdm(
            total=cfg.iterations,
            initial=self.step,
            disable=not (self.progress and self.dist.is_main),
            desc="train",
        )
        running: list[float] = []
        last_metrics: dict[str, Any] = dict(self.history[-1]) if self.history else {}
        t0 = time.perf_counter()
        batches = self.data.iterate(self.step)
        while self.step < end:
            batch = next(batches)
            out = self.train_step(batch)
            self.step += 1
            running.append(out["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}", lr=f"{out['lr']:.2e}")
            epoch_done = self.step % cfg.steps_per_epoch == 0 or self.step == cfg.iterations
            if epoch_done:
                epoch = math.ceil(self.step / cfg.steps_per_epoch)
                metrics: dict[str, Any] = {
                    "train_loss": float(np.mean(running)),
                    "seconds": time.perf_counter() - t0,
                }
                running = []
                if self.dist.is_main and (epoch % cfg.val_every == 0 or self.step == cfg.iterations):
                    metrics.update(self.validate())
                dist_utils.barrier(self.dist)
                self.on_epoch_end(epoch, metrics)
                last_metrics = metrics
            elif self.step % cfg.checkpoint_every_steps == 0 and self.dist.is_main:
                self.save(LAST)
        bar.close()
        if self.dist.is_main:
            self.prompt_cache.save(self.run_dir / "prompt_cache.pt")
        dist_utils.barrier(self.dist)
        if self.tb is not None:
            self.tb.close()
        return last_metrics

    # ------------------------------------------------------------------ state
    def checkpoint_payload(self, with_training_state: bool = True) -> dict[str, Any]:
        cfg = self.config
        payload: dict[str, Any] = {
            "model": self.eval_model().state_dict(),
            "model_config": to_dict(cfg.model),
            "text_config": to_dict(cfg.text),
            "text_encoder_id": self.text_encoder.model_id,
            "text_dim": self.text_encoder.embed_dim,
            "preprocess": to_dict(cfg.preprocess),
            "patch_size": list(cfg.patch_size),
            "label_space": self.label_space.to_dict(),
            "datasets": [d.identity() for d in self.data.train_sets],
            "train_config": to_dict(cfg),
            "step": self.step,
            "best_metric": self.best_metric,
        }
        if with_training_state:
            payload["train_state"] = {
                "raw_model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": capture_rng_state(),
                "t2_rng": list(self.t2_rng.getstate()[1]),
                "t2_rng_rest": [self.t2_rng.getstate()[0], self.t2_rng.getstate()[2]],
                "history": [{k: float(v) for k, v in row.items()} for row in self.history],
            }
        return payload

    def save(self, name: str) -> Path:
        return save_checkpoint(self.run_dir / name, self.checkpoint_payload(with_training_state=name == LAST))

    def _load_state(self, path: Path) -> None:
        if not path.exists():
            raise ConfigError(f"{self.run_dir}: nothing to resume (no {LAST})")
        ckpt = load_checkpoint(path, map_location=self.device)
        state = ckpt["train_state"]
        self.model.load_state_dict(state["raw_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        restore_rng_state(state["rng"])
        rest = state["t2_rng_rest"]
        self.t2_rng.setstate((int(rest[0]), tuple(int(x) for x in state["t2_rng"]), rest[1]))
        self.history = [dict(r) for r in state.get("history", [])]
        self.step = int(ckpt["step"])
        self.best_metric = float(ckpt["best_metric"])
        logger.info("resumed %s at step %d", self.run_dir, self.step)

    def _write_metrics_csv(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys.extend(k for k in row if k not in keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for row in self.history:
            writer.writerow(row)
        write_text_atomic(self.run_dir / "metrics.csv", buf.getvalue())


def per_target_dice(metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``dice/<dataset>/<target>`` entries of ``metrics``, without the summaries."""
    return {k: v for k, v in metrics.items() if k.startswith("dice/") and k.count("/") >= 2}


def summarise_dice(metrics: dict[str, float]) -> dict[str, float]:
    """Add ``dice/mean`` (every ``dice/<dataset>/<target>``) and, when both kinds are present,
    ``dice/organs`` and ``dice/lesions`` (see :func:`duplus.data.label_space.is_lesion`)."""
    from duplus.data.label_space import is_lesion

    per_target = per_target_dice(metrics)
    out = dict(metrics)
    if not per_target:
        return out
    out["dice/mean"] = float(np.mean(list(per_target.values())))
    lesions = [v for k, v in per_target.items() if is_lesion(k.rsplit("/", 1)[1])]
    organs = [v for k, v in per_target.items() if not is_lesion(k.rsplit("/", 1)[1])]
    if lesions and organs:
        out["dice/organs"] = float(np.mean(organs))
        out["dice/lesions"] = float(np.mean(lesions))
    return out
