from __future__ import annotations

import os
import pickle

import pytest
import torch

from duplus.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from duplus.errors import CheckpointError


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (os.system, ("echo pwned > /tmp/duplus_pwned",))


def test_round_trip_weights_only(tmp_path):
    path = save_checkpoint(
        tmp_path / "c.pt", {"model": {"w": torch.ones(3)}, "step": 7, "rng": capture_rng_state()}
    )
    data = load_checkpoint(path)
    assert data["step"] == 7
    assert torch.equal(data["model"]["w"], torch.ones(3))
    assert data["format"] == "duplus-checkpoint"


def test_rng_state_restores_same_stream(tmp_path):
    state = capture_rng_state()
    a = torch.rand(4)
    save_checkpoint(tmp_path / "c.pt", {"rng": state})
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(4), a)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "duplus-checkpoint", "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled code"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/duplus_pwned")


@pytest.mark.parametrize(
    "writer",
    [
        lambda p: torch.save({"state_dict": {"w": torch.ones(1)}}, p),  # someone else's checkpoint
        lambda p: p.write_bytes(b"not a checkpoint at all"),
        lambda p: p.write_bytes(pickle.dumps([1, 2, 3])),
    ],
)
def test_foreign_files_are_refused(tmp_path, writer):
    path = tmp_path / "x.pt"
    writer(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind
