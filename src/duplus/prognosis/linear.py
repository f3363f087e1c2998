"""EHR = text + structure: a penalised linear Cox model on [clinical columns | text | image].

::

    clinical table --TabularEncoder (fit on train)------------------------------> S (N, p)
    record as text --frozen text encoder (once per cohort)--> PCA (fit on train) --> T (N, k) * s_text
    image features ------------------------------------------> PCA (fit on train) --> I (N, k) * s_image
    [S | T | I] --ridge Cox (scikit-survival, Efron ties)--> risk

The ridge penalty ``alpha`` and the block scales ``s_text``, ``s_image`` (0 leaves a block out; a
smaller scale penalises the block harder) are chosen by inner cross-validation on the training
patients only (Harrell's C on the inner validation folds), with the one-standard-error rule toward
the simpler model (fewer / weaker blocks, then a stronger penalty). Every transform of the final
model (imputation, scaling, one-hot levels, PCA) is fitted on the training patients passed to
:func:`fit_linear_cox`; so is each inner fold's. No gradient training, hence no early stopping.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from duplus.errors import InputError
from duplus.metrics.survival import concordance_index
from duplus.prognosis.ehr import EHRTemplate
from duplus.prognosis.splits import stratified_kfold
from duplus.prognosis.tabular import TabularEncoder

__all__ = ["LinearCoxSettings", "LinearCox", "Blocks", "fit_linear_cox"]

logger = logging.getLogger(__name__)


@dataclass
class LinearCoxSettings:
    """Settings of :func:`fit_linear_cox` (fields of :class:`~duplus.prognosis.config.PrognosisConfig`).

    Attributes:
        alphas: ridge penalties to try, per training patient (the penalty is ``alpha * n``).
        text_scales, image_scales: block scales to try (0 = block left out).
        text_components, image_components: PCA components kept per block.
        inner_folds: inner cross-validation folds; seed: of their split.
    """

    alphas: tuple[float, ...] = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
    text_scales: tuple[float, ...] = (0.0, 0.5, 1.0)
    image_scales: tuple[float, ...] = (0.0, 0.5, 1.0)
    text_components: int = 8
    image_components: int = 8
    inner_folds: int = 5
    seed: int = 0


@dataclass
class Blocks:
    """The inputs of one set of patients: the clinical table, text embeddings, image features."""

    table: pd.DataFrame | None = None
    text: np.ndarray | None = None
    image: np.ndarray | None = None

    def rows(self, idx: np.ndarray) -> Blocks:
        return Blocks(
            None if self.table is None else self.table.iloc[idx],
            None if self.text is None else self.text[idx],
            None if self.image is None else self.image[idx],
        )

    def __len__(self) -> int:
        for part in (self.table, self.text, self.image):
            if part is not None:
                return len(part)
        return 0


@dataclass
class _PCA:
    """Centred PCA whose scores are scaled to unit variance on the training rows."""

    mean: np.ndarray
    components: np.ndarray  # (k, E)
    scale: np.ndarray  # (k,)

    @classmethod
    def fit(cls, x: np.ndarray, k: int) -> _PCA:
        mean = x.mean(axis=0)
        centred = x - mean
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        k = max(1, min(k, int((s > 1e-8 * max(s[0], 1e-12)).sum())))
        sd = s[:k] / np.sqrt(max(len(x), 1))
        return cls(mean, vt[:k], np.where(sd > 0, sd, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.components.T) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _PCA:
        return cls(np.asarray(d["mean"]), np.asarray(d["components"]), np.asarray(d["scale"]))


@dataclass
class _Design:
    """The transforms fitted on training rows that turn :class:`Blocks` into one matrix."""

    tabular: TabularEncoder | None
    text: _PCA | None
    image: _PCA | None
    text_scale: float = 1.0
    image_scale: float = 1.0

    @classmethod
    def fit(cls, train: Blocks, template: EHRTemplate, s: LinearCoxSettings) -> _Design:
        return cls(
            TabularEncoder(template).fit(train.table) if train.table is not None else None,
            _PCA.fit(train.text, s.text_components) if train.text is not None else None,
            _PCA.fit(_log_image(train.image), s.image_components) if train.image is not None else None,
        )

    def parts(self, b: Blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unscaled ``(structure, text, image)`` matrices (``(N, 0)`` for a block the model has
        not; zeros for a block it has with weight 0 when ``b`` leaves it out).

        Raises:
            ValueError: ``b`` lacks a block the model uses.
        """
        n = len(b)
        s = (
            self.tabular.transform(b.table)
            if self.tabular is not None and b.table is not None
            else np.zeros((n, 0))
        )
        t = _block(self.text, b.text, self.text_scale, "text", n)
        i = _block(self.image, None if b.image is None else _log_image(b.image), self.image_scale, "image", n)
        return s, t, i

    def matrix(self, b: Blocks) -> np.ndarray:
        s, t, i = self.parts(b)
        return np.hstack([s, t * self.text_scale, i * self.image_scale])


def _block(pca: _PCA | None, x: np.ndarray | None, scale: float, name: str, n: int) -> np.ndarray:
    """A PCA block's scores; zeros when it is left out (weight 0) and not given."""
    if pca is None:
        return np.zeros((n, 0))
    if x is None:
        if scale != 0:
            raise ValueError(f"the model uses the {name} block, which was not given")
        return np.zeros((n, len(pca.scale)))
    return pca.transform(x)


def _log_image(x: np.ndarray | None) -> np.ndarray:
    """Image features as float; volumes and intensities are skewed, so signed log1p."""
    a = np.asarray(x, dtype=float)
    return np.sign(a) * np.log1p(np.abs(a))


def _structured(y_time: np.ndarray, y_event: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(y_event).astype(bool), time=np.asarray(y_time, dtype=float))


def _fit_cox(x: np.ndarray, time: np.ndarray, event: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge Cox coefficients (scikit-survival, Efron ties); penalty ``alpha * n``."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    if x.shape[1] == 0:
        return np.zeros(0)
    model = CoxPHSurvivalAnalysis(alpha=alpha * len(x), ties="efron", n_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes at tiny penalties; the coefficients are usable
        model.fit(x, _structured(time, event))
    return np.asarray(model.coef_, dtype=float)


@dataclass
class LinearCox:
    """A fitted linear Cox model: transforms, chosen settings and coefficients."""

    design: _Design
    coef: np.ndarray
    alpha: float
    inner_cv: list[dict[str, float]] = field(default_factory=list)

    def risk(self, b: Blocks) -> np.ndarray:
        """Log relative hazards ``(N,)`` (higher = earlier event)."""
        x = self.design.matrix(b)
        return x @ self.coef if x.shape[1] else np.zeros(len(b))

    def to_dict(self) -> dict[str, Any]:
        d = self.design
        return {
            "tabular": d.tabular.to_dict() if d.tabular is not None else None,
            "text": d.text.to_dict() if d.text is not None else None,
            "image": d.image.to_dict() if d.image is not None else None,
            "text_scale": d.text_scale,
            "image_scale": d.image_scale,
            "coef": self.coef.tolist(),
            "alpha": self.alpha,
            "inner_cv": self.inner_cv,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], template: EHRTemplate) -> LinearCox:
        design = _Design(
            TabularEncoder.from_dict(data["tabular"], template) if data["tabular"] else None,
            _PCA.from_dict(data["text"]) if data["text"] else None,
            _PCA.from_dict(data["image"]) if data["image"] else None,
            float(data["text_scale"]),
            float(data["image_scale"]),
        )
        return cls(
            design, np.asarray(data["coef"], dtype=float), float(data["alpha"]), list(data["inner_cv"])
        )


def _candidates(train: Blocks, s: LinearCoxSettings) -> list[tuple[float, float, float]]:
    """``(text_scale, image_scale, alpha)`` from simplest to most complex (without a clinical
    table, at least one of text and image stays in)."""
    ts = s.text_scales if train.text is not None else (0.0,)
    is_ = s.image_scales if train.image is not None else (0.0,)
    combos = [(t, i) for t, i in itertools.product(ts, is_) if t > 0 or i > 0 or train.table is not None]
    out = [(t, i, a) for (t, i), a in itertools.product(combos, sorted(s.alphas, reverse=True))]
    return sorted(out, key=lambda c: (c[0] + c[1], -c[2]))


def _inner_scores(
    train: Blocks, time: np.ndarray, event: np.ndarray, template: EHRTemplate, s: LinearCoxSettings
) -> tuple[list[tuple[float, float, float]], np.ndarray]:
    """Harrell's C of every candidate on every inner validation fold: ``(candidates, (C, K))``."""
    cands = _candidates(train, s)
    folds = stratified_kfold(event, min(s.inner_folds, int(event.sum())), seed=s.seed)
    scores = np.full((len(cands), len(folds)), np.nan)
    for k, val in enumerate(folds):
        tr = np.setdiff1d(np.arange(len(time)), val)
        design = _Design.fit(train.rows(tr), template, s)
        (s_tr, t_tr, i_tr), (s_va, t_va, i_va) = design.parts(train.rows(tr)), design.parts(train.rows(val))
        for c, (ts, is_, alpha) in enumerate(cands):
            x_tr = np.hstack([s_tr, t_tr * ts, i_tr * is_])
            x_va = np.hstack([s_va, t_va * ts, i_va * is_])
            coef = _fit_cox(x_tr, time[tr], event[tr], alpha)
            try:
                scores[c, k] = concordance_index(time[val], x_va @ coef, event[val])
            except ValueError:
                continue
    return cands, scores


def _one_se_choice(cands: list[tuple[float, float, float]], scores: np.ndarray) -> int:
    """The block scales: the simplest whose best mean inner C is within one standard error of the
    overall best; then, for those scales, the penalty with the best mean inner C."""
    if not np.isfinite(scores).any():
        logger.warning("inner CV: no inner fold could be scored; the simplest candidate is used")
        return 0
    mean = np.nanmean(scores, axis=1)
    n = np.sum(np.isfinite(scores), axis=1)
    sd = np.nanstd(scores, axis=1, ddof=1)
    best = int(np.nanargmax(mean))
    se = sd[best] / np.sqrt(max(n[best], 1))
    simplest = cands[int(np.flatnonzero(mean >= mean[best] - se)[0])][:2]
    same = [i for i, c in enumerate(cands) if c[:2] == simplest]
    return same[int(np.nanargmax(mean[same]))]


def fit_linear_cox(
    train: Blocks,
    time: np.ndarray,
    event: np.ndarray,
    template: EHRTemplate,
    settings: LinearCoxSettings | None = None,
) -> LinearCox:
    """Choose penalty and block scales by inner CV on ``train``, then fit on all of ``train``.

    Raises:
        InputError: no event among the training patients.
    """
    s = settings or LinearCoxSettings()
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=int)
    if event.sum() < 2:
        raise InputError(
            None, "fewer than 2 events among the training patients: the Cox model cannot be fitted"
        )
    cands, scores = _inner_scores(train, time, event, template, s)
    pick = _one_se_choice(cands, scores)
    ts, is_, alpha = cands[pick]
    design = _Design.fit(train, template, s)
    design.text_scale, design.image_scale = ts, is_
    coef = _fit_cox(design.matrix(train), time, event, alpha)
    means = np.nanmean(scores, axis=1)
    logger.info(
        "linear Cox: alpha %.3g, text scale %.2g, image scale %.2g (inner C %.3f; best %.3f)",
        alpha,
        ts,
        is_,
        means[pick],
        np.nanmax(means),
    )
    inner = [
        {"text_scale": c[0], "image_scale": c[1], "alpha": c[2], "inner_c": float(m)}
        for c, m in zip(cands, means, strict=True)
    ]
    return LinearCox(design, coef, alpha, inner)


def embed_texts(encoder: Any, texts: Any, batch_size: int = 64) -> np.ndarray:
    """``(N, E)`` embeddings of ``texts`` by a frozen :class:`~duplus.text.encoder.TextEncoder`
    (eval mode, no gradients, in batches)."""
    import torch

    texts = list(texts)
    encoder.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            out.append(encoder.encode(texts[s : s + batch_size]).float().cpu().numpy())
    logger.info("EHR text: %d records embedded once by the frozen text encoder", len(texts))
    return np.concatenate(out) if out else np.zeros((0, 0))


LINEAR_FILE = "linear_cox.json"


def save_linear_cox(model: LinearCox, folder: Any, meta: dict[str, Any] | None = None) -> None:
    """Write the fitted model as JSON (``linear_cox.json``) into ``folder``, atomically."""
    import json
    from pathlib import Path

    from duplus.fileio import write_text_atomic

    write_text_atomic(
        Path(folder) / LINEAR_FILE, json.dumps({**model.to_dict(), "meta": dict(meta or {})}) + "\n"
    )


def load_linear_cox(folder: Any, template: EHRTemplate) -> tuple[LinearCox, dict[str, Any]]:
    """Read a model saved by :func:`save_linear_cox`; returns ``(model, meta)``."""
    import json
    from pathlib import Path

    from duplus.errors import CheckpointError

    path = Path(folder) / LINEAR_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LinearCox.from_dict(data, template), dict(data.get("meta", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(path, f"not a readable linear prognosis model ({type(exc).__name__})") from exc
