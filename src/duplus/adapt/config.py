"""The adaptation config (``duplus adapt --config new_task.yaml``): what to learn from, and what trains.

Example::

    datasets:
      - {spec: ../data/phantoms/Task02_PhantomPancreasCT/dataset.json}
    train: [text_lora]            # any of text_lora, head, film, backbone_lora
    network_scope: task           # network parts serve only the new task's prompts
    lora_r: 8
    iterations: 300

Everything the base checkpoint already fixes (network, text encoder, preprocessing) is taken from
it; dataset paths are resolved against the folder of the YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from duplus.config import DatasetEntry, from_dict, load_yaml
from duplus.errors import ConfigError
from duplus.paths import resolve_relative

__all__ = [
    "ADAPT_PARTS",
    "NETWORK_SCOPES",
    "TEXT_SIDE_PARTS",
    "AdaptConfig",
    "resolve_adapt_config",
    "validate_adapt_config",
]

ADAPT_PARTS: tuple[str, ...] = ("text_lora", "head", "film", "backbone_lora")
"""What an adaptation can train:

* ``text_lora``: LoRA on the text encoder, used only for the new task's own prompts;
* ``head``: the T2 dynamic head (text projection and controller);
* ``film``: the T1 conditioner MLP (FiLM or gate);
* ``backbone_lora``: LoRA on the encoder/decoder convolutions.

The last three change the network, which the original targets share unless ``network_scope`` is
``task`` (the default).
"""

TEXT_SIDE_PARTS: frozenset[str] = frozenset({"text_lora"})
"""Parts that cannot change the base model's outputs for the original prompts."""

NETWORK_SCOPES: tuple[str, ...] = ("task", "shared")
"""Where trained network parts apply: ``task``, only to the new task's prompts (the original
targets keep the base network; see :mod:`duplus.adapt.scoped`), or ``shared``, to every target
(the adapted network replaces the base one: forgetting is possible, and measured)."""


@dataclass
class AdaptConfig:
    """Parameter-efficient adaptation of a trained DuPLUS checkpoint to a new task.

    Attributes:
        datasets: the new task's datasets (new targets, a new modality/region, or both).
        train: the parts that train (see :data:`ADAPT_PARTS`); the backbone is otherwise frozen.
        lora_r, lora_alpha, lora_dropout: LoRA settings (text encoder and backbone alike).
        text_target_modules: text-encoder layers to adapt (default: the attention query and value
            projections; see :func:`duplus.adapt.trainer.text_lora_targets`).
        backbone_target_modules: backbone layers to adapt (default: every encoder/decoder conv).
        network_scope: ``task`` (default) or ``shared``; see :data:`NETWORK_SCOPES`.
        patch_size: training patch (default: the base checkpoint's).
        cache_dir: preprocessed-data cache (default: the base run's cache, else ``$DUPLUS_CACHE``,
            else ``<run>/cache``).
        eval_original: measure forgetting: Dice of the original targets on the original
            validation cases before and after adaptation.
        original_val_max_cases: original validation cases per dataset in that measurement.
    """

    datasets: list[DatasetEntry] = field(default_factory=list)
    train: list[str] = field(default_factory=lambda: ["text_lora"])
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    text_target_modules: list[str] | None = None
    backbone_target_modules: list[str] | None = None
    network_scope: str = "task"
    iterations: int = 300
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    batch_size: int = 2
    steps_per_epoch: int = 100
    patch_size: list[int] | None = None
    val_fraction: float = 0.25
    val_every: int = 1
    val_max_cases: int = 2
    fg_oversample: float = 0.5
    augment: str = "light"
    paraphrase_t2: bool = True
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    cache_dir: str | None = None
    eval_original: bool = True
    original_val_max_cases: int = 2

    @property
    def text_side_only(self) -> bool:
        """Whether only text-side adapters train."""
        return set(self.train) <= TEXT_SIDE_PARTS

    @property
    def zero_forgetting(self) -> bool:
        """Whether the original targets' outputs are unchanged by construction: only text-side
        adapters train, or the network parts are task-scoped."""
        return self.text_side_only or self.network_scope == "task"


MAX_LORA_RANK = 256
"""LoRA ranks above this stop being low-rank for every layer DuPLUS adapts (widths <= 512)."""


def validate_adapt_config(cfg: AdaptConfig, where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` for the first invalid setting."""
    unknown = [p for p in cfg.train if p not in ADAPT_PARTS]
    if unknown:
        raise ConfigError(f"{where}: train: unknown part(s) {unknown}; choose from {', '.join(ADAPT_PARTS)}")
    checks = [
        (bool(cfg.datasets), "datasets: list the new task's dataset(s)"),
        (cfg.network_scope in NETWORK_SCOPES, f"network_scope must be one of {', '.join(NETWORK_SCOPES)}"),
        (bool(cfg.train), f"train: choose at least one of {', '.join(ADAPT_PARTS)}"),
        (len(set(cfg.train)) == len(cfg.train), "train: a part is listed twice"),
        (1 <= cfg.lora_r <= MAX_LORA_RANK, f"lora_r must be in [1, {MAX_LORA_RANK}], got {cfg.lora_r}"),
        (cfg.lora_alpha > 0, "lora_alpha must be > 0"),
        (0.0 <= cfg.lora_dropout < 1.0, "lora_dropout must be in [0, 1)"),
        (cfg.iterations > 0, "iterations must be > 0"),
        (cfg.lr > 0, "lr must be > 0"),
        (cfg.batch_size > 0, "batch_size must be > 0"),
        (cfg.steps_per_epoch > 0, "steps_per_epoch must be > 0"),
        (cfg.val_every > 0, "val_every must be > 0"),
        (cfg.warmup_steps >= 0, "warmup_steps must be >= 0"),
        (
            cfg.patch_size is None or (len(cfg.patch_size) == 3 and all(p >= 8 for p in cfg.patch_size)),
            "patch_size must be 3 sizes >= 8",
        ),
        (0.0 <= cfg.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
        (0.0 <= cfg.fg_oversample <= 1.0, "fg_oversample must be in [0, 1]"),
        (cfg.augment in ("none", "light", "medium"), "augment must be none, light or medium"),
        (cfg.original_val_max_cases >= 1, "original_val_max_cases must be >= 1"),
        (all(d.weight > 0 for d in cfg.datasets), "dataset weights must be > 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{where}: {msg}")


def resolve_adapt_config(config: str | Path | AdaptConfig) -> AdaptConfig:
    """Load an adaptation YAML strictly (or take an :class:`AdaptConfig`), make its paths absolute
    (relative to the YAML's folder, or to the working directory for an object) and validate it."""
    if isinstance(config, AdaptConfig):
        cfg, base, where = config, Path.cwd(), "adapt config"
    else:
        path = Path(config)
        cfg = from_dict(AdaptConfig, load_yaml(path), where=str(path))
        base, where = path.absolute().parent, str(path)
    validate_adapt_config(cfg, where)
    for entry in cfg.datasets:
        entry.spec = str(resolve_relative(entry.spec, base))
    if cfg.cache_dir:
        cfg.cache_dir = str(resolve_relative(cfg.cache_dir, base))
    return cfg
