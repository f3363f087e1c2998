"""The demo's brain section: measured when a brain-tissue model is installed, else says it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from duplus.demo.brain import BRAIN_MODEL, brain_experiment
from duplus.reporting.demo_report import brain_section


def test_without_an_installed_brain_model_the_section_says_not_packaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUPLUS_HOME", str(tmp_path / "home"))
    result = brain_experiment(tmp_path / "figures", name="no-such-brain-model")
    assert result["available"] is False and "no-such-brain-model" in result["reason"]
    assert not (tmp_path / "figures").exists()
    text = "\n".join(brain_section(result))
    assert "not packaged" in text and "Dice" not in text


def test_a_measured_brain_model_is_reported_with_its_dice_and_overlay() -> None:
    measured = {
        "model": BRAIN_MODEL,
        "available": True,
        "card": {"name": BRAIN_MODEL, "step": 4000},
        "dice": {"grey matter": 0.8, "white matter": 0.875, "cerebrospinal fluid": 0.5},
        "outside_outline": 12,
        "mask_voxels": 2000,
        "figure": "brain_mni152.png",
    }
    text = "\n".join(brain_section(measured))
    assert "white matter 0.875" in text and "step 4000" in text
    assert "12 of 2000" in text and "figures/brain_mni152.png" in text
    assert "not packaged" not in text
