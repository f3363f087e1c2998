"""Training patches from prepared datasets, with partial labels.

:class:`PatchDataset` draws patches from one or more :class:`~duplus.data.preprocess.PreparedDataset`:
a dataset by weight, a case, then a patch (centred on a random voxel of a random present target with
probability ``fg_oversample``, as nnU-Net oversamples foreground). Each sample carries the dataset's
T1 prompt and the targets *its* dataset labels; :func:`collate_partial` pads those to the batch's
largest target count and returns the partial-label mask ``label_mask (B, K)``.

Determinism and distribution: sample ``index`` of epoch ``e`` is a pure function of
``(seed, e, index)``, whichever process draws it. Under DDP shard the indices with
``torch.utils.data.DistributedSampler(dataset, shuffle=False)``: each rank gets disjoint indices and
so disjoint, reproducible patches. Call :meth:`PatchDataset.set_epoch` (and the sampler's) before
iterating each epoch; the epoch lives in shared memory, so it reaches persistent DataLoader workers.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from duplus.data.prepared import PreparedCase, PreparedDataset
from duplus.vocab import IN_CHANNELS, MODALITIES, position_grid

logger = logging.getLogger(__name__)

AUGMENT_LEVELS = ("none", "light", "medium")
# mirrorable axes of a RAS+ volume, by name: its spatial axis. Left-right (axis 0) is never
# mirrored: that would swap the left and right organs.
MIRROR_AXES = {"ap": 1, "si": 2}
_MAX_LOCATIONS = 10_000  # foreground voxels remembered per case and target


def build_augmentation(level: str, position: bool = False, mirror_axes: Sequence[str] = ()) -> Any:
    """MONAI dictionary transforms on ``{"image": (C, *P), "label": (1, *P)}`` for ``level``.

    ``"light"``: small rotations (up to 10 degrees) and scaling (10 %), intensity scale/shift,
    Gaussian noise. ``"medium"``: larger rotations (20 degrees) and scaling (20 %), plus contrast
    (gamma) and blur. No left-right flips ever: they would swap left and right organs. Labels use nearest
    interpolation. ``mirror_axes`` (names in :data:`MIRROR_AXES`) adds a random flip (p = 0.5) along
    each, at any level: a model trained so can be tested with mirroring TTA. With ``position`` a
    ``"position"`` key (``(3, *P)`` voxel positions, see :mod:`duplus.models.position`) takes the
    same spatial transforms (trilinear, border-padded; flipped with the image), so every voxel keeps
    the position of the anatomy it shows. Returns ``None`` for ``"none"`` without mirroring.
    """
    if level not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {AUGMENT_LEVELS}, got {level!r}")
    unknown = [a for a in mirror_axes if a not in MIRROR_AXES]
    if unknown:
        raise ValueError(f"mirror_axes must be among {list(MIRROR_AXES)}, got {unknown}")
    spatial_keys = ["image", "label"] + (["position"] if position else [])
    if level == "none" and not mirror_axes:
        return None
    from monai.transforms import Compose, RandFlipd

    flips = [RandFlipd(keys=spatial_keys, prob=0.5, spatial_axis=MIRROR_AXES[a]) for a in mirror_axes]
    if level == "none":
        return Compose(flips)
    from monai.transforms import (
        RandAdjustContrastd,
        RandAffined,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    medium = level == "medium"
    angle = 0.35 if medium else 0.17
    transforms: list[Any] = flips + [
        RandAffined(
            keys=spatial_keys,
            prob=0.3 if not medium else 0.5,
            rotate_range=(angle, angle, angle),
            scale_range=(0.2 if medium else 0.1,) * 3,
            mode=("bilinear", "nearest", "bilinear")[: len(spatial_keys)],
            padding_mode=("border", "zeros", "border")[: len(spatial_keys)],
        ),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.3),
        RandGaussianNoised(keys="image", std=0.05, prob=0.2),
    ]
    if medium:
        transforms += [
            RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.2),
            RandGaussianSmoothd(
                keys="image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2
            ),
        ]
    return Compose(transforms)


def target_masks(label: np.ndarray, target_values: dict[str, list[int]]) -> np.ndarray:
    """One binary map per target from an integer label map.

    Args:
        label: ``(*S)`` integer label values.
        target_values: ``{target: label values}`` (see :attr:`PreparedDataset.target_values`).

    Returns:
        ``(K, *S)`` uint8, in ``target_values`` order.
    """
    if not target_values:
        return np.zeros((0, *label.shape), dtype=np.uint8)
    return np.stack([np.isin(label, vals) for vals in target_values.values()]).astype(np.uint8)


def load_case_arrays(
    entry: PreparedCase, max_channels: int = IN_CHANNELS
) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole prepared case, for validation.

    Args:
        entry: a case of a :class:`PreparedDataset`.
        max_channels: pad the image with zero channels up to this many.

    Returns:
        ``image (max_channels, D, H, W)`` float32 and ``label (D, H, W)`` int16 (``None`` for a
        test case).
    """
    image = np.load(entry.image_path, allow_pickle=False).astype(np.float32, copy=False)
    if image.shape[0] > max_channels:
        raise ValueError(f"{entry.image_path}: {image.shape[0]} channels > max_channels={max_channels}")
    if image.shape[0] < max_channels:
        pad = np.zeros((max_channels - image.shape[0], *image.shape[1:]), dtype=np.float32)
        image = np.concatenate([image, pad])
    label = None
    if entry.label_path is not None:
        label = np.load(entry.label_path, allow_pickle=False).astype(np.int16, copy=False)
    return image, label


def _extract(
    array: np.ndarray, start: Sequence[int], size: Sequence[int], pad: np.ndarray | float
) -> np.ndarray:
    """``array[:, start:start+size]`` with out-of-range voxels set to ``pad`` (per channel)."""
    out = np.empty((array.shape[0], *size), dtype=array.dtype)
    out[...] = np.asarray(pad, dtype=array.dtype).reshape(-1, 1, 1, 1) if np.ndim(pad) else pad
    src, dst = [], []
    for ax in range(3):
        lo = max(0, start[ax])
        hi = min(array.shape[1 + ax], start[ax] + size[ax])
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start[ax], hi - start[ax]))
    out[(slice(None), *dst)] = array[(slice(None), *src)]
    return out


def _patch_start(
    shape: Sequence[int], patch: Sequence[int], centre: np.ndarray | None, rng: np.random.Generator
) -> list[int]:
    """Start corner of a patch: inside the volume where it fits (padding where it does not),
    centred on ``centre`` when given (shifted as little as needed to stay in range), else random."""
    start = []
    for ax in range(3):
        lo, hi = min(0, shape[ax] - patch[ax]), max(0, shape[ax] - patch[ax])
        if centre is not None:
            start.append(int(np.clip(int(centre[ax]) - patch[ax] // 2, lo, hi)))
        else:
            start.append(int(rng.integers(lo, hi + 1)))
    return start


class PatchDataset(Dataset):
    """Random training patches over several prepared datasets (partial labels).

    Args:
        datasets: prepared datasets; only cases with labels are sampled.
        patch_size: ``(D, H, W)`` of each patch.
        samples_per_epoch: ``len(self)``.
        dataset_weights: sampling weight of each dataset (normalised); default equal, so small
            datasets are not drowned by large ones.
        fg_oversample: probability that a patch is centred on a random voxel of a random target
            present in the case.
        augment: ``"none"``, ``"light"`` or ``"medium"`` (see :func:`build_augmentation`).
        mirror_axes: axes of random mirroring (see :func:`build_augmentation`).
        seed: base seed; sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.
        max_channels: images are zero-padded to this many channels.
        position: also return each patch's voxel positions in its case volume (for a
            ``head_position`` model; :func:`duplus.models.position.position_grid`).
        in_memory: load all arrays once (shared copy-on-write with forked workers); otherwise
            memory-map the npy files.

    Each item is a dict: ``image`` ``(max_channels, *patch)`` float32, ``modality`` str,
    ``modality_index`` int (into :data:`MODALITIES`), ``t1`` str, ``targets`` list[str] (the
    dataset's targets), ``label`` ``(K, *patch)`` uint8 (one binary map per target), ``dataset``
    str, ``case_id`` str; with ``position``, ``position`` ``(3, *patch)`` float32.
    """

    def __init__(
        self,
        datasets: list[PreparedDataset],
        patch_size: tuple[int, int, int] | Sequence[int],
        *,
        samples_per_epoch: int,
        dataset_weights: list[float] | None = None,
        fg_oversample: float = 0.33,
        augment: str = "light",
        mirror_axes: Sequence[str] = (),
        seed: int = 0,
        max_channels: int = IN_CHANNELS,
        position: bool = False,
        in_memory: bool = True,
    ) -> None:
        if not datasets:
            raise ValueError("PatchDataset needs at least one prepared dataset")
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be 3 positive sizes, got {patch_size}")
        if samples_per_epoch < 1:
            raise ValueError("samples_per_epoch must be positive")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if not 0.0 <= fg_oversample <= 1.0:
            raise ValueError("fg_oversample must be in [0, 1]")
        self.datasets = list(datasets)
        self.cases: list[list[PreparedCase]] = []
        for ds in self.datasets:
            cases = ds.training
            if not cases:
                raise ValueError(f"prepared dataset '{ds.name}' ({ds.root}) has no labelled cases")
            for case in cases:
                if case.shape[0] > max_channels:
                    raise ValueError(
                        f"{case.image_path}: {case.shape[0]} channels > max_channels={max_channels}"
                    )
            self.cases.append(cases)
        weights = np.ones(len(datasets)) if dataset_weights is None else np.asarray(dataset_weights, float)
        if weights.shape != (len(datasets),) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(
                f"dataset_weights must be {len(datasets)} non-negative numbers, got {dataset_weights}"
            )
        self.weights = weights / weights.sum()
        self.samples_per_epoch = int(samples_per_epoch)
        self.fg_oversample = float(fg_oversample)
        self.augment = augment
        self.position = bool(position)
        self.mirror_axes = tuple(mirror_axes)
        self._transform = build_augmentation(augment, position=self.position, mirror_axes=self.mirror_axes)
        self.seed = int(seed)
        self.max_channels = int(max_channels)
        self.in_memory = bool(in_memory)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._arrays: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._locations: dict[tuple[int, int, str], np.ndarray] = {}
        if self.in_memory:
            for d in range(len(self.cases)):
                for c in range(len(self.cases[d])):
                    self._case_arrays(d, c)

    # -- epoch -------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's patches; visible to DataLoader workers (shared memory)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def __len__(self) -> int:
        return self.samples_per_epoch

    # -- data --------------------------------------------------------------------------------

    def _case_arrays(self, d: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image, label, pad values per channel)`` of case ``c`` of dataset ``d``."""
        key = (d, c)
        if key not in self._arrays:
            case = self.cases[d][c]
            assert case.label_path is not None  # only labelled cases are sampled
            if self.in_memory:
                image = np.load(case.image_path, allow_pickle=False)
                label = np.load(case.label_path, allow_pickle=False)
            else:
                image = np.load(case.image_path, mmap_mode="r", allow_pickle=False)
                label = np.load(case.label_path, mmap_mode="r", allow_pickle=False)
            pad = np.asarray([float(image[ch].min()) for ch in range(image.shape[0])], dtype=np.float32)
            self._arrays[key] = (image, label, pad)
        return self._arrays[key]

    def _target_locations(self, d: int, c: int, target: str) -> np.ndarray:
        """Up to :data:`_MAX_LOCATIONS` voxel indices ``(N, 3)`` of ``target`` (deterministic subset)."""
        key = (d, c, target)
        if key not in self._locations:
            _, label, _ = self._case_arrays(d, c)
            values = self.datasets[d].target_values[target]
            locs = np.argwhere(np.isin(np.asarray(label), values)).astype(np.int32)
            if len(locs) > _MAX_LOCATIONS:
                sub = np.random.default_rng(
                    zlib.crc32(f"{self.datasets[d].name}/{self.cases[d][c].case_id}/{target}".encode())
                )
                locs = locs[np.sort(sub.choice(len(locs), _MAX_LOCATIONS, replace=False))]
            self._locations[key] = locs
        return self._locations[key]

    def _present_targets(self, d: int, c: int) -> list[str]:
        case = self.cases[d][c]
        targets = self.datasets[d].targets
        if case.voxel_counts:
            return [t for t in targets if case.voxel_counts.get(t, 0) > 0]
        return [t for t in targets if len(self._target_locations(d, c, t))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        d = int(rng.choice(len(self.datasets), p=self.weights))
        ds = self.datasets[d]
        c = int(rng.integers(len(self.cases[d])))
        image, label, pad = self._case_arrays(d, c)
        centre = None
        if rng.random() < self.fg_oversample:
            present = self._present_targets(d, c)
            if present:
                locs = self._target_locations(d, c, present[int(rng.integers(len(present)))])
                if len(locs):
                    centre = locs[int(rng.integers(len(locs)))]
        start = _patch_start(image.shape[1:], self.patch_size, centre, rng)
        img = _extract(image, start, self.patch_size, pad).astype(np.float32, copy=False)
        lab = _extract(label[None], start, self.patch_size, 0)
        pos = position_grid(image.shape[1:], start, self.patch_size) if self.position else None
        if self._transform is not None:
            self._transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
            item = {"image": torch.from_numpy(img), "label": torch.from_numpy(lab.astype(np.float32))}
            if pos is not None:
                item["position"] = torch.from_numpy(pos)
            out = self._transform(item)
            img = np.asarray(_plain(out["image"]), dtype=np.float32)
            lab = np.rint(np.asarray(_plain(out["label"]))).astype(np.int16)
            if pos is not None:
                pos = np.asarray(_plain(out["position"]), dtype=np.float32)
        full = np.zeros((self.max_channels, *self.patch_size), dtype=np.float32)
        full[: img.shape[0]] = img
        masks = target_masks(lab[0], ds.target_values)
        sample = {
            "image": torch.from_numpy(full),
            "modality": ds.modality,
            "modality_index": MODALITIES.index(ds.modality),
            "t1": ds.t1_prompt,
            "targets": list(ds.target_values),
            "label": torch.from_numpy(masks),
            "dataset": ds.name,
            "case_id": self.cases[d][c].case_id,
        }
        if pos is not None:
            sample["position"] = torch.from_numpy(np.ascontiguousarray(pos))
        return sample


def _plain(x: Any) -> np.ndarray:
    """A MONAI ``MetaTensor`` or tensor as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().as_subclass(torch.Tensor).numpy()
    return np.asarray(x)


def collate_partial(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples whose datasets label different targets.

    Returns:
        ``image (B, C, *P)`` float, ``modality_index (B,)`` long, ``modality`` list[str],
        ``t1`` list[str], ``targets`` list[list[str]] padded with ``""`` to ``K_max``,
        ``label (B, K_max, *P)`` float, ``label_mask (B, K_max)`` bool (True = supervised target),
        ``dataset`` and ``case_id`` lists; ``position (B, 3, *P)`` when the samples carry it.
    """
    if not batch:
        raise ValueError("empty batch")
    k_max = max(1, max(len(b["targets"]) for b in batch))
    spatial = tuple(batch[0]["image"].shape[1:])
    label = torch.zeros((len(batch), k_max, *spatial), dtype=torch.float32)
    mask = torch.zeros((len(batch), k_max), dtype=torch.bool)
    targets = []
    for i, b in enumerate(batch):
        k = len(b["targets"])
        if k:
            label[i, :k] = b["label"].to(torch.float32)
            mask[i, :k] = True
        targets.append(list(b["targets"]) + [""] * (k_max - k))
    out = {
        "image": torch.stack([b["image"] for b in batch]),
        "modality_index": torch.tensor([int(b["modality_index"]) for b in batch], dtype=torch.long),
        "modality": [b["modality"] for b in batch],
        "t1": [b["t1"] for b in batch],
        "targets": targets,
        "label": label,
        "label_mask": mask,
        "dataset": [b["dataset"] for b in batch],
        "case_id": [b["case_id"] for b in batch],
    }
    if "position" in batch[0]:
        out["position"] = torch.stack([b["position"] for b in batch])
    return out
