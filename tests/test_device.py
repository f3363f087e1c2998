"""``--device``: auto picks CUDA, then Apple's MPS, then the CPU; bad names are input errors."""

from __future__ import annotations

import pytest
import torch

from duplus.device import select_device
from duplus.errors import InputError


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_order(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert select_device("auto").type == expected


def test_named_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("cpu") == torch.device("cpu")
    for name, words in (
        ("cuda", "CUDA is not available"),
        ("mps", "MPS backend"),
        ("tpu9", "unknown device"),
    ):
        with pytest.raises(InputError, match=words):
            select_device(name)
