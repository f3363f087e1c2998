"""Dataset specs: MSD and nnU-Net v2 dataset.json, YAML specs, folders; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from duplus.data.specs import compute_target_values, load_dataset_spec
from duplus.errors import InputError


def _nii(path: Path, value: float = 0.0, shape: tuple[int, ...] = (4, 4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)), str(path))
    return path


def _msd(root: Path, n: int = 2, **extra: object) -> Path:
    """An MSD task folder exactly as the Decathlon ships it (plus our optional 'region')."""
    training = []
    for i in range(n):
        _nii(root / "imagesTr" / f"liver_{i}.nii.gz")
        _nii(root / "labelsTr" / f"liver_{i}.nii.gz")
        training.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
    _nii(root / "imagesTs" / "liver_9.nii.gz")
    meta = {
        "name": "LiverPhantom",
        "description": "test",
        "reference": "nobody",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": n,
        "numTest": 1,
        "training": training,
        "test": ["./imagesTs/liver_9.nii.gz"],
        **extra,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root / "dataset.json"


def test_msd_dataset_json(tmp_path: Path) -> None:
    path = _msd(tmp_path / "Task03_Liver", region="abdomen")
    spec = load_dataset_spec(path)
    assert spec.name == "LiverPhantom" and spec.modality == "CT" and spec.region == "abdomen"
    # "cancer" is generic: the registry entry for Task03_Liver names it
    assert spec.labels == {1: "liver", 2: "liver tumour"}
    assert spec.targets == ["liver", "liver tumour"]
    assert spec.target_values == {"liver": [1, 2], "liver tumour": [2]}
    assert spec.t1_prompt == "A CT scan of the abdomen"
    assert [c.case_id for c in spec.training] == ["liver_0", "liver_1"]
    assert spec.training[0].images == [tmp_path / "Task03_Liver" / "imagesTr" / "liver_0.nii.gz"]
    assert spec.training[0].label == tmp_path / "Task03_Liver" / "labelsTr" / "liver_0.nii.gz"
    assert [c.case_id for c in spec.test] == ["liver_9"] and spec.test[0].label is None
    # the folder works too, and MONAI reads the very same file
    assert load_dataset_spec(path.parent).training == spec.training
    from monai.data import load_decathlon_datalist

    items = load_decathlon_datalist(path, data_list_key="training")
    assert [Path(i["image"]) for i in items] == [c.images[0] for c in spec.training]
    assert len(load_decathlon_datalist(path, data_list_key="test")) == 1


def test_region_from_argument_and_registry(tmp_path: Path) -> None:
    path = _msd(tmp_path / "Task03_Liver")  # no region in the file
    assert load_dataset_spec(path).region == "abdomen"  # registry: MSD Task03 Liver
    assert load_dataset_spec(path, region="upper abdomen").region == "upper abdomen"
    other = _msd(tmp_path / "Unknown", name="SomethingElse")
    with pytest.raises(InputError, match="region") as exc:
        load_dataset_spec(other)
    assert str(exc.value).startswith(str(other))
    assert load_dataset_spec(other, region="pelvis", modality="MR").modality == "MRI"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": None}, "missing required field 'labels'"),
        ({"training": None}, "missing required field 'training'"),
        ({"labels": {"0": "background"}}, "no foreground labels"),
        ({"labels": {"0": "background", "1": ""}}, "empty name"),
        ({"labels": {"0": "background", "x": "liver"}}, "not an integer"),
        ({"modality": {"0": "Ultrasound"}}, "unknown modality 'Ultrasound'"),
        (
            {"training": [{"image": "../outside.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]},
            "outside the dataset",
        ),
        (
            {"training": [{"image": "/etc/passwd", "label": "./labelsTr/liver_0.nii.gz"}]},
            "outside the dataset",
        ),
        (
            {"training": [{"image": "./imagesTr/nope.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]},
            "not found",
        ),
        ({"training": [{"image": "./imagesTr/liver_0.nii.gz"}]}, "'image' and 'label'"),
        (
            {
                "training": [
                    {"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"},
                    {"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_1.nii.gz"},
                ]
            },
            "duplicate case id 'liver_0'",
        ),
    ],
)
def test_msd_errors_name_the_file(tmp_path: Path, change: dict, message: str) -> None:
    root = tmp_path / "ds"
    path = _msd(root, region="abdomen")
    _nii(tmp_path / "outside.nii.gz")
    meta = json.loads(path.read_text())
    for k, v in change.items():
        if v is None:
            del meta[k]
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=message) as exc:
        load_dataset_spec(path)
    assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value)


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        load_dataset_spec(path)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        load_dataset_spec(path)


def _nnunet(
    root: Path, channels: dict[str, str], labels: dict, cases: tuple[str, ...] = ("case_a", "case_b")
) -> Path:
    for case in cases:
        for ch in channels:
            _nii(root / "imagesTr" / f"{case}_{int(ch):04d}.nii.gz", value=float(ch))
        _nii(root / "labelsTr" / f"{case}.nii.gz")
    _nii(root / "imagesTs" / "case_t_0000.nii.gz")
    for ch in list(channels)[1:]:
        _nii(root / "imagesTs" / f"case_t_{int(ch):04d}.nii.gz")
    (root / "imagesTr" / ".DS_Store").write_text("junk")
    meta = {
        "channel_names": channels,
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": root.name,
        "region": "head and neck",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root / "dataset.json"


def test_nnunet_v2_dataset_json(tmp_path: Path) -> None:
    path = _nnunet(
        tmp_path / "Dataset500_HN", {"0": "CT", "1": "PET"}, {"background": 0, "GTVp": 1, "GTVn": [2]}
    )
    spec = load_dataset_spec(path)
    assert spec.modality == "PETCT" and spec.region == "head and neck"
    assert spec.labels == {1: "primary tumour", 2: "lymph node"}
    assert [c.case_id for c in spec.training] == ["case_a", "case_b"]
    # PET/CT channels are reordered to PET first, CT second
    assert [p.name for p in spec.training[0].images] == ["case_a_0001.nii.gz", "case_a_0000.nii.gz"]
    assert spec.training[0].label is not None and spec.training[0].label.name == "case_a.nii.gz"
    assert [c.case_id for c in spec.test] == ["case_t"] and len(spec.test[0].images) == 2


def test_nnunet_errors(tmp_path: Path) -> None:
    path = _nnunet(tmp_path / "Dataset501_X", {"0": "T2", "1": "ADC"}, {"background": 0, "tumour": [1, 2]})
    with pytest.raises(InputError, match="region-based label 'tumour'") as exc:
        load_dataset_spec(path)
    assert str(exc.value).startswith(str(path))
    path = _nnunet(tmp_path / "Dataset502_Y", {"0": "T2", "1": "ADC"}, {"background": 0, "prostate": 1})
    assert load_dataset_spec(path).modality == "MRI"
    (tmp_path / "Dataset502_Y" / "imagesTr" / "case_b_0001.nii.gz").unlink()
    with pytest.raises(InputError, match="lacks channel"):
        load_dataset_spec(path)
    path = _nnunet(tmp_path / "Dataset503_Z", {"0": "CT"}, {"background": 0, "liver": 1})
    (tmp_path / "Dataset503_Z" / "labelsTr" / "case_a.nii.gz").unlink()
    with pytest.raises(InputError, match="label file labelsTr/case_a.nii.gz not found"):
        load_dataset_spec(path)
    meta = json.loads(path.read_text())
    del meta["file_ending"]
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="missing required field 'file_ending'"):
        load_dataset_spec(path)


def test_yaml_spec(tmp_path: Path) -> None:
    root = tmp_path / "mydata"
    for case in ("p01", "p02"):
        _nii(root / "images" / f"{case}_0000.nii.gz")
        _nii(root / "labels" / f"{case}.nii.gz")
    _nii(root / "images" / "p03.nii")
    _nii(root / "labels" / "p03.nii.gz")
    _nii(root / "test" / "t1_0000.nii.gz")
    spec_path = root / "spec.yaml"
    spec_path.write_text(
        "name: MyData\nmodality: MR\nregion: abdomen\nlabels:\n  1: Liver\n  2: Kidney (L)\n"
        "images: images\nlabels_dir: labels\ntest_images: test/*.nii.gz\n"
    )
    spec = load_dataset_spec(spec_path)
    assert spec.name == "MyData" and spec.modality == "MRI"
    assert spec.labels == {1: "liver", 2: "left kidney"}
    assert [c.case_id for c in spec.training] == ["p01", "p02", "p03"]
    assert spec.training[0].images == [root / "images" / "p01_0000.nii.gz"]
    assert spec.training[2].label == root / "labels" / "p03.nii.gz"
    assert [c.case_id for c in spec.test] == ["t1"]


def test_yaml_errors(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _nii(root / "images" / "a.nii.gz")
    (root / "labels").mkdir()
    path = root / "spec.yml"
    path.write_text("modality: CT\nregion: abdomen\nlabels: {1: liver}\nimages: images\nlabels_dir: labels\n")
    with pytest.raises(InputError, match="case 'a'.*no label file") as exc:
        load_dataset_spec(path)
    assert str(exc.value).startswith(str(path))
    path.write_text("modality: CT\nregion: abdomen\nlabels: {1: liver}\nimages: images\n")
    with pytest.raises(InputError, match="missing required field 'labels_dir'"):
        load_dataset_spec(path)
    path.write_text("modality: CT\nregion: abdomen\nlabel: {1: liver}\nimages: images\nlabels_dir: labels\n")
    with pytest.raises(InputError, match="unknown key"):
        load_dataset_spec(path)


def test_unknown_path_kinds(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_dataset_spec(tmp_path / "missing.json")
    with pytest.raises(InputError, match="no dataset.json"):
        load_dataset_spec(tmp_path)
    txt = tmp_path / "spec.txt"
    txt.write_text("x")
    with pytest.raises(InputError, match="unsupported dataset spec"):
        load_dataset_spec(txt)


def test_hecktor_folder_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duplus.data.specs as specs
    from duplus.data.specs import DatasetSpec

    _nii(tmp_path / "imagesTr" / "CHUM-001__CT.nii.gz")
    seen = []

    def fake(folder: Path, *args: object, **kwargs: object) -> DatasetSpec:
        seen.append(Path(folder))
        return DatasetSpec("HECKTOR", "PETCT", "head and neck", {1: "primary tumour"}, Path(folder))

    monkeypatch.setattr(specs, "read_hecktor_spec", fake)
    assert load_dataset_spec(tmp_path).modality == "PETCT" and seen == [tmp_path]


def test_compute_target_values() -> None:
    assert compute_target_values({1: "kidney", 2: "kidney tumour", 3: "kidney cyst"}) == {
        "kidney": [1, 2, 3],
        "kidney tumour": [2],
        "kidney cyst": [3],
    }
    assert compute_target_values({1: "hepatic vessel", 2: "liver tumour"}) == {
        "hepatic vessel": [1],
        "liver tumour": [2],
    }


@pytest.mark.parametrize(
    ("folder", "labels", "expected"),
    [
        ("Task08_HepaticVessel", {"1": "Vessel", "2": "Tumour"}, {1: "hepatic vessel", 2: "liver tumour"}),
        (
            "Task04_Hippocampus",
            {"1": "Anterior", "2": "Posterior"},
            {1: "anterior hippocampus", 2: "posterior hippocampus"},
        ),
        ("Task03_Liver", {"1": "liver", "2": "vessel"}, {1: "liver", 2: "vessel"}),  # not the registry's kind
        ("MyOwnSet", {"1": "liver", "2": "cancer"}, {1: "liver", 2: "cancer"}),  # no registry entry
    ],
)
def test_generic_msd_names_follow_the_registry(
    tmp_path: Path, folder: str, labels: dict, expected: dict
) -> None:
    path = _msd(tmp_path / folder, region="abdomen", name=folder, labels={"0": "background", **labels})
    assert load_dataset_spec(path).labels == expected
