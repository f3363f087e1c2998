"""``duplus export``: a checkpoint (or an adapter file) -> one ``.duplus`` bundle with a model card.

The card says what the model is for and how it was made: preset, datasets and their T1 prompts,
the targets seen in training, the text encoder, the preprocessing, the validation Dice when the
checkpoint or its run folder records one, the duplus version, the source file's sha256. The
training state (optimizer, RNG) is left out: a bundle is for inference and adaptation.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from duplus import __version__
from duplus.bundle_file import (
    BUNDLE_SUFFIX,
    STORAGE_DTYPES,
    file_sha256,
    is_bundle,
    write_bundle,
)
from duplus.errors import CheckpointError, InputError

logger = logging.getLogger(__name__)

_DROP = ("train_state",)


def _validation(path: Path, ckpt: dict[str, Any]) -> dict[str, float]:
    """Validation Dice of the checkpoint: its ``best_metric`` and, when its run folder has a
    ``metrics.csv``, the ``dice/*`` columns of the row at the checkpoint's step."""
    found: dict[str, float] = {}
    best = ckpt.get("best_metric")
    if isinstance(best, int | float) and math.isfinite(best):
        found["dice/mean"] = float(best)
    metrics = path.parent / "metrics.csv"
    step = ckpt.get("step")
    if not metrics.is_file() or step is None:
        return found
    try:
        with metrics.open(encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step") and float(r["step"]) == float(step)]
    except (OSError, ValueError, csv.Error, UnicodeDecodeError):
        return found
    for key, value in (rows[-1] if rows else {}).items():
        if key and key.startswith("dice/") and value not in ("", None):
            try:
                found[key] = float(value)
            except ValueError:
                continue
    return {k: v for k, v in found.items() if math.isfinite(v)}


def model_card(path: Path, ckpt: dict[str, Any], name: str) -> dict[str, Any]:
    """The model card of a segmentation checkpoint."""
    datasets = [
        {k: d.get(k) for k in ("name", "modality", "region", "t1", "labels")}
        for d in ckpt.get("datasets", [])
        if isinstance(d, dict)
    ]
    state = ckpt.get("model") or {}
    return {
        "kind": "model",
        "name": name,
        "duplus_version": __version__,
        "trained_with": ckpt.get("duplus_version"),
        "preset": (ckpt.get("model_config") or {}).get("preset"),
        "model_config": ckpt.get("model_config"),
        "parameters": int(sum(int(t.numel()) for t in state.values())),
        "datasets": datasets,
        "targets": list((ckpt.get("label_space") or {}).get("targets", [])),
        "t1_prompts": sorted({str(d["t1"]) for d in datasets if d.get("t1")}),
        "text_encoder": {"id": ckpt.get("text_encoder_id"), **(ckpt.get("text_config") or {})},
        "preprocessing": ckpt.get("preprocess"),
        "patch_size": ckpt.get("patch_size"),
        "step": ckpt.get("step"),
        "validation": _validation(path, ckpt),
        "adapted_from": ckpt.get("adapted_from"),
        "source": {"file": path.name, "sha256": file_sha256(path)},
    }


def adapter_card(path: Path, adapter: dict[str, Any], name: str) -> dict[str, Any]:
    """The card of an adapter bundle: it names its base checkpoint by sha256."""
    base = adapter.get("base_checkpoint") or {}
    scope = adapter.get("scope") or {}
    return {
        "kind": "adapter",
        "name": name,
        "duplus_version": __version__,
        "trained_with": adapter.get("duplus_version"),
        "base": {"file": Path(str(base.get("path", ""))).name, "sha256": base.get("sha256")},
        "train": list(adapter.get("train", [])),
        "network_scope": adapter.get("network_scope"),
        "prompts": list(scope.get("prompts", [])),
        "added_targets": list(scope.get("added_targets", [])),
        "datasets": list(scope.get("datasets", [])),
        "targets": list((adapter.get("label_space") or {}).get("targets", [])),
        "source": {"file": path.name, "sha256": file_sha256(path)},
    }


def _load_source(path: Path) -> tuple[str, dict[str, Any]]:
    """``("model", checkpoint)`` or ``("adapter", adapter dict)``, both loaded weights-only."""
    from duplus.adapt.adapter_file import read_adapter_file
    from duplus.checkpoint import load_checkpoint

    if is_bundle(path):
        raise InputError(path, "is already a bundle; export from the checkpoint (.pt) it was made of")
    try:
        return "model", load_checkpoint(path)
    except CheckpointError as first:
        if "duplus-checkpoint header" not in str(first):
            raise
        try:
            return "adapter", read_adapter_file(path)
        except CheckpointError:
            raise first from None


def export_bundle(
    checkpoint: str | Path, out: str | Path, *, dtype: str = "float32", name: str | None = None
) -> Path:
    """Write ``checkpoint`` (a DuPLUS checkpoint or adapter file) as a ``.duplus`` bundle.

    Args:
        checkpoint: the ``.pt`` checkpoint or adapter file.
        out: the bundle to write (``.duplus`` is appended when missing).
        dtype: ``float32`` (exact) or ``float16`` (half the size; predictions may differ slightly).
        name: the model's name in its card (default: ``out``'s stem); ``duplus import`` installs
            it under this name.

    Returns:
        The bundle path.

    Raises:
        InputError / CheckpointError: an unreadable or foreign checkpoint, a bundle as input, an
            unknown dtype.
    """
    path, out = Path(checkpoint), Path(out)
    if dtype not in STORAGE_DTYPES:
        raise InputError("--dtype", f"{dtype!r}; choose one of {', '.join(STORAGE_DTYPES)}")
    if not out.name.endswith(BUNDLE_SUFFIX):
        out = out.with_name(out.name + BUNDLE_SUFFIX)
    name = name or out.name[: -len(BUNDLE_SUFFIX)]
    kind, data = _load_source(path)
    payload = {k: v for k, v in data.items() if k not in _DROP}
    card = model_card(path, data, name) if kind == "model" else adapter_card(path, data, name)
    try:
        write_bundle(out, card, payload, dtype=dtype)
    except TypeError as exc:
        raise CheckpointError(path, f"cannot be bundled: {exc}") from exc
    logger.info("%s bundle %s written (%.2f MB, %s)", kind, out, out.stat().st_size / 1e6, dtype)
    return out
