"""Settings of the prognosis models: :class:`PrognosisConfig`, the modes and the text-path presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from duplus.errors import ConfigError
from duplus.prognosis.ehr import EHRTemplate

__all__ = [
    "MODES",
    "LINEAR_MODES",
    "PRESETS",
    "apply_preset",
    "PrognosisConfig",
]

MODES = ("image", "ehr", "ehr-text", "both")
LINEAR_MODES = ("ehr", "both")  # the linear Cox head on [structure | text | image]: duplus.prognosis.linear
PRESETS: dict[str, dict[str, Any]] = {
    # a frozen text encoder: its embeddings are computed once per cohort (seconds per fold on a CPU)
    "cpu": {"lora_r": 0},
    # the paper's text path: LoRA r=32, alpha 128, dropout 0.2 on every layer (hours per CV on a CPU)
    "paper": {"lora_r": 32, "lora_alpha": 128.0, "lora_dropout": 0.2, "lora_targets": None, "epochs": 20},
}


@dataclass
class PrognosisConfig:
    """Prognosis model, training and cross-validation settings.

    Attributes:
        mode: ``ehr`` (clinical columns + the record as text, linear Cox head), ``ehr-text`` (the
            record as text only, the paper's text path), ``image`` (image features) or ``both``
            (clinical columns + text + image features, linear Cox head).
        text_encoder, pooling, max_length: the EHR text encoder (see :class:`duplus.text.encoder.TextEncoder`).
        lora_r: LoRA rank on the text encoder (``ehr-text``); 0 keeps it frozen (embeddings
            computed once). The default is the ``cpu`` preset's 0; ``paper`` uses 32.
        lora_alpha, lora_dropout: LoRA scaling numerator and dropout (authors: 32 / 128 / 0.2).
        lora_targets: LoRA target modules (names, or one regex); ``None`` =
            :func:`duplus.adapt.lora.default_target_modules`
            (q/k/v/out/fc for CLIP, query/key/value/dense for BERT-like encoders).
        epochs: passes over the training set.
        lr: learning rate of the heads; lora_lr: of the adapters.
        batch_size: patients per step; the Cox risk set is the batch, so keep it large.
        weight_decay: AdamW weight decay.
        hidden: width of the branch embeddings and of the fusion MLP.
        dropout: dropout in the heads.
        ties: Cox tie handling, ``efron`` | ``breslow``.
        val_fraction: part of the training set held out for early stopping (0 = none).
        patience: epochs without a better validation C-index before stopping (with val_fraction > 0).
        seed: seed of weights, batches and splits.
        folds, repeats: k-fold cross-validation, repeated with different splits.
        risk_groups: groups of the Kaplan-Meier plot (2 = median split).
        baseline_penalizer: L2 penalty of the lifelines Cox baseline on the tabular data.
        alphas, text_scales, image_scales, text_components, image_components, inner_folds: the
            linear Cox head (:class:`duplus.prognosis.linear.LinearCoxSettings`): ridge penalties
            per patient and block scales tried by inner CV, PCA components of the text and image
            blocks.
        bootstrap: bootstrap resamples of the CIs in ``cv_summary.md`` (0 = none).
        ehr: how records become text; ``None`` = the HECKTOR preset for HECKTOR data, else every
            column. The resolved template is stored with the run.
    """

    mode: str = "both"
    text_encoder: str = "default"
    pooling: str = "auto"
    max_length: int = 128
    lora_r: int = 0
    lora_alpha: float = 128.0
    lora_dropout: float = 0.2
    lora_targets: list[str] | str | None = None
    epochs: int = 20
    lr: float = 3e-3
    lora_lr: float = 5e-4
    batch_size: int = 128
    weight_decay: float = 1e-4
    hidden: int = 64
    dropout: float = 0.2
    ties: str = "efron"
    val_fraction: float = 0.0
    patience: int = 5
    seed: int = 0
    folds: int = 5
    repeats: int = 1
    risk_groups: int = 2
    baseline_penalizer: float = 0.1
    alphas: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3])
    text_scales: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    image_scales: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    text_components: int = 8
    image_components: int = 8
    inner_folds: int = 5
    bootstrap: int = 200
    ehr: EHRTemplate | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.ties not in ("efron", "breslow"):
            raise ValueError(f"ties must be efron or breslow, got {self.ties!r}")
        for name in ("epochs", "batch_size", "hidden", "folds", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.folds == 1:
            raise ValueError("folds must be >= 2 for cross-validation")
        if self.risk_groups < 2:
            raise ValueError(f"risk_groups must be >= 2, got {self.risk_groups}")

    @property
    def uses_text(self) -> bool:
        return self.mode in ("ehr", "ehr-text", "both")

    @property
    def is_linear(self) -> bool:
        """The linear Cox head (:mod:`duplus.prognosis.linear`) rather than the neural one."""
        return self.mode in LINEAR_MODES

    def linear_settings(self) -> Any:
        from duplus.prognosis.linear import LinearCoxSettings

        return LinearCoxSettings(
            alphas=tuple(self.alphas),
            text_scales=tuple(self.text_scales),
            image_scales=tuple(self.image_scales),
            text_components=self.text_components,
            image_components=self.image_components,
            inner_folds=self.inner_folds,
            seed=self.seed,
        )

    @property
    def uses_image(self) -> bool:
        return self.mode in ("image", "both")


def apply_preset(cfg: PrognosisConfig, preset: str, device: str = "cpu") -> PrognosisConfig:
    """Set the text path's settings of ``preset`` (``cpu`` | ``paper`` | ``auto``: paper on a GPU)."""
    if preset == "auto":
        preset = "cpu" if str(device).startswith("cpu") else "paper"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected cpu, paper or auto")
    for key, value in PRESETS[preset].items():
        setattr(cfg, key, value)
    return cfg
