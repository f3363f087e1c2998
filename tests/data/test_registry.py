"""The dataset registry: consistent label maps, canonical names, lookup."""

from __future__ import annotations

import pytest

from duplus.data.label_space import canonical_target
from duplus.data.registry import DATASET_REGISTRY, find_registered, get_registered
from duplus.errors import ConfigError
from duplus.vocab import MODALITIES, t1_prompt


@pytest.mark.parametrize("name", list(DATASET_REGISTRY))
def test_entry_is_consistent(name: str) -> None:
    d = DATASET_REGISTRY[name]
    assert d.name == name
    assert d.modality in MODALITIES
    assert len(d.labels) == d.num_classes
    assert sorted(d.labels) == list(range(1, d.num_classes + 1))
    assert len(set(d.labels.values())) == d.num_classes
    for target in d.labels.values():
        assert canonical_target(target) == target, target
    assert d.citation and d.role and d.region
    assert t1_prompt(d.modality, d.region).startswith("A ")


def test_paper_datasets_have_published_class_counts() -> None:
    counts = {
        "StructSeg-HaN": 22,
        "StructSeg-Thorax": 6,
        "AMOS-CT": 15,
        "AMOS-MRI": 13,
        "BTCV": 13,
        "LiTS": 2,
        "KiTS19": 2,
        "M&Ms": 3,
        "BrainStructure-T1": 3,
        "AutoPET": 1,
        "CHAOS-MRI": 4,
        "HECKTOR2022": 2,
    }
    for name, n in counts.items():
        assert DATASET_REGISTRY[name].num_classes == n, name
    assert DATASET_REGISTRY["BTCV"].labels[1] == "spleen"
    assert DATASET_REGISTRY["BTCV"].labels[6] == "liver"
    assert DATASET_REGISTRY["AMOS-CT"].labels[15] == "prostate uterus"
    assert DATASET_REGISTRY["HECKTOR2022"].labels == {1: "primary tumour", 2: "lymph node"}
    assert DATASET_REGISTRY["HECKTOR2022"].role.startswith("prognosis")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("btcv", "BTCV"),
        ("BCV", "BTCV"),
        ("amos", "AMOS-CT"),
        ("AMOS MR", "AMOS-MRI"),
        ("Task03_Liver", "MSD-Task03-Liver"),
        ("Dataset009_Spleen", "MSD-Task09-Spleen"),
        ("mnms", "M&Ms"),
        ("hecktor 2022", "HECKTOR2022"),
        ("kits", "KiTS19"),
    ],
)
def test_lookup(query: str, expected: str) -> None:
    assert get_registered(query).name == expected


def test_unknown_name() -> None:
    assert find_registered("no such set") is None
    with pytest.raises(ConfigError, match="did you mean BTCV"):
        get_registered("BTCVX")


@pytest.mark.parametrize(
    ("name", "lesion"),
    [
        ("liver", False),
        ("left kidney", False),
        ("white matter", False),
        ("liver tumor", True),
        ("GTVn", True),
        ("primary tumour", True),
        ("lung nodule", True),
    ],
)
def test_is_lesion(name: str, lesion: bool) -> None:
    from duplus.data.label_space import is_lesion

    assert is_lesion(name) is lesion
