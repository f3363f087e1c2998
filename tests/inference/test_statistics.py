"""statistics.csv: volume = voxel count x voxel volume (any affine), intensity and SUV inside the mask."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from duplus.data.io import Volume
from duplus.inference.statistics import compute_statistics, voxel_volume_ml, write_statistics


def _oblique(spacing: tuple[float, float, float]) -> np.ndarray:
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing)
    affine[:3, 3] = (10, -20, 5)
    return affine


def test_volume_from_any_affine() -> None:
    assert voxel_volume_ml(_oblique((0.8, 1.2, 3.0))) == pytest.approx(0.8 * 1.2 * 3.0 / 1000, rel=1e-12)


def test_ct_and_pet_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    affine = _oblique((0.8, 1.2, 3.0))
    ct = rng.normal(40, 10, size=(12, 10, 8)).astype(np.float32)
    pet = rng.gamma(2.0, 1.5, size=(12, 10, 8)).astype(np.float32)
    masks = np.zeros((2, 12, 10, 8), np.uint8)
    masks[0, 2:7, 3:6, 1:5] = 1
    prob = rng.random((2, 12, 10, 8)).astype(np.float32)
    inside = masks[0] > 0

    rows = compute_statistics("c1", Volume(ct[None], affine), ["liver", "tumour"], masks, prob, "CT")
    liver, tumour = rows
    assert liver.voxels == 5 * 3 * 4 and liver.volume_ml == pytest.approx(
        60 * 0.8 * 1.2 * 3.0 / 1000, rel=1e-3
    )
    assert liver.mean == pytest.approx(ct[inside].mean(), rel=1e-6) and liver.sd == pytest.approx(
        ct[inside].std(), rel=1e-5
    )
    assert liver.mean_probability == pytest.approx(prob[0][inside].mean(), rel=1e-6)
    assert liver.unit == "HU" and liver.suv_max is None
    assert tumour.voxels == 0 and tumour.volume_ml == 0 and tumour.mean is None

    petct = Volume(np.stack([pet, ct]), affine, meta={"units": "SUVbw"})
    row = compute_statistics("c2", petct, ["liver"], masks[:1], prob[:1], "PETCT")[0]
    assert row.mean == pytest.approx(ct[inside].mean(), rel=1e-6) and row.unit == "HU"
    assert row.suv_max == pytest.approx(pet[inside].max()) and row.suv_mean == pytest.approx(
        pet[inside].mean(), rel=1e-6
    )
    pet_row = compute_statistics(
        "c3", Volume(pet[None], affine, meta={"units": "SUVbw"}), ["liver"], masks[:1], prob[:1], "PET"
    )[0]
    assert pet_row.unit == "SUVbw" and pet_row.suv_mean == pytest.approx(pet_row.mean)

    path = write_statistics(tmp_path / "statistics.csv", [*rows, row])
    with path.open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == [
        "case",
        "target",
        "voxels",
        "volume_ml",
        "mean",
        "sd",
        "unit",
        "suv_max",
        "suv_mean",
        "mean_probability",
    ]
    assert float(table[0]["volume_ml"]) == pytest.approx(
        int(table[0]["voxels"]) * voxel_volume_ml(affine), rel=1e-3
    )
    assert table[1]["mean"] == "" and table[2]["suv_max"] != ""
