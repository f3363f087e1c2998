"""Tests of the SynthSeg-style generator: random appearance, MNI152 head maps, cases and dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from duplus.cli import main
from duplus.data.phantoms import (
    HEAD_LABELS,
    SYNTH_HEAD_DATASET,
    HeadMaps,
    build_head_maps,
    load_mni152_head_maps,
    make_phantom_case,
    make_synth_head,
    make_synth_head_case,
)
from duplus.data.phantoms.contrast import render_random_appearance, simulate_slice_thickness
from duplus.data.phantoms.head_maps import CSF, DIPLOE, FAT, GM, SCALP, SKULL, WM, draw_head_labels
from duplus.data.specs import load_dataset_spec
from duplus.errors import ConfigError

SMALL_FOV = (150.0, 150.0, 150.0)
SMALL_SPACING = 5.0  # 30^3 output voxels


@pytest.fixture(scope="module")
def toy_maps() -> HeadMaps:
    """A drawn brain on a 3 mm grid: WM core, GM rind, two ventricles (both maps low), 32^3."""
    n, spacing = 32, 3.0
    xyz = (np.indices((n, n, n), dtype=np.float64) - (n - 1) / 2.0) * spacing
    r = np.sqrt((xyz[0] / 36.0) ** 2 + (xyz[1] / 44.0) ** 2 + (xyz[2] / 34.0) ** 2)
    ventricle = np.sqrt((np.abs(xyz[0]) - 8.0) ** 2 + xyz[1] ** 2 / 4.0 + xyz[2] ** 2) < 7.0
    p_wm = np.clip(1.6 - 2.0 * r, 0.0, 1.0) * ~ventricle
    p_gm = np.clip(1.0 - np.abs(r - 0.85) * 5.0, 0.0, 1.0) * ~ventricle
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2.0 * spacing
    return build_head_maps(p_gm, p_wm, r < 1.0, affine)


def _toy_case(seed: int, maps: HeadMaps):
    return make_synth_head_case(seed, maps, spacing=SMALL_SPACING, fov_mm=SMALL_FOV)


# ------------------------------------------------------------------------------- head labels
def test_head_maps_derive_csf_inside_the_outline(toy_maps: HeadMaps) -> None:
    inside = toy_maps.distance_mm == 0
    assert set(np.unique(toy_maps.tissue[inside])) == {WM, GM, CSF}
    assert not toy_maps.tissue[~inside].any()
    centre_ijk = np.round(np.linalg.inv(toy_maps.affine) @ np.array([8.0, 0.0, 0.0, 1.0]))[:3].astype(int)
    assert toy_maps.tissue[tuple(centre_ijk)] == CSF  # a ventricle: neither tissue map likely


def test_non_brain_shells_lie_outside_the_brain_outline(toy_maps: HeadMaps) -> None:
    label, thickness = draw_head_labels(toy_maps, np.random.default_rng(0), p_skull_stripped=0.0)
    assert not thickness["skull_stripped"]
    outside = toy_maps.distance_mm > 0
    for value in (SKULL, DIPLOE, SCALP, FAT):
        assert label[value == label].size > 0
        assert outside[label == value].all(), HEAD_LABELS[value]
    assert not outside[np.isin(label, (WM, GM))].any()
    # nesting, outwards: subarachnoid CSF, skull (with the diploe inside it), fat
    d = toy_maps.distance_mm
    median = {v: float(np.median(d[(label == v) & outside])) for v in (CSF, SKULL, DIPLOE, FAT)}
    assert median[CSF] < median[DIPLOE] < median[FAT]
    assert median[CSF] < median[SKULL] < median[FAT]
    assert d[label == SKULL].min() >= 0.85 * thickness["csf_mm"] - 1e-3


def test_a_skull_stripped_case_has_nothing_outside_the_brain_outline(toy_maps: HeadMaps) -> None:
    label, facts = draw_head_labels(toy_maps, np.random.default_rng(0), p_skull_stripped=1.0)
    assert facts["skull_stripped"]
    assert not label[toy_maps.distance_mm > 0].any()
    np.testing.assert_array_equal(
        label[toy_maps.distance_mm == 0], toy_maps.tissue[toy_maps.distance_mm == 0]
    )


# ------------------------------------------------------------------------------- cases
def test_synth_case_is_deterministic_for_a_seed(toy_maps: HeadMaps) -> None:
    a, b, c = _toy_case(5, toy_maps), _toy_case(5, toy_maps), _toy_case(6, toy_maps)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.label, c.label)


def test_synth_case_has_every_label_and_the_brain_is_enclosed(toy_maps: HeadMaps) -> None:
    stripped = []
    for seed in range(12):
        case = _toy_case(seed, toy_maps)
        assert case.image.dtype == np.float32 and case.label.dtype == np.int16
        assert case.image.shape == case.label.shape
        stripped.append(case.info["shells_mm"]["skull_stripped"])
        if stripped[-1]:
            assert set(np.unique(case.label)) == {0, WM, GM, CSF}
            continue
        assert set(np.unique(case.label)) == {0, *HEAD_LABELS}
        # the background that reaches the grid's border never touches the brain
        outer, _ = ndimage.label(case.label == 0)
        border = np.unique(np.concatenate([outer[[0, -1]].ravel(), outer[:, [0, -1]].ravel()]))
        reach = ndimage.binary_dilation(np.isin(outer, border[border > 0]))
        assert not (reach & np.isin(case.label, (WM, GM))).any()
    assert 0 < sum(stripped) < 6  # about one case in ten is skull-stripped


def test_synth_output_grids_vary_in_orientation(toy_maps: HeadMaps) -> None:
    codes = {nib.aff2axcodes(_toy_case(seed, toy_maps).affine) for seed in range(6)}
    assert len(codes) >= 3
    for seed in range(2):
        affine = _toy_case(seed, toy_maps).affine
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), SMALL_SPACING)


def test_intensity_per_label_varies_across_seeds(toy_maps: HeadMaps) -> None:
    means = []
    for seed in range(10):
        case = _toy_case(seed, toy_maps)
        means.append([case.image[case.label == v].mean() for v in (WM, GM, CSF)])
    wm, gm, csf = np.array(means).T
    assert (wm > gm).any() and (wm < gm).any()  # T1-like and T2-like orderings both occur
    assert (csf > wm).any() and (csf < wm).any()
    assert wm.std() > 0.05 and csf.std() > 0.05


def test_random_appearance_is_seeded_and_stays_in_unit_range() -> None:
    label = np.zeros((24, 24, 24), dtype=np.int16)
    label[6:18, 6:18, 6:18] = 1
    label[10:14, 10:14, 10:14] = 2
    a, facts = render_random_appearance(label, (1.0, 1.0, 1.0), np.random.default_rng(0), num_labels=3)
    b, _ = render_random_appearance(label, (1.0, 1.0, 1.0), np.random.default_rng(0), num_labels=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    assert 1.0 <= facts["slice_thickness_mm"] <= 6.0 and facts["slice_axis"] in (0, 1, 2)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_thickness_lowers_resolution_along_its_axis_only(axis: int) -> None:
    image = np.random.default_rng(0).standard_normal((32, 32, 32)).astype(np.float32)
    thick = simulate_slice_thickness(image, (1.0, 1.0, 1.0), axis, 5.0)
    assert thick.shape == image.shape

    def roughness(a: np.ndarray, ax: int) -> float:
        return float(np.abs(np.diff(a, axis=ax)).mean())

    others = [ax for ax in range(3) if ax != axis]
    # along the slice axis the image is nearly flat; across it, neighbours still differ
    assert roughness(thick, axis) < 0.2 * min(roughness(thick, ax) for ax in others)
    # fewer independent samples along the axis: its spectrum beyond 1/(2 * 5 mm) is nearly empty
    spectrum = np.abs(np.fft.rfft(thick, axis=axis)) ** 2
    high = np.take(spectrum, range(4, spectrum.shape[axis]), axis=axis).sum()
    assert high < 0.05 * spectrum.sum()
    # a slice no thicker than the voxel only blurs a little
    thin = simulate_slice_thickness(image, (2.0, 2.0, 2.0), axis, 1.0)
    assert roughness(thin, axis) > 0.5 * roughness(image, axis)


# ------------------------------------------------------------------------------- phantoms' MRI
def test_phantom_mri_random_appearance() -> None:
    fixed = make_phantom_case(4, "head", "MRI", shape=32)
    a = make_phantom_case(4, "head", "MRI", shape=32, mri_appearance="random")
    b = make_phantom_case(4, "head", "MRI", shape=32, mri_appearance="random")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, fixed.label)  # the same anatomy, another appearance
    assert not np.allclose(a.image / a.image.max(), fixed.image / fixed.image.max(), atol=0.05)
    assert "mri_contrast" in a.info["appearance"]
    ct = make_phantom_case(4, "head", "CT", shape=32, mri_appearance="random")
    np.testing.assert_array_equal(ct.image, make_phantom_case(4, "head", "CT", shape=32).image)
    orders = set()
    for seed in range(8):
        case = make_phantom_case(seed, "head", "MRI", shape=32, mri_appearance="random")
        orders.add(case.image[case.label == 8].mean() > case.image[case.label == 9].mean())  # WM > GM
    assert orders == {True, False}
    with pytest.raises(ConfigError, match="MRI appearance"):
        make_phantom_case(4, "head", "MRI", shape=32, mri_appearance="wild")


# ------------------------------------------------------------------------------- dataset
def test_written_dataset_reads_back_through_the_msd_reader(tmp_path: Path, toy_maps: HeadMaps) -> None:
    root = make_synth_head(
        tmp_path / "out", cases=2, test_cases=1, spacing=SMALL_SPACING, fov_mm=SMALL_FOV,
        maps=toy_maps, progress=False,
    )  # fmt: skip
    assert root == tmp_path / "out" / SYNTH_HEAD_DATASET.task
    spec = load_dataset_spec(root)
    assert spec.modality == "MRI" and spec.region == "head"
    assert spec.labels == HEAD_LABELS
    assert len(spec.training) == 2 and len(spec.test) == 1
    case = _toy_case(int(_index(tmp_path / "out")["synthhead_001.nii.gz"]["seed"]), toy_maps)
    img = nib.load(spec.training[0].images[0])
    lab = nib.load(spec.training[0].label)
    np.testing.assert_allclose(img.affine, case.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(lab.dataobj), case.label)
    np.testing.assert_allclose(img.get_fdata(dtype=np.float32), case.image)
    assert (root / "labelsTs" / "synthhead_003.nii.gz").is_file()


def _index(out: Path) -> dict:
    return json.loads((out / "synth.json").read_text())["cases"]


@pytest.mark.slow
def test_synth_files_do_not_depend_on_workers(tmp_path: Path, toy_maps: HeadMaps) -> None:
    kwargs = {"spacing": SMALL_SPACING, "fov_mm": SMALL_FOV, "maps": toy_maps, "progress": False}
    one = make_synth_head(tmp_path / "one", cases=2, test_cases=1, **kwargs)
    two = make_synth_head(tmp_path / "two", cases=2, test_cases=1, workers=2, **kwargs)
    files = sorted(p.relative_to(one) for p in one.rglob("*.nii.gz"))
    assert len(files) == 6
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_make_synth_head_refuses_an_existing_dataset(tmp_path: Path, toy_maps: HeadMaps) -> None:
    kwargs = {"spacing": SMALL_SPACING, "fov_mm": SMALL_FOV, "maps": toy_maps, "progress": False}
    make_synth_head(tmp_path, cases=1, test_cases=0, **kwargs)
    with pytest.raises(Exception, match="exists|overwrite"):
        make_synth_head(tmp_path, cases=1, test_cases=0, **kwargs)
    make_synth_head(tmp_path, cases=1, test_cases=0, overwrite=True, **kwargs)


def test_missing_nilearn_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nilearn", None)
    with pytest.raises(ConfigError, match=r"nilearn.*duplus\[synth\]"):
        load_mni152_head_maps.__wrapped__(4)


# ------------------------------------------------------------------------------- real MNI152 maps
def test_mni152_head_maps_hold_a_real_brain() -> None:
    pytest.importorskip("nilearn")
    maps = load_mni152_head_maps(4)
    counts = np.bincount(maps.tissue.ravel(), minlength=4) * 4.0**3 / 1000.0  # ml
    # MNI space is larger than an average head: about 1.7 l of brain, more grey than white matter
    assert 1200 < counts[WM] + counts[GM] < 2200 and 0.4 < counts[WM] / counts[GM] < 0.9
    assert 50 < counts[CSF] < 0.5 * counts[GM]
    label, _ = draw_head_labels(maps, np.random.default_rng(0), p_skull_stripped=0.0)
    assert set(np.unique(label)) == {0, *HEAD_LABELS}
    assert (maps.distance_mm[label == SKULL] > 0).all()


def test_cli_writes_the_mni152_dataset_only_inside_its_folder(tmp_path: Path) -> None:
    pytest.importorskip("nilearn")
    (tmp_path / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    args = ["make-phantoms", str(out), "--anatomy", "mni152", "--cases", "1", "--test-cases", "1"]
    assert main([*args, "--spacing", "8", "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "out"]
    assert (tmp_path / "keep.txt").read_text() == "mine"
    spec = load_dataset_spec(out / SYNTH_HEAD_DATASET.task)
    assert spec.labels == HEAD_LABELS and len(spec.training) == 1
    shape = nib.load(spec.training[0].images[0]).shape
    assert sorted(shape) == [24, 24, 28]  # 192 x 224 x 192 mm at 8 mm, axes in a random order
    assert main([*args, "--spacing", "8", "-q", "--cohort", "2"]) == 2  # phantom-only options
    assert main([*args, "--spacing", "8", "-q", "--mri-appearance", "random"]) == 2
    assert main(["make-phantoms", str(tmp_path / "p"), "--spacing", "2"]) == 2  # mni152-only option
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "out"]


def test_cli_mri_appearance_random_changes_only_the_mri(tmp_path: Path) -> None:
    args = ["make-phantoms", "--cases", "1", "--test-cases", "0", "--shape", "16", "-q"]
    assert main([*args[:1], str(tmp_path / "fixed"), *args[1:]]) == 0
    assert main([*args[:1], str(tmp_path / "random"), *args[1:], "--mri-appearance", "random"]) == 0
    index = json.loads((tmp_path / "random" / "phantoms.json").read_text())
    assert index["mri_appearance"] == "random"
    assert "mri_appearance" not in json.loads((tmp_path / "fixed" / "phantoms.json").read_text())
    for entry in index["datasets"]:
        name = f"{entry['path']}/imagesTr/{next(iter(entry['cases']))}"
        a, b = (np.asarray(nib.load(tmp_path / run / name).dataobj) for run in ("fixed", "random"))
        assert np.array_equal(a, b) == (entry["modality"] != "MRI"), name
