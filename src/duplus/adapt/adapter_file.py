"""The adapter file of ``duplus adapt`` (``RUN/adapter.pt``) and the merged checkpoint (``--merge``).

An adapter file is a plain dict of tensors and JSON-like values (written atomically, read with
``torch.load(weights_only=True)``)::

    format, format_version, duplus_version
    base_checkpoint   {path, sha256}: the checkpoint it adapts; checked when it is applied
    adapt_config      the resolved AdaptConfig
    train             the parts that trained
    network_scope     task (network parts serve only the scope's prompts) or shared
    text_lora         {r, alpha, dropout, target_modules, state_dict} or None
    backbone_lora     {r, alpha, dropout, target_modules, state_dict} or None
    model_state       trained network tensors (head / conditioner), by their state-dict names
    scope             {prompts, datasets, added_targets}: the new task's prompts (never base ones)
    label_space       the base label space extended with the new targets

:func:`apply_adapter_file` puts it on a base model and text encoder and returns the network to
predict with and the :class:`~duplus.adapt.router.PromptRouter` to embed prompts with.
:func:`merge_adapter` writes a standalone checkpoint: network adapters folded in, the adapted
prompts' embeddings stored as a ``prompt_overrides`` table, the label space extended.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from duplus.adapt.lora import apply_lora, has_lora, lora_state_dict, merge_lora
from duplus.adapt.router import PromptRouter
from duplus.adapt.scoped import ScopedDuPLUS
from duplus.bundle_file import file_sha256
from duplus.checkpoint import load_torch_file, save_torch_file
from duplus.errors import CheckpointError

if TYPE_CHECKING:
    from duplus.inference.predictor import Predictor

__all__ = [
    "ADAPTER_FILE_FORMAT",
    "adapt_for_inference",
    "apply_adapter_file",
    "file_sha256",
    "lora_entry",
    "merge_adapter",
    "read_adapter_file",
    "write_adapter_file",
]

logger = logging.getLogger(__name__)

ADAPTER_FILE_FORMAT = "duplus-adapter"
ADAPTER_FILE_VERSION = 1


def lora_entry(module: nn.Module, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (r, alpha, dropout, resolved target_modules) plus ``module``'s LoRA weights."""
    return {**settings, "state_dict": lora_state_dict(module)}


def write_adapter_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the adapter-file header to ``path`` atomically."""
    return save_torch_file(path, ADAPTER_FILE_FORMAT, ADAPTER_FILE_VERSION, payload)


def read_adapter_file(path: str | Path) -> dict[str, Any]:
    """Load and check an adapter file.

    Raises:
        CheckpointError: missing, unreadable, pickled code, or not a DuPLUS adapter file.
    """
    return load_torch_file(path, ADAPTER_FILE_FORMAT, ADAPTER_FILE_VERSION, what="adapter file")


def check_base_checkpoint(adapter: dict[str, Any], adapter_path: Path, base_checkpoint: Path | None) -> None:
    """Compare ``base_checkpoint``'s SHA-256 with the one the adapter was trained on.

    Raises:
        CheckpointError: a different checkpoint (its message names both files).
    """
    from duplus.bundle_file import checkpoint_identities

    recorded = adapter.get("base_checkpoint", {})
    if base_checkpoint is None:
        logger.warning(
            "%s: base checkpoint not given; cannot verify it is %s", adapter_path, recorded.get("path")
        )
        return
    identities = checkpoint_identities(base_checkpoint)  # a bundle also answers to its source's sha256
    if recorded.get("sha256") not in identities:
        actual = file_sha256(base_checkpoint)
        raise CheckpointError(
            adapter_path,
            f"adapter was trained on base checkpoint {recorded.get('path')} (sha256 {str(recorded.get('sha256'))[:12]}), "
            f"but {base_checkpoint} has sha256 {actual[:12]}; use the checkpoint it was trained from",
        )


def _load_lora(module: nn.Module, entry: dict[str, Any], path: Path, what: str) -> None:
    try:
        apply_lora(
            module,
            r=int(entry["r"]),
            alpha=float(entry["alpha"]),
            dropout=float(entry["dropout"]),
            target_modules=list(entry["target_modules"]),
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"{what} adapter does not fit the base model: {exc}") from exc
    saved, current = entry["state_dict"], lora_state_dict(module)
    if set(saved) != set(current):
        raise CheckpointError(path, f"{what} adapter weights do not match the base model's layers")
    for k, v in saved.items():
        if tuple(v.shape) != tuple(current[k].shape):
            raise CheckpointError(
                path,
                f"{what} adapter weight {k} has shape {tuple(v.shape)}, expected {tuple(current[k].shape)}",
            )
    module.load_state_dict(saved, strict=False)
    for p in module.parameters():
        p.requires_grad_(False)


def _load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    bad = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(path, f"adapter tensor {bad[0]} does not fit the base model")
    model.load_state_dict(state, strict=False)


def apply_adapter_file(
    model: nn.Module, encoder: Any, path: str | Path, base_checkpoint: str | Path | None = None
) -> tuple[nn.Module, PromptRouter]:
    """Put an adapter on a base model and its text encoder, for inference.

    Args:
        model: the base DuPLUS network, weights loaded from ``base_checkpoint``.
        encoder: the base :class:`~duplus.text.encoder.TextEncoder` (LoRA is injected in place).
        path: the adapter file.
        base_checkpoint: the base checkpoint file, to verify (SHA-256) that the adapter was
            trained on it; ``None`` skips the check with a warning.

    Returns:
        ``(network, router)``: the network to predict with (``model`` itself; or, for task-scoped
        network parts, a :class:`~duplus.adapt.scoped.ScopedDuPLUS` of ``model`` and an adapted
        copy; or ``model`` adapted in place for ``network_scope: shared``) and the
        :class:`PromptRouter` that embeds its prompts (eval mode).

    Raises:
        CheckpointError: not an adapter file, the wrong base checkpoint, or weights that do not fit.
    """
    path = Path(path)
    data = read_adapter_file(path)
    check_base_checkpoint(data, path, Path(base_checkpoint) if base_checkpoint is not None else None)
    if data.get("text_lora"):
        _load_lora(encoder.model, data["text_lora"], path, "text-encoder")
        encoder.eval()
    scope = data.get("scope", {})
    router = PromptRouter(
        encoder, scope=scope.get("prompts", []), added_targets=scope.get("added_targets", [])
    )
    router.eval()
    network = model
    if data.get("backbone_lora") or data.get("model_state"):
        task_scoped = data.get("network_scope", "task") == "task"
        adapted = copy.deepcopy(model) if task_scoped else model
        if data.get("backbone_lora"):
            _load_lora(adapted, data["backbone_lora"], path, "backbone")
        _load_model_state(adapted, data.get("model_state", {}), path)
        adapted.requires_grad_(False)
        if task_scoped:
            network = ScopedDuPLUS(cast(Any, model), cast(Any, adapted), router.scope_table()["embeddings"])
    logger.info(
        "adapter %s applied (%s, network scope %s); %d adapted prompts, new targets %s",
        path,
        ", ".join(data.get("train", [])),
        data.get("network_scope", "task"),
        len(router.scope),
        router.added_targets,
    )
    return network, router


def adapt_for_inference(
    model: nn.Module, encoder: Any, ckpt: dict[str, Any], checkpoint: Path, adapter: str | Path | None = None
) -> tuple[Any, PromptRouter | None]:
    """The predictor's hook: the network and prompt router of a merged adaptation (a checkpoint
    with ``prompt_overrides``, and ``adapted_model`` when task-scoped) and/or an adapter file.

    Returns:
        ``(network, router)``; ``router`` is ``None`` for a plain checkpoint without adapter.
    """
    router: PromptRouter | None = None
    overrides = ckpt.get("prompt_overrides")
    if overrides:
        router = PromptRouter.from_overrides(encoder, overrides, added_targets=ckpt.get("added_targets", []))
        if "adapted_model" in ckpt:
            if adapter is not None:
                raise CheckpointError(
                    adapter, f"cannot be applied to {checkpoint}, a merged task-scoped adaptation"
                )
            adapted = copy.deepcopy(model)
            try:
                adapted.load_state_dict(ckpt["adapted_model"])
            except RuntimeError as exc:
                raise CheckpointError(
                    checkpoint, f"adapted_model does not fit the model ({str(exc)[:200]})"
                ) from exc
            model = ScopedDuPLUS(cast(Any, model), cast(Any, adapted), router.scope_table()["embeddings"])
    if adapter is not None:
        model, own = apply_adapter_file(model, encoder, adapter, base_checkpoint=checkpoint)
        if router is not None:  # an adapter on a merged text-side adaptation: its own prompts win
            own.overrides.update({k: v for k, v in router.overrides.items() if k not in own.scope})
            own.added_targets += [t for t in router.added_targets if t not in own.added_targets]
        router = own
    return model, router


def load_adapted_predictor(
    checkpoint: str | Path,
    adapter: str | Path | None = None,
    *,
    device: str = "auto",
    allow_download: bool = False,
) -> Predictor:
    """A predictor for a merged adaptation and/or a base checkpoint with an adapter file."""
    from duplus.inference.predictor import Predictor, load_model_parts

    ckpt, model, encoder = load_model_parts(checkpoint, allow_download=allow_download)
    model, router = adapt_for_inference(model, encoder, ckpt, Path(checkpoint), adapter)
    prompts = router if router is not None else encoder
    return Predictor.from_parts(ckpt, model, prompts, source=checkpoint, device=device)


def merge_adapter(base_checkpoint: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Write a standalone checkpoint: the base with the adapter folded in.

    The adapted prompts' embeddings become a ``prompt_overrides`` table that the predictor uses
    before its text encoder (so no text adapter is needed); network adapters are merged into
    their layers (same architecture and parameter names as the base). A task-scoped network is
    stored beside the base one as ``adapted_model``; a shared one replaces ``model``. The label
    space and dataset list are extended with the new task. The result loads with
    :func:`duplus.load_predictor` alone.
    """
    from duplus.checkpoint import load_checkpoint, save_checkpoint

    base_checkpoint, adapter = Path(base_checkpoint), Path(adapter)
    ckpt = load_checkpoint(base_checkpoint)
    predictor = load_adapted_predictor(base_checkpoint, adapter, device="cpu")
    data = read_adapter_file(adapter)
    router = predictor.prompt_cache
    assert isinstance(router, PromptRouter)
    payload = {
        k: v
        for k, v in ckpt.items()
        if k not in ("format", "format_version", "duplus_version", "train_state")
    }
    network = predictor.model
    if isinstance(network, ScopedDuPLUS):
        if has_lora(network.adapted):
            merge_lora(network.adapted)
        payload["adapted_model"] = _cpu_state(network.adapted)
    else:
        if has_lora(network):
            merge_lora(network)
        payload["model"] = _cpu_state(network)
    payload["label_space"] = dict(data.get("label_space") or payload.get("label_space", {}))
    known = {d.get("name") for d in payload.get("datasets", [])}
    payload["datasets"] = list(payload.get("datasets", [])) + [
        d for d in data.get("scope", {}).get("datasets", []) if d.get("name") not in known
    ]
    payload["prompt_overrides"] = router.scope_table()
    payload["added_targets"] = list(router.added_targets)
    payload["adapted_from"] = {
        "base_checkpoint": dict(data.get("base_checkpoint", {})),
        "adapter": {"path": str(adapter.absolute()), "sha256": file_sha256(adapter)},
        "train": list(data.get("train", [])),
        "network_scope": data.get("network_scope", "task"),
    }
    return save_checkpoint(out, payload)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
