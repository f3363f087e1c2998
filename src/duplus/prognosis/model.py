"""The prognosis model: EHR text (LoRA text encoder) and/or image features -> one Cox risk score.

::

    EHR text --TextEncoder + LoRA--> e (E,) --Linear+GELU--> h_text (hidden,)  -+
                                                                                +--> fusion MLP --> risk
    image features (F,) --standardise--> MLP --> h_image (hidden,)            -+

``mode`` selects the branches: ``"ehr-text"`` (the paper's text path) and ``"image"`` run this
neural head; ``"ehr"`` and ``"both"`` (clinical columns + text [+ image]) run the linear Cox head
of :mod:`duplus.prognosis.linear` (cross-validation and training dispatch on
:attr:`PrognosisConfig.is_linear`). Training minimises the Cox negative partial log-likelihood (the risk set is the batch,
so batches are large; by default the whole training set). Only the LoRA adapters and the small
heads are trained and saved; the base text encoder on disk is never written.

When LoRA adapts only the top layers of the text encoder (or none), the frozen layers below run
once per set of texts (:mod:`duplus.prognosis.text_states`) and each training step runs only the
adapted layers.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from duplus.adapt.lora import apply_lora, load_adapter, save_adapter
from duplus.config import from_dict, load_yaml, save_config
from duplus.errors import CheckpointError, ConfigError, InputError
from duplus.fileio import atomic_path
from duplus.losses.cox import cox_ph_loss
from duplus.metrics.survival import concordance_index
from duplus.prognosis.config import PrognosisConfig
from duplus.prognosis.text_states import (
    TextStates,
    compute_text_states,
    encode_text_states,
    frozen_layer_count,
    has_dropout,
)

__all__ = [
    "PrognosisModel",
    "build_prognosis_model",
    "fit_prognosis",
    "predict_risk",
    "text_dropout_draws",
    "save_prognosis",
    "load_prognosis",
    "load_prognosis_config",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "prognosis_config.yaml"
HEAD_FILE = "prognosis_head.pt"
ADAPTER_FILE = "text_adapter.pt"
_HEAD_FORMAT = "duplus-prognosis-head"


def _mlp(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))


class PrognosisModel(nn.Module):
    """Risk from EHR text and/or image features.

    Args:
        cfg: the configuration (``mode`` picks the branches).
        image_dim: number of image features ``F`` (required for ``image``/``both``).
        text_encoder: a :class:`duplus.text.encoder.TextEncoder` for ``ehr``/``both``; LoRA is
            applied to its ``.model`` here (in place) when ``cfg.lora_r > 0``. Built from
            ``cfg.text_encoder`` when omitted.

    Shapes:
        ``texts``: ``N`` strings; ``image_feats (N, F)`` -> ``risk (N,)``.
    """

    def __init__(
        self, cfg: PrognosisConfig, image_dim: int | None = None, text_encoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.mode = cfg.mode
        branches = 0
        self.text_encoder: Any = None
        self.text_head: nn.Module | None = None
        self.image_head: nn.Module | None = None
        self.feat_mean: Tensor
        self.feat_std: Tensor
        self.text_mean: Tensor
        self.text_std: Tensor
        if cfg.uses_text:
            if text_encoder is None:
                from duplus.text.encoder import TextEncoder

                text_encoder = TextEncoder(cfg.text_encoder, pooling=cfg.pooling, max_length=cfg.max_length)
            self.text_encoder = text_encoder
            if cfg.lora_r > 0:
                apply_lora(
                    text_encoder.model,  # type: ignore[arg-type]
                    r=cfg.lora_r,
                    alpha=cfg.lora_alpha,
                    dropout=cfg.lora_dropout,
                    target_modules=cfg.lora_targets,
                )
            else:
                for p in text_encoder.model.parameters():  # type: ignore[union-attr]
                    p.requires_grad_(False)
            embed_dim = int(text_encoder.embed_dim)  # type: ignore[arg-type]
            self.register_buffer("text_mean", torch.zeros(embed_dim))
            self.register_buffer("text_std", torch.ones(embed_dim))
            self.text_head = _mlp(embed_dim, cfg.hidden, cfg.dropout)
            branches += 1
        if cfg.uses_image:
            if not image_dim:
                raise ConfigError(f"prognosis mode '{cfg.mode}' needs image features (image_dim > 0)")
            self.register_buffer("feat_mean", torch.zeros(image_dim))
            self.register_buffer("feat_std", torch.ones(image_dim))
            self.image_head = _mlp(image_dim, cfg.hidden, cfg.dropout)
            branches += 1
        self.image_dim = int(image_dim or 0)
        self.fusion = nn.Sequential(
            nn.Linear(cfg.hidden * branches, cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),
        )

    @property
    def text_is_trainable(self) -> bool:
        return self.text_encoder is not None and self.cfg.lora_r > 0

    @property
    def text_frozen_layers(self) -> int:
        """Leading text-encoder layers that are frozen and can run once per cohort
        (:func:`duplus.prognosis.text_states.frozen_layer_count`; 0 = none, or no text branch)."""
        if self.text_encoder is None:
            return 0
        return frozen_layer_count(self.text_encoder) or 0

    def fit_standardiser(
        self, image_feats: np.ndarray | Tensor | None = None, text_emb: Tensor | None = None
    ) -> None:
        """Set per-feature mean/std from the training patients (constant features get std 1).

        Args:
            image_feats: ``(N, F)`` image features.
            text_emb: ``(N, E)`` text embeddings of the untrained encoder. L2-normalised sentence
                embeddings of similar records differ in small components; standardising them
                lets the head learn in a few epochs.
        """

        def stats(x: Tensor, mean: Tensor, std: Tensor) -> None:
            s = x.std(dim=0, unbiased=False)
            mean.copy_(x.mean(dim=0))
            std.copy_(torch.where(s > 1e-6, s, torch.ones_like(s)))

        if image_feats is not None and self.image_head is not None:
            stats(
                torch.as_tensor(np.asarray(image_feats), dtype=torch.float32), self.feat_mean, self.feat_std
            )
        if text_emb is not None and self.text_head is not None:
            stats(text_emb.detach().float().cpu().to(self.text_mean.device), self.text_mean, self.text_std)

    def embed_texts(self, texts: list[str]) -> Tensor:
        """Text embeddings ``(N, E)`` (with gradients through LoRA in training)."""
        return self.text_encoder.encode(texts)

    def forward(
        self,
        texts: list[str] | None = None,
        image_feats: Tensor | None = None,
        text_emb: Tensor | None = None,
    ) -> Tensor:
        """Risk scores ``(N,)``; ``text_emb (N, E)`` may replace ``texts`` for a frozen encoder."""
        parts = []
        if self.text_head is not None:
            if text_emb is None:
                if texts is None:
                    raise ValueError(f"mode '{self.mode}' needs EHR texts")
                text_emb = self.embed_texts(list(texts))
            parts.append(self.text_head((text_emb.float() - self.text_mean) / self.text_std))
        if self.image_head is not None:
            if image_feats is None:
                raise ValueError(f"mode '{self.mode}' needs image features")
            x = (image_feats.float().to(self.feat_mean.device) - self.feat_mean) / self.feat_std
            parts.append(self.image_head(x))
        return self.fusion(torch.cat(parts, dim=1)).squeeze(1)

    def head_state_dict(self) -> dict[str, Tensor]:
        """Everything trained except the text encoder (whose adapters are saved separately)."""
        return {
            k: v.detach().cpu().clone()
            for k, v in self.state_dict().items()
            if not k.startswith("text_encoder.")
        }


def build_prognosis_model(
    cfg: PrognosisConfig, image_dim: int | None = None, text_encoder: nn.Module | None = None
) -> PrognosisModel:
    """A fresh :class:`PrognosisModel` seeded with ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return PrognosisModel(cfg, image_dim=image_dim, text_encoder=text_encoder)


def _as_float(x: Any, name: str, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    if a.size != n:
        raise ValueError(f"{name} has {a.size} entries, expected {n}")
    return a


def _split_validation(
    event: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Event-stratified split of ``range(N)`` into training and validation indices."""
    val = []
    for value in (0, 1):
        idx = rng.permutation(np.flatnonzero(event == value))
        val.extend(idx[: int(round(fraction * idx.size))].tolist())
    val_idx = np.sort(np.asarray(val, dtype=int))
    return np.setdiff1d(np.arange(event.size), val_idx), val_idx


def _train_validation_indices(
    e: np.ndarray, cfg: PrognosisConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Training and early-stopping rows (``cfg.val_fraction``; none if a side would lack events)."""
    n = e.size
    train_idx, val_idx = np.arange(n), np.zeros(0, dtype=int)
    if cfg.val_fraction > 0:
        train_idx, val_idx = _split_validation(e, cfg.val_fraction, rng)
        if e[val_idx].sum() < 1 or e[train_idx].sum() < 1:
            logger.warning("too few events for a validation split; training without early stopping")
            train_idx, val_idx = np.arange(n), np.zeros(0, dtype=int)
    return train_idx, val_idx


def _text_rows_and_standardiser(
    model: PrognosisModel,
    texts: list[str] | None,
    text_states: TextStates | None,
    feats: Tensor | None,
    train_idx: np.ndarray,
    n: int,
) -> _TextRows | None:
    """The text rows of ``texts``; fits the model's standardisers on the training rows' inputs."""
    text = _TextRows.build(model, texts, text_states, compute=True)
    start_emb = None
    if text is not None:
        model.eval()
        with torch.no_grad():
            start_emb = text(np.arange(n))
        if not model.text_is_trainable:
            text.frozen = start_emb
        start_emb = start_emb[torch.as_tensor(train_idx)]
    model.fit_standardiser(feats[train_idx] if feats is not None else None, start_emb)
    return text


def _optimizer(model: PrognosisModel, cfg: PrognosisConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable weights: the heads at ``cfg.lr``, the LoRA adapters at ``cfg.lora_lr``."""
    lora = [p for name, p in model.named_parameters() if p.requires_grad and "lora_" in name]
    heads = [p for name, p in model.named_parameters() if p.requires_grad and "lora_" not in name]
    groups = [{"params": heads, "lr": cfg.lr}]
    if lora:
        groups.append({"params": lora, "lr": cfg.lora_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _train_epoch(
    model: PrognosisModel,
    opt: torch.optim.Optimizer,
    text: _TextRows | None,
    feats: Tensor | None,
    outcome: tuple[Tensor, Tensor],
    order: np.ndarray,
    epoch: int,
    cfg: PrognosisConfig,
) -> float:
    """One pass over ``order`` in batches (those without an event are skipped); the mean loss."""
    t_all, e_all = outcome
    losses = []
    for s in range(0, order.size, cfg.batch_size):
        b = order[s : s + cfg.batch_size]
        if e_all[b].sum() < 1:
            continue
        risk = model(
            image_feats=feats[b] if feats is not None else None,
            text_emb=text(b, step=epoch) if text is not None else None,
        )
        loss = cox_ph_loss(risk, t_all[b].to(risk), e_all[b].to(risk), ties=cfg.ties)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def fit_prognosis(
    model: PrognosisModel,
    texts: list[str] | None,
    image_feats: np.ndarray | None,
    time: np.ndarray,
    event: np.ndarray,
    cfg: PrognosisConfig | None = None,
    text_states: TextStates | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` with the Cox partial likelihood.

    Args:
        model: from :func:`build_prognosis_model`.
        texts: ``N`` EHR texts (``ehr``/``both``).
        image_feats: ``(N, F)`` image features (``image``/``both``); standardised with their own
            mean/std (the training fold's).
        time: ``(N,)`` follow-up times; event: ``(N,)`` 1 = event.
        cfg: defaults to ``model.cfg``.
        text_states: frozen-layer states of ``texts`` (e.g. rows of a cohort's, see
            :func:`duplus.prognosis.text_states.compute_text_states`, from the same base encoder);
            computed here when omitted and the encoder has frozen layers to skip.

    Returns:
        History: ``loss`` per epoch (mean over steps), and ``val_cindex`` when ``cfg.val_fraction > 0``
        (the best epoch's weights are restored, and training stops after ``cfg.patience`` epochs
        without improvement).

    Raises:
        InputError: no event among the training patients (the Cox likelihood is constant).
    """
    cfg = cfg or model.cfg
    n = len(texts) if texts is not None else len(image_feats)  # type: ignore[arg-type]
    t = _as_float(time, "time", n)
    e = _as_float(event, "event", n)
    if e.sum() < 1:
        raise InputError(None, "no event among the training patients: the Cox model cannot be fitted")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    feats = None if image_feats is None else torch.as_tensor(np.asarray(image_feats), dtype=torch.float32)
    train_idx, val_idx = _train_validation_indices(e, cfg, rng)
    text = _text_rows_and_standardiser(model, texts, text_states, feats, train_idx, n)
    opt = _optimizer(model, cfg)
    t_all, e_all = torch.as_tensor(t), torch.as_tensor(e)
    history: dict[str, list[float]] = {"loss": []}
    if val_idx.size:
        history["val_cindex"] = []
    best: tuple[float, dict[str, Tensor] | None] = (-np.inf, None)
    stale = 0
    start = time_now = _clock()
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(train_idx)
        history["loss"].append(_train_epoch(model, opt, text, feats, (t_all, e_all), order, epoch, cfg))
        msg = f"epoch {epoch + 1}/{cfg.epochs} loss {history['loss'][-1]:.4f}"
        if val_idx.size:
            risk_val = _predict(model, text, feats, val_idx, cfg.batch_size)
            c = concordance_index(t[val_idx], risk_val, e[val_idx])
            history["val_cindex"].append(c)
            msg += f" val C-index {c:.3f}"
            if c > best[0]:
                best, stale = (c, _trained_state(model)), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    logger.info("%s; early stop", msg)
                    break
        now = _clock()
        if now - time_now > 10 or epoch + 1 == cfg.epochs:
            logger.info("%s (%.0fs)", msg, now - start)
            time_now = now
    if best[1] is not None:
        model.load_state_dict(best[1], strict=False)
    model.eval()
    return history


def _trained_state(model: PrognosisModel) -> dict[str, Tensor]:
    """Copies of the weights training changes (heads, buffers, LoRA), not the frozen base encoder."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("text_encoder.") or "lora_" in k
    }


def _clock() -> float:
    return time.perf_counter()


class _TextRows:
    """Text embeddings ``(len(idx), E)`` of rows ``idx`` of a fixed list of texts.

    From the cached frozen-layer states when there are any (only the layers above them run),
    else through the full encoder; ``frozen`` holds all ``N`` embeddings once computed for an
    encoder that does not train.
    """

    def __init__(self, model: PrognosisModel, texts: list[str], states: TextStates | None) -> None:
        self.model, self.texts, self.states = model, texts, states
        self.frozen: Tensor | None = None

    @classmethod
    def build(
        cls,
        model: PrognosisModel,
        texts: Sequence[str] | None,
        states: TextStates | None,
        *,
        compute: bool,
    ) -> _TextRows | None:
        """``None`` without a text branch. ``compute``: build the states when none are given and
        the encoder has frozen layers to skip (worth it when the texts are encoded many times)."""
        if model.text_encoder is None:
            return None
        if texts is None:
            raise ValueError(f"mode '{model.mode}' needs EHR texts")
        texts = list(texts)
        frozen = model.text_frozen_layers
        if states is not None:
            if states.texts != tuple(t.strip() for t in texts):
                raise ValueError("text_states were computed for other texts (or another order)")
            if states.layer > frozen:
                raise ValueError(
                    f"text_states start at layer {states.layer}, but layer {frozen} of the encoder trains"
                )
        elif compute and frozen > 0:
            states = compute_text_states(
                model.text_encoder, texts, frozen, dropout_draws=text_dropout_draws(model)
            )
        return cls(model, texts, states)

    def __call__(self, idx: np.ndarray, step: int | None = None) -> Tensor:
        """``step``: a training step, which takes its dropout draw of the frozen layers."""
        if self.frozen is not None:
            return self.frozen[torch.as_tensor(idx)]
        if self.states is not None:
            states = self.states if step is None else self.states.draw(step)
            return encode_text_states(self.model.text_encoder, states.subset(idx, with_draws=False))
        return self.model.embed_texts([self.texts[i] for i in idx])


def text_dropout_draws(model: PrognosisModel) -> int:
    """Dropout draws of the frozen text layers a fit of ``model`` uses: one per epoch while the
    encoder trains (the full forward draws afresh at every step), none for a frozen encoder."""
    frozen = model.text_frozen_layers
    if not model.text_is_trainable or frozen == 0 or not has_dropout(model.text_encoder, frozen):
        return 0
    return int(model.cfg.epochs)


@torch.no_grad()
def _predict(
    model: PrognosisModel,
    text: _TextRows | None,
    feats: Tensor | None,
    idx: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, idx.size, batch_size):
        b = idx[s : s + batch_size]
        out.append(
            model(
                image_feats=feats[b] if feats is not None else None,
                text_emb=text(b) if text is not None else None,
            ).cpu()
        )
    model.train(was_training)
    return torch.cat(out).numpy().astype(float) if out else np.zeros(0)


def predict_risk(
    model: PrognosisModel,
    texts: list[str] | None = None,
    image_feats: np.ndarray | None = None,
    batch_size: int = 256,
    text_states: TextStates | None = None,
) -> np.ndarray:
    """Risk scores ``(N,)`` in eval mode (higher = earlier event; HECKTOR's ``Prediction``).

    Inputs the model's mode does not use are ignored. ``text_states``: frozen-layer states of
    ``texts`` (see :func:`fit_prognosis`), so that only the layers above them run.
    """
    texts = list(texts) if texts is not None and model.text_encoder is not None else None
    image_feats = image_feats if model.image_head is not None else None
    if model.text_encoder is not None and texts is None:
        raise ValueError(f"mode '{model.mode}' needs EHR texts")
    if model.image_head is not None and image_feats is None:
        raise ValueError(f"mode '{model.mode}' needs image features")
    n = len(texts) if texts is not None else len(image_feats)  # type: ignore[arg-type]
    if image_feats is not None and len(image_feats) != n:
        raise ValueError(f"{n} texts but {len(image_feats)} image feature rows")
    if image_feats is not None and np.asarray(image_feats).shape[1] != model.image_dim:
        raise InputError(
            None,
            f"the model expects {model.image_dim} image features, got {np.asarray(image_feats).shape[1]}",
        )
    feats = None if image_feats is None else torch.as_tensor(np.asarray(image_feats), dtype=torch.float32)
    text = _TextRows.build(model, texts, text_states, compute=False)
    return _predict(model, text, feats, np.arange(n), batch_size)


# ---------------------------------------------------------------------------------- save / load
def save_prognosis(model: PrognosisModel, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a trained model as small files in ``folder``.

    Writes ``prognosis_config.yaml`` (with the EHR template), ``prognosis_head.pt`` (heads,
    standardisation, image feature size, text encoder id; ``weights_only``-loadable) and, with LoRA,
    ``text_adapter.pt``. The base text encoder is referenced by id, never copied or modified.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(model.cfg, folder / CONFIG_FILE)
    enc = model.text_encoder
    payload = {
        "format": _HEAD_FORMAT,
        "version": 1,
        "mode": model.mode,
        "image_dim": model.image_dim,
        "text_model_id": getattr(enc, "model_id", None) if enc is not None else None,
        "text_embed_dim": int(enc.embed_dim) if enc is not None else None,
        "meta": dict(meta or {}),
        "state_dict": model.head_state_dict(),
    }
    with atomic_path(folder / HEAD_FILE) as tmp:
        torch.save(payload, tmp)
    if model.text_is_trainable:
        save_adapter(enc.model, folder / ADAPTER_FILE, {"text_model_id": payload["text_model_id"]})
    return folder


def load_prognosis_config(folder: str | Path) -> PrognosisConfig:
    """The :class:`PrognosisConfig` stored in a saved model folder."""
    path = Path(folder) / CONFIG_FILE
    data = load_yaml(path)
    ehr = data.get("ehr")
    if isinstance(ehr, dict):
        from duplus.prognosis.ehr import template_from_dict

        data = dict(data)
        data["ehr"] = None
        cfg = from_dict(PrognosisConfig, data, where=str(path))
        cfg.ehr = template_from_dict(ehr, where=f"{path}: ehr")
        return cfg
    return from_dict(PrognosisConfig, data, where=str(path))


def load_prognosis(
    folder: str | Path, text_encoder: nn.Module | None = None
) -> tuple[PrognosisModel, dict[str, Any]]:
    """Load a model saved by :func:`save_prognosis`.

    Returns:
        ``(model, meta)`` with the model in eval mode.
    """
    folder = Path(folder)
    cfg = load_prognosis_config(folder)
    head_path = folder / HEAD_FILE
    if not head_path.is_file():
        raise CheckpointError(head_path, "prognosis model file not found")
    try:
        payload = torch.load(head_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise CheckpointError(head_path, f"not a readable prognosis model ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != _HEAD_FORMAT:
        raise CheckpointError(head_path, "not a DuPLUS prognosis model file")
    if text_encoder is not None and payload.get("text_model_id") not in (
        None,
        getattr(text_encoder, "model_id", None),
    ):
        logger.warning(
            "%s was trained with text encoder %r, loading with %r",
            head_path,
            payload["text_model_id"],
            getattr(text_encoder, "model_id", None),
        )
    cfg_nolora = copy.copy(cfg)
    cfg_nolora.lora_r = 0  # adapters come from the adapter file, not fresh
    model = PrognosisModel(cfg_nolora, image_dim=payload.get("image_dim") or None, text_encoder=text_encoder)
    model.cfg = cfg
    if cfg.uses_text and cfg.lora_r > 0:
        load_adapter(model.text_encoder.model, folder / ADAPTER_FILE)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith("text_encoder.")]
    if missing or unexpected:
        raise CheckpointError(
            head_path, f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    return model, dict(payload.get("meta", {}))
