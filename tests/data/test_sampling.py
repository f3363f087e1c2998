"""Patch sampling over prepared datasets with partial labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from duplus.data.prepared import PreparedCase, PreparedDataset
from duplus.data.sampling import (
    PatchDataset,
    build_augmentation,
    collate_partial,
    load_case_arrays,
    target_masks,
)
from duplus.data.specs import compute_target_values
from duplus.vocab import position_grid, t1_prompt

PATCH = (16, 16, 16)


def _prepared(
    root: Path, name: str, modality: str, labels: dict[int, str], cases: list[tuple[np.ndarray, np.ndarray]]
) -> PreparedDataset:
    folder = root / name
    folder.mkdir(parents=True)
    values = compute_target_values(labels)
    entries = []
    for i, (image, label) in enumerate(cases):
        np.save(folder / f"c{i}_img.npy", image.astype(np.float32))
        np.save(folder / f"c{i}_seg.npy", label.astype(np.int16))
        counts = {t: int(np.isin(label, v).sum()) for t, v in values.items()}
        entries.append(
            PreparedCase(
                f"c{i}",
                folder / f"c{i}_img.npy",
                folder / f"c{i}_seg.npy",
                tuple(image.shape),
                voxel_counts=counts,
            )  # type: ignore[arg-type]
        )
    return PreparedDataset(
        name, modality, "abdomen", labels, t1_prompt(modality, "abdomen"), entries, folder, "", values
    )


def _ct_case(shape: tuple[int, int, int] = (40, 40, 40), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (1, *shape)).astype(np.float32)
    label = np.zeros(shape, np.int16)
    label[30:34, 5:9, 30:34] = 1  # a small organ far from the centre
    label[31:33, 6:8, 31:33] = 2  # a tumour inside it
    return image, label


@pytest.fixture
def two_datasets(tmp_path: Path) -> tuple[PreparedDataset, PreparedDataset]:
    ct = _prepared(
        tmp_path, "CTSet", "CT", {1: "liver", 2: "liver tumour"}, [_ct_case(seed=s) for s in range(2)]
    )
    rng = np.random.default_rng(5)
    petct_img = np.stack([rng.uniform(0, 1, (20, 20, 20)), rng.uniform(-1, 1, (20, 20, 20))]).astype(
        np.float32
    )
    lab = np.zeros((20, 20, 20), np.int16)
    lab[8:12, 8:12, 8:12] = 1
    petct = _prepared(tmp_path, "PETSet", "PETCT", {1: "lesion"}, [(petct_img, lab)])
    return ct, petct


def test_item_contents(two_datasets: tuple[PreparedDataset, PreparedDataset]) -> None:
    ct, petct = two_datasets
    ds = PatchDataset([ct, petct], PATCH, samples_per_epoch=8, augment="none", seed=0)
    assert len(ds) == 8
    seen = set()
    for i in range(8):
        item = ds[i]
        seen.add(item["dataset"])
        assert item["image"].shape == (2, *PATCH) and item["image"].dtype == torch.float32
        assert item["label"].dtype == torch.uint8 and item["label"].shape[1:] == PATCH
        if item["dataset"] == "CTSet":
            assert item["modality"] == "CT" and item["modality_index"] == 0
            assert item["t1"] == "A CT scan of the abdomen"
            assert item["targets"] == ["liver", "liver tumour"] and item["label"].shape[0] == 2
            assert torch.all(item["image"][1] == 0)  # unused channel
            # the tumour lies inside the liver: the liver map includes it
            assert torch.all(item["label"][0] >= item["label"][1])
        else:
            assert item["modality"] == "PETCT" and item["modality_index"] == 3
            assert item["t1"] == "A PET/CT scan of the abdomen" and item["targets"] == ["lesion"]
            assert item["label"].shape[0] == 1
        assert item["case_id"] in {"c0", "c1"}
    assert seen == {"CTSet", "PETSet"}


def test_collate_partial_mask(two_datasets: tuple[PreparedDataset, PreparedDataset]) -> None:
    ct, petct = two_datasets
    a = PatchDataset([ct], PATCH, samples_per_epoch=2, augment="none", seed=0)
    b = PatchDataset([petct], PATCH, samples_per_epoch=2, augment="none", seed=0)
    batch = collate_partial([a[0], b[0], a[1]])
    assert batch["image"].shape == (3, 2, *PATCH)
    assert batch["label"].shape == (3, 2, *PATCH) and batch["label"].dtype == torch.float32
    assert batch["label_mask"].tolist() == [[True, True], [True, False], [True, True]]
    assert batch["targets"][1] == ["lesion", ""]
    assert batch["modality_index"].tolist() == [0, 3, 0] and batch["modality_index"].dtype == torch.long
    assert batch["t1"][1] == "A PET/CT scan of the abdomen"
    assert torch.all(batch["label"][1, 1] == 0)


def test_foreground_oversampling_hits_foreground(
    two_datasets: tuple[PreparedDataset, PreparedDataset],
) -> None:
    ct, _ = two_datasets

    def hit_rate(p: float) -> float:
        ds = PatchDataset([ct], PATCH, samples_per_epoch=40, fg_oversample=p, augment="none", seed=1)
        return float(np.mean([ds[i]["label"][0].any().item() for i in range(len(ds))]))

    assert hit_rate(1.0) == 1.0
    assert hit_rate(0.0) < 0.6


def test_determinism(two_datasets: tuple[PreparedDataset, PreparedDataset]) -> None:
    ct, petct = two_datasets

    def items(seed: int, epoch: int, augment: str) -> list[torch.Tensor]:
        ds = PatchDataset(
            [ct, petct], PATCH, samples_per_epoch=4, augment=augment, seed=seed, in_memory=False
        )
        ds.set_epoch(epoch)
        return [ds[i]["image"] for i in range(4)]

    for augment in ("none", "light"):
        first, again = items(3, 0, augment), items(3, 0, augment)
        assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    base = items(3, 0, "none")
    assert not all(torch.equal(x, y) for x, y in zip(base, items(4, 0, "none"), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(base, items(3, 1, "none"), strict=True))


def test_small_case_is_padded_with_background(tmp_path: Path) -> None:
    image = np.full((1, 6, 7, 8), 0.5, np.float32)
    image[0, 0, 0, 0] = -1.0  # the case's background value
    label = np.ones((6, 7, 8), np.int16)
    tiny = _prepared(tmp_path, "Tiny", "CT", {1: "liver"}, [(image, label)])
    ds = PatchDataset([tiny], PATCH, samples_per_epoch=3, augment="none", seed=0)
    for i in range(3):
        item = ds[i]
        assert item["image"].shape == (2, *PATCH)
        assert int(item["label"].sum()) == 6 * 7 * 8  # the whole case is inside the patch
        assert float(item["image"][0].min()) == -1.0 and int((item["image"][0] == 0.5).sum()) == 6 * 7 * 8 - 1


def test_dataset_weights(two_datasets: tuple[PreparedDataset, PreparedDataset]) -> None:
    ct, petct = two_datasets
    ds = PatchDataset(
        [ct, petct], PATCH, samples_per_epoch=10, dataset_weights=[0.0, 1.0], augment="none", seed=0
    )
    assert {ds[i]["dataset"] for i in range(10)} == {"PETSet"}
    with pytest.raises(ValueError, match="dataset_weights"):
        PatchDataset([ct, petct], PATCH, samples_per_epoch=1, dataset_weights=[1.0], seed=0)


def test_augmentation_keeps_labels_binary(two_datasets: tuple[PreparedDataset, PreparedDataset]) -> None:
    ct, _ = two_datasets
    for level in ("light", "medium"):
        ds = PatchDataset([ct], PATCH, samples_per_epoch=6, fg_oversample=1.0, augment=level, seed=2)
        for i in range(6):
            item = ds[i]
            assert torch.isfinite(item["image"]).all()
            assert set(torch.unique(item["label"]).tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="augment"):
        PatchDataset([ct], PATCH, samples_per_epoch=1, augment="heavy", seed=0)


def test_workers_and_distributed_sharding(two_datasets: tuple[PreparedDataset, PreparedDataset]) -> None:
    ct, petct = two_datasets
    ds = PatchDataset([ct, petct], PATCH, samples_per_epoch=6, augment="none", seed=7)
    loader = DataLoader(ds, batch_size=3, num_workers=1, persistent_workers=True, collate_fn=collate_partial)
    list(loader)  # epoch 0 starts the worker
    ds.set_epoch(2)  # must reach the persistent worker
    got = torch.cat([b["image"] for b in loader])
    want = torch.stack([ds[i]["image"] for i in range(6)])
    assert torch.equal(got, want)
    # DDP: each rank draws disjoint indices; together they are the epoch's samples
    shards = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(6)) and not set(shards[0]) & set(shards[1])


def test_load_case_arrays_and_target_masks(two_datasets: tuple[PreparedDataset, PreparedDataset]) -> None:
    ct, _ = two_datasets
    image, label = load_case_arrays(ct.cases[0], max_channels=2)
    assert image.shape == (2, 40, 40, 40) and image.dtype == np.float32 and np.all(image[1] == 0)
    assert label is not None and label.dtype == np.int16 and label.shape == (40, 40, 40)
    masks = target_masks(label, ct.target_values)
    assert masks.shape == (2, 40, 40, 40) and masks.dtype == np.uint8
    assert masks[0].sum() == 64 and masks[1].sum() == 8


def _position_case(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A case whose image is its own first position channel (so both must move together)."""
    image = position_grid(shape)[:1].copy()
    label = np.zeros(shape, np.int16)
    label[2:6, 2:6, 2:6] = 1
    return image, label


def test_patches_carry_their_slice_of_the_volume_positions(tmp_path: Path) -> None:
    big = _prepared(tmp_path, "Big", "CT", {1: "liver"}, [_position_case((30, 24, 20))])
    ds = PatchDataset([big], PATCH, samples_per_epoch=6, augment="none", seed=0, position=True)
    for i in range(6):
        item = ds[i]
        pos = item["position"].numpy()
        assert pos.shape == (3, *PATCH) and pos.dtype == np.float32
        # the image is the volume's x position: the patch's position channel 0 must equal it
        np.testing.assert_allclose(pos[0], item["image"][0].numpy(), atol=1e-6)
        start = [int(round(((float(pos[a].min()) + 1) * n - 1) / 2)) for a, n in enumerate((30, 24, 20))]
        np.testing.assert_allclose(pos, position_grid((30, 24, 20), start, PATCH), atol=1e-6)
    assert "position" not in PatchDataset([big], PATCH, samples_per_epoch=1, augment="none", seed=0)[0]
    batch = collate_partial([ds[0], ds[1]])
    assert batch["position"].shape == (2, 3, *PATCH)


def test_padded_patch_positions_continue_past_the_volume(tmp_path: Path) -> None:
    small = _prepared(tmp_path, "Small", "CT", {1: "liver"}, [_position_case((10, 12, 16))])
    item = PatchDataset([small], PATCH, samples_per_epoch=1, augment="none", seed=0, position=True)[0]
    x = item["position"][0, :, 0, 0].numpy()
    np.testing.assert_allclose(np.diff(x), 2.0 / 10, atol=1e-6)  # one linear ramp, padding included
    inside = (x > -1) & (x < 1)
    assert inside.sum() == 10


def test_spatial_augmentation_moves_positions_with_the_image() -> None:
    transform = build_augmentation("medium", position=True)
    affine = transform.transforms[0]
    affine.prob = 1.0  # always rotate and scale
    pos = torch.from_numpy(position_grid(PATCH))
    for seed in range(3):
        affine.set_random_state(seed=seed)
        out = affine({"image": pos[:1].clone(), "label": torch.zeros(1, *PATCH), "position": pos.clone()})
        moved = np.asarray(out["position"])
        assert not np.allclose(moved, pos.numpy(), atol=1e-3)  # the transform did something
        np.testing.assert_allclose(moved[0], np.asarray(out["image"])[0], atol=1e-5)


def test_mirroring_flips_image_label_and_positions_together() -> None:
    """``mirror_axes`` flips along the named axes only (never left-right), all keys alike."""
    transform = build_augmentation("none", position=True, mirror_axes=["si"])
    assert transform is not None and build_augmentation("none", position=True) is None
    image = torch.arange(float(np.prod(PATCH))).reshape(1, *PATCH)
    label = (image > image.mean()).float()
    pos = torch.from_numpy(position_grid(PATCH))
    outcomes = set()
    for seed in range(12):
        transform.set_random_state(seed=seed)
        out = transform({"image": image.clone(), "label": label.clone(), "position": pos.clone()})
        img, lab, p = (np.asarray(out[k]) for k in ("image", "label", "position"))
        flipped = not np.array_equal(img, image.numpy())
        want = np.flip(image.numpy(), axis=3) if flipped else image.numpy()  # (C, D, H, W): si is axis 2
        np.testing.assert_array_equal(img, want)
        np.testing.assert_array_equal(lab, np.flip(label.numpy(), 3) if flipped else label.numpy())
        np.testing.assert_allclose(p, np.flip(pos.numpy(), 3) if flipped else pos.numpy())
        outcomes.add(flipped)
    assert outcomes == {True, False}  # p = 0.5: both happen
    with pytest.raises(ValueError, match="mirror_axes"):
        build_augmentation("light", mirror_axes=["lr"])
