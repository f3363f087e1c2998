"""Image features for prognosis from the frozen DuPLUS segmentation backbone.

Each preprocessed PET/CT volume ``(2, D, H, W)`` goes through the T1-conditioned backbone
(:meth:`duplus.models.duplus.DuPLUS.extract_features`) without gradients, cases of one shape in
small batches (a batch of one takes a slow convolution path on CPU); the
bottleneck ``(C, d, h, w)`` is pooled over space (mean and max; optionally the mean inside the
tumour mask brought to the bottleneck grid) into one vector per patient. Volumes are zero-padded
to the network's size divisor; padded cells are left out of the pooling.

Only the bottleneck is used, so the decoder is not run (``extract_features(..., decoder=False)``).

Features are cached in an ``.npz`` (ids, features, names and a fingerprint of the model, the
prompt and the inputs), so repeated cross-validation runs do not recompute them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from duplus.errors import InputError
from duplus.fileio import atomic_path

__all__ = [
    "load_matching_feature_cache",
    "PROGNOSIS_MODALITY",
    "PROGNOSIS_REGION",
    "FeatureExtractor",
    "VolumeLike",
    "image_feature_names",
    "pool_bottleneck",
    "extract_image_features",
    "tumour_volume_ml",
    "save_feature_cache",
    "load_feature_cache",
]

logger = logging.getLogger(__name__)

PROGNOSIS_MODALITY = "PETCT"
PROGNOSIS_REGION = "head and neck"
_CACHE_FORMAT = "duplus-image-features-v1"


class FeatureExtractor(Protocol):
    """What :func:`extract_image_features` needs of a model (DuPLUS has it)."""

    def extract_features(
        self, image: Tensor, modality_index: Tensor, t1_emb: Tensor, decoder: bool = True
    ) -> dict[str, Tensor]: ...

    def parameters(self, recurse: bool = True) -> Any: ...


def image_feature_names(channels: int, tumour: bool = False) -> list[str]:
    """Names of the pooled features: ``bottleneck_mean_{i}``, ``bottleneck_max_{i}`` (and
    ``bottleneck_tumour_mean_{i}`` with a tumour mask) for ``i < channels``."""
    kinds = ["mean", "max"] + (["tumour_mean"] if tumour else [])
    return [f"bottleneck_{k}_{i}" for k in kinds for i in range(channels)]


def pool_bottleneck(bottleneck: Tensor, valid: Tensor | None = None, tumour: Tensor | None = None) -> Tensor:
    """Pool one case's bottleneck over space.

    Args:
        bottleneck: ``(C, d, h, w)``.
        valid: ``(d, h, w)`` bool, cells holding image (not padding); ``None`` = all.
        tumour: ``(d, h, w)`` bool, cells touching the tumour; adds the tumour mean when given.
            With no tumour cell the tumour mean is the overall mean (logged).

    Returns:
        ``(2C,)`` or ``(3C,)``: mean, max (and tumour mean) per channel.
    """
    c = bottleneck.shape[0]
    flat = bottleneck.reshape(c, -1)
    keep = torch.ones(flat.shape[1], dtype=torch.bool) if valid is None else valid.reshape(-1).to(torch.bool)
    inside = flat[:, keep]
    parts = [inside.mean(dim=1), inside.amax(dim=1)]
    if tumour is not None:
        sel = tumour.reshape(-1).to(torch.bool) & keep
        if sel.any():
            parts.append(flat[:, sel].mean(dim=1))
        else:
            logger.warning("empty tumour mask: tumour-mean features fall back to the whole-volume mean")
            parts.append(parts[0])
    return torch.cat(parts)


def _pad_to(x: Tensor, divisor: int) -> Tensor:
    """Zero-pad the last three axes of ``x`` up to multiples of ``divisor`` (at the far end)."""
    pads: list[int] = []
    for s in reversed(x.shape[-3:]):
        pads += [0, (-s) % divisor]
    return F.pad(x, pads) if any(pads) else x


def _to_grid(mask: Tensor, size: Sequence[int]) -> Tensor:
    """A ``(D, H, W)`` mask on a coarser grid: a cell is on when any voxel in it is on."""
    return F.adaptive_max_pool3d(mask[None, None].float(), tuple(size))[0, 0] > 0


VolumeLike = np.ndarray | Tensor | Callable[[], np.ndarray | Tensor]


def _as_tensor(x: Any) -> Tensor:
    """A CPU tensor from an array, a tensor, or a zero-argument loader returning either."""
    if callable(x) and not isinstance(x, np.ndarray | Tensor):
        x = x()
    return x.detach().cpu() if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _fingerprint(
    model: Any,
    t1_emb: Tensor,
    modality_index: int,
    volumes: Sequence[Any],
    masks: Sequence[Any] | None,
    hash_inputs: bool,
) -> str:
    h = hashlib.sha1()
    for p in model.parameters():
        h.update(p.detach().cpu().float().numpy().tobytes())
    h.update(t1_emb.detach().cpu().float().numpy().tobytes())
    h.update(f"{modality_index}|{len(volumes)}|{masks is not None}".encode())
    if hash_inputs:
        for v in volumes:
            h.update(_as_tensor(v).float().numpy().tobytes())
        if masks is not None:
            for m in masks:
                h.update(b"none" if m is None else _as_tensor(m).to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_feature_cache(
    path: str | Path,
    ids: Sequence[str],
    features: np.ndarray,
    names: Sequence[str],
    fingerprint: str = "",
    tumour_volume: np.ndarray | None = None,
) -> None:
    """Write image features ``(N, F)`` with their patient ids and names to an ``.npz``, atomically."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(_CACHE_FORMAT),
        "ids": np.asarray(list(ids), dtype=str),
        "features": np.asarray(features, dtype=np.float32),
        "names": np.asarray(list(names), dtype=str),
        "fingerprint": np.array(fingerprint),
    }
    if tumour_volume is not None:
        arrays["tumour_volume"] = np.asarray(tumour_volume, dtype=np.float64)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]


def load_matching_feature_cache(path: str | Path, fingerprint: str, ids: list[str]) -> dict[str, Any] | None:
    """The feature file at ``path`` if it exists, reads, and was made for ``fingerprint`` and
    ``ids``; else ``None`` (an unreadable file is logged and recomputed, never trusted)."""
    if not Path(path).is_file():
        return None
    try:
        cached = load_feature_cache(path)
    except InputError as exc:
        logger.warning("recomputing image features: %s", exc)
        return None
    if cached["fingerprint"] != fingerprint or cached["ids"] != ids:
        return None
    logger.info("image features: reusing %s", path)
    return cached


def load_feature_cache(path: str | Path) -> dict[str, Any]:
    """Read a feature file: ``{"ids", "features", "names", "fingerprint", "tumour_volume"|None}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image feature file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data.get("format", "")) != _CACHE_FORMAT:
                raise InputError(path, "not a DuPLUS image feature file")
            out: dict[str, Any] = {
                "ids": [str(i) for i in data["ids"]],
                "features": np.asarray(data["features"], dtype=np.float32),
                "names": [str(n) for n in data["names"]],
                "fingerprint": str(data["fingerprint"]),
                "tumour_volume": np.asarray(data["tumour_volume"]) if "tumour_volume" in data else None,
            }
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"unreadable image feature file ({exc})") from exc
    if out["features"].shape != (len(out["ids"]), len(out["names"])):
        raise InputError(
            path,
            f"features {out['features'].shape} do not match {len(out['ids'])} ids x {len(out['names'])} names",
        )
    return out


def tumour_volume_ml(mask: np.ndarray | Tensor, spacing: Sequence[float]) -> float:
    """Volume of the non-zero voxels of ``mask (D, H, W)`` in millilitres, for voxel ``spacing`` in mm."""
    voxels = int((_as_tensor(mask) > 0).sum())
    return voxels * float(np.prod(spacing)) / 1000.0


@dataclass
class _Case:
    """One preprocessed case, zero-padded to the network's size divisor.

    ``image (C, D', H', W')``; ``valid (D', H', W')`` marks image (not padding); ``tumour`` the same
    grid's tumour voxels, all off for a case without a mask, ``None`` when no masks are used."""

    image: Tensor
    valid: Tensor
    tumour: Tensor | None


def _load_case(
    i: int, case_id: str, volume: VolumeLike, masks: Sequence[VolumeLike | None] | None, divisor: int
) -> _Case:
    x = _as_tensor(volume).float()
    if x.ndim != 4:
        raise InputError(None, f"case {case_id}: expected an image (C, D, H, W), got shape {tuple(x.shape)}")
    spatial = tuple(x.shape[1:])
    valid = _pad_to(torch.ones(1, *spatial), divisor)[0] > 0
    tumour = None
    if masks is not None:
        mask = masks[i]
        tumour = torch.zeros_like(valid)
        if mask is not None:
            m = _as_tensor(mask)
            if tuple(m.shape) != spatial:
                raise InputError(
                    None, f"case {case_id}: tumour mask {tuple(m.shape)} does not match image {spatial}"
                )
            tumour = _pad_to((m > 0)[None].float(), divisor)[0] > 0
    return _Case(_pad_to(x, divisor), valid, tumour)


class _BatchRunner:
    """Pooled features of a batch of same-shape cases, one forward pass.

    Cases go through the network together: on CPU, PyTorch runs 3D convolutions of a batch of one
    with few channels on a slow im2col path (several times slower per case than a batch of two).
    Only the encoder runs (``extract_features(..., decoder=False)``): the bottleneck is all that
    is pooled.
    """

    def __init__(self, model: FeatureExtractor, mod_idx: int, t1: Tensor, device: torch.device) -> None:
        self.model, self.mod_idx, self.t1, self.device = model, mod_idx, t1, device

    def __call__(self, cases: list[_Case]) -> list[np.ndarray]:
        b = len(cases)
        image = torch.stack([c.image for c in cases]).to(self.device)
        mod = torch.full((b,), self.mod_idx, dtype=torch.long, device=self.device)
        t1 = self.t1.to(self.device).expand(b, -1)
        bottleneck = self.model.extract_features(image, mod, t1, decoder=False)["bottleneck"].float().cpu()
        grid = bottleneck.shape[2:]
        return [
            pool_bottleneck(
                bottleneck[j],
                _to_grid(c.valid, grid),
                _to_grid(c.tumour, grid) if c.tumour is not None else None,
            ).numpy()
            for j, c in enumerate(cases)
        ]


@torch.no_grad()
def _features_in_batches(
    model: FeatureExtractor,
    volumes: Sequence[VolumeLike],
    ids: list[str],
    tumour_masks: Sequence[VolumeLike | None] | None,
    run: _BatchRunner,
    batch_size: int,
) -> np.ndarray:
    """Run every case through ``run``, batching cases of one padded shape (``model`` in eval mode
    meanwhile); ``(N, F)`` float32 rows in input order."""
    n = len(volumes)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()  # type: ignore[attr-defined]
    divisor = int(getattr(model, "size_divisor", 16))
    rows: list[np.ndarray | None] = [None] * n
    pending: dict[tuple[int, ...], list[tuple[int, _Case]]] = {}  # by padded shape, oldest first

    def flush(shape: tuple[int, ...]) -> None:
        group = pending.pop(shape)
        for (i, _), row in zip(group, run([c for _, c in group]), strict=True):
            rows[i] = row

    try:
        for i, vol in enumerate(volumes):
            case = _load_case(i, ids[i], vol, tumour_masks, divisor)
            shape = tuple(case.image.shape)
            pending.setdefault(shape, []).append((i, case))
            if len(pending[shape]) == batch_size:
                flush(shape)
            elif sum(map(len, pending.values())) > 4 * batch_size:  # bound the cases held in memory
                flush(next(iter(pending)))
            logger.debug("image features: case %d/%d (%s)", i + 1, n, ids[i])
        while pending:
            flush(next(iter(pending)))
    finally:
        if was_training and hasattr(model, "train"):
            model.train()  # type: ignore[attr-defined]
    return (
        np.stack([r for r in rows if r is not None]).astype(np.float32)
        if rows
        else np.zeros((0, 0), dtype=np.float32)
    )


@torch.no_grad()
def extract_image_features(
    model: FeatureExtractor,
    volumes: Sequence[VolumeLike],
    *,
    t1_embedding: Tensor,
    modality: str | int = PROGNOSIS_MODALITY,
    tumour_masks: Sequence[VolumeLike | None] | None = None,
    ids: Sequence[str] | None = None,
    cache_path: str | Path | None = None,
    hash_inputs: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int = 2,
) -> np.ndarray:
    """Pooled bottleneck features of the frozen backbone, a few cases at a time.

    Args:
        model: a DuPLUS network (or anything with the same ``extract_features``); left unchanged.
        volumes: ``N`` preprocessed images ``(C, D, H, W)`` (for PET/CT: channel 0 PET, 1 CT), or
            zero-argument loaders returning them (so a large cohort is never all in memory).
        t1_embedding: the T1 prompt embedding ``(E,)`` or ``(1, E)``, e.g. of
            ``"A PET/CT scan of the head and neck"``.
        modality: modality name (``"PETCT"``) or its index in :data:`duplus.models.stems.MODALITIES`.
        tumour_masks: optional ``N`` masks ``(D, H, W)`` (non-zero = tumour) on the volumes' grid;
            adds the tumour-mean features. An entry may be ``None`` (whole-volume mean is used).
        ids: patient ids, stored in the cache (default ``"0".."N-1"``).
        cache_path: ``.npz`` to reuse when its fingerprint matches, else (re)write.
        hash_inputs: include the volumes and masks in the cache fingerprint (reads them all once);
            ``False`` keys the cache on the model, prompt, ids and counts only.
        device: where to run the model.
        batch_size: cases of the same (padded) shape run through the network together, up to this
            many (features do not depend on it beyond float rounding); at most ``4 * batch_size``
            cases wait for a batch at a time.

    Returns:
        ``(N, F)`` float32 features, ``F = len(image_feature_names(C_bottleneck, tumour_masks is not None))``.
    """
    n = len(volumes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tumour_masks is not None and len(tumour_masks) != n:
        raise ValueError(f"{n} volumes but {len(tumour_masks)} tumour masks")
    ids = [str(i) for i in (ids if ids is not None else range(n))]
    if len(ids) != n:
        raise ValueError(f"{n} volumes but {len(ids)} ids")
    if isinstance(modality, str):
        from duplus.vocab import modality_index

        mod_idx = modality_index(modality)
    else:
        mod_idx = int(modality)
    t1 = t1_embedding.detach().reshape(1, -1).float()
    fingerprint = ""
    if cache_path is not None:
        fingerprint = _fingerprint(model, t1, mod_idx, volumes, tumour_masks, hash_inputs)
        cached = load_matching_feature_cache(cache_path, fingerprint, ids)
        if cached is not None:
            return cached["features"]
    feats = _features_in_batches(
        model, volumes, ids, tumour_masks, _BatchRunner(model, mod_idx, t1, torch.device(device)), batch_size
    )
    if cache_path is not None:
        channels = int(feats.shape[1]) // (3 if tumour_masks is not None else 2) if n else 0
        save_feature_cache(
            cache_path, ids, feats, image_feature_names(channels, tumour_masks is not None), fingerprint
        )
    return feats
