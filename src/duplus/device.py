"""Which device a command runs on: one place for ``--device`` and the config's ``device``."""

from __future__ import annotations

import re

import torch

from duplus.errors import InputError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(name: str = "auto", *, option: str = "--device") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit name must be available.

    Args:
        name: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
        option: how the setting is called in errors (``--device``, ``device`` in a YAML).

    Raises:
        InputError: an unknown name, or a device this machine does not have.
    """
    text = str(name).strip().lower()
    if not _DEVICE.match(text):
        raise InputError(option, f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(option, f"{name!r}: CUDA is not available on this machine (use cpu or auto)")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise InputError(option, f"{name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if text == "mps" and not _mps_available():
        raise InputError(option, "'mps': Apple's MPS backend is not available on this machine")
    return torch.device(text)
