"""Training data: prepare (once) and load every dataset of a config, split off validation cases,
and serve reproducible, rank-sharded batches by step (so a resumed run continues the same stream)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Subset

from duplus.config import TrainConfig
from duplus.data.prepared import PreparedCase, PreparedDataset, load_prepared, prepare_dataset
from duplus.data.sampling import PatchDataset, collate_partial, load_case_arrays
from duplus.data.specs import load_dataset_spec
from duplus.errors import ConfigError
from duplus.paths import cache_root
from duplus.training.distributed import DistInfo, barrier
from duplus.vocab import MODALITIES

logger = logging.getLogger(__name__)


def split_cases(
    cases: list[PreparedCase], val_fraction: float, seed: int
) -> tuple[list[PreparedCase], list[PreparedCase]]:
    """Seeded train/validation split of a dataset's labelled cases (at least one of each when possible)."""
    labelled = sorted((c for c in cases if c.label_path is not None), key=lambda c: c.case_id)
    if val_fraction <= 0 or len(labelled) < 2:
        return labelled, []
    n_val = min(len(labelled) - 1, max(1, round(val_fraction * len(labelled))))
    order = np.random.default_rng(seed).permutation(len(labelled))
    val_idx = set(order[:n_val].tolist())
    return [c for i, c in enumerate(labelled) if i not in val_idx], [
        c for i, c in enumerate(labelled) if i in val_idx
    ]


def without_targets(ds: PreparedDataset, excluded: list[str]) -> PreparedDataset:
    """The dataset with some targets unsupervised (e.g. held out for an adaptation experiment)."""
    from duplus.data.label_space import canonical_target

    drop = {canonical_target(t) for t in excluded}
    unknown = drop - set(ds.target_values)
    if unknown:
        raise ConfigError(
            f"exclude_targets: {sorted(unknown)} not labelled by dataset {ds.name!r} ({ds.targets})"
        )
    return dataclasses.replace(
        ds,
        labels={v: n for v, n in ds.labels.items() if n not in drop},
        target_values={t: v for t, v in ds.target_values.items() if t not in drop},
    )


@dataclass
class TrainingData:
    """The prepared training and validation sets of a run and its patch sampler."""

    config: TrainConfig
    train_sets: list[PreparedDataset]
    val_sets: list[PreparedDataset]
    patches: PatchDataset
    dist: DistInfo

    def all_prompts(self) -> list[str]:
        """Every prompt the training loop can ask for: T1s and all T2 paraphrases (cache warm-up)."""
        from duplus.text.prompts import single_prompt_text, t2_prompts

        prompts: list[str] = []
        for ds in self.train_sets + self.val_sets:
            t2 = [p for t in ds.targets for p in t2_prompts(t, ds.modality)]
            if self.config.model.single_prompt:
                prompts += [single_prompt_text(ds.t1_prompt, p) for p in t2]
            else:
                prompts += [ds.t1_prompt, *t2]
        return list(dict.fromkeys(prompts))

    def iterate(self, start_step: int) -> Iterator[dict[str, Any]]:
        """Collated batches from ``start_step`` on. Batch ``s`` of rank ``r`` is the same whatever
        step training (re)started from: samples ``(s % spe) * B * W + r * B + j`` of epoch
        ``s // spe``."""
        cfg = self.config
        spe, bsz, world = cfg.steps_per_epoch, cfg.batch_size, self.dist.world_size
        step = start_step
        while True:
            epoch, first = divmod(step, spe)
            self.patches.set_epoch(epoch)
            idx = [s * bsz * world + self.dist.rank * bsz + j for s in range(first, spe) for j in range(bsz)]
            loader = DataLoader(
                Subset(self.patches, idx),
                batch_size=bsz,
                shuffle=False,
                num_workers=cfg.num_workers,
                collate_fn=collate_partial,
            )
            for batch in loader:
                yield batch
                step += 1

    @staticmethod
    def load_case(ds: PreparedDataset, case: PreparedCase) -> tuple[np.ndarray, np.ndarray]:
        image, label = load_case_arrays(case)
        assert label is not None
        return image, label

    @staticmethod
    def modality_index(modality: str) -> int:
        return MODALITIES.index(modality)


def build_training_data(
    cfg: TrainConfig, run_dir: Path, *, dist: DistInfo, progress: bool = True
) -> TrainingData:
    """Prepare (rank 0, cached) and load the config's datasets; split validation cases per dataset."""
    root = cache_root(run_dir, cfg.cache_dir)
    specs = [
        load_dataset_spec(Path(e.spec), modality=e.modality, region=e.region, name=e.name)
        for e in cfg.datasets
    ]
    if dist.is_main:
        for spec in specs:
            prepare_dataset(spec, root, cfg.preprocess, progress=progress)
    barrier(dist)
    train_sets, val_sets, weights = [], [], []
    for i, (entry, spec) in enumerate(zip(cfg.datasets, specs, strict=True)):
        prepared = load_prepared(root / _cache_name(spec.name))
        if entry.exclude_targets:
            prepared = without_targets(prepared, entry.exclude_targets)
        if not prepared.target_values:
            logger.info("dataset %s: every target excluded; skipped", spec.name)
            continue
        train, val = split_cases(prepared.cases, cfg.val_fraction, cfg.seed + i)
        if not train:
            raise ConfigError(f"{entry.spec}: no labelled training cases")
        train_sets.append(dataclasses.replace(prepared, cases=train))
        weights.append(entry.weight)
        if val:
            val_sets.append(dataclasses.replace(prepared, cases=val))
        logger.info(
            "dataset %s (%s, %s): %d train, %d validation cases, targets %s",
            spec.name,
            spec.modality,
            spec.region,
            len(train),
            len(val),
            prepared.targets,
        )
    if not train_sets:
        raise ConfigError("no dataset left to train on")
    patches = PatchDataset(
        train_sets,
        tuple(cfg.patch_size),
        samples_per_epoch=cfg.steps_per_epoch * cfg.batch_size * dist.world_size,
        dataset_weights=weights,
        fg_oversample=cfg.fg_oversample,
        augment=cfg.augment,
        mirror_axes=cfg.mirror_axes,
        seed=cfg.seed,
        position=cfg.model.head_position,
    )
    return TrainingData(config=cfg, train_sets=train_sets, val_sets=val_sets, patches=patches, dist=dist)


def _cache_name(name: str) -> str:
    from duplus.data.prepared import safe_name

    return safe_name(name)
