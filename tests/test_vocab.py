"""The shared vocabulary: modalities, channels, the T1 template, the position grid."""

from __future__ import annotations

import numpy as np
import pytest

from duplus.errors import InputError
from duplus.vocab import (
    IN_CHANNELS,
    MODALITIES,
    MODALITY_CHANNELS,
    PETCT_CHANNEL_ORDER,
    modality_index,
    normalise_modality,
    position_grid,
    t1_prompt,
)


def test_normalise_modality() -> None:
    cases = {
        "ct": "CT",
        "CT": "CT",
        "MR": "MRI",
        "mri": "MRI",
        "T1": "MRI",
        "T2": "MRI",
        "FLAIR": "MRI",
        "t1w": "MRI",
        "PT": "PET",
        "PET": "PET",
        "PET/CT": "PETCT",
        "PETCT": "PETCT",
        "pet-ct": "PETCT",
    }
    for raw, want in cases.items():
        assert normalise_modality(raw) == want
    with pytest.raises(
        InputError, match=r"^x\.json: unknown modality 'US'; expected one of CT, MRI, PET, PETCT$"
    ):
        normalise_modality("US", "x.json")
    assert MODALITIES == ("CT", "MRI", "PET", "PETCT")


def test_t1_prompt_takes_the_normalised_modality() -> None:
    assert t1_prompt("CT", "abdomen") == "A CT scan of the abdomen"
    assert t1_prompt("PETCT", "head and neck") == "A PET/CT scan of the head and neck"
    assert t1_prompt(normalise_modality("T1"), "brain") == "A MRI scan of the brain"
    with pytest.raises(ValueError, match="not normalised"):
        t1_prompt("ct", "abdomen")


def test_position_grid_spans_minus_one_to_one() -> None:
    grid = position_grid((4, 2, 3))
    assert grid.shape == (3, 4, 2, 3)
    np.testing.assert_allclose(grid[0, :, 0, 0], [-0.75, -0.25, 0.25, 0.75])
    # a box's slice equals the whole grid's slice at the same place, also past the edge
    np.testing.assert_allclose(position_grid((4, 2, 3), (1, 0, 0), (2, 2, 3)), grid[:, 1:3])
    assert position_grid((4, 2, 3), (-1, 0, 0), (1, 1, 1))[0, 0, 0, 0] == pytest.approx(-1.25)


def test_channels_follow_the_modalities() -> None:
    assert IN_CHANNELS == 2 and MODALITY_CHANNELS["PETCT"] == len(PETCT_CHANNEL_ORDER) == 2
    assert [modality_index(m) for m in MODALITIES] == [0, 1, 2, 3]
