"""Choosing the torch device: one small module that training, inference and prognosis all use."""

from __future__ import annotations

import torch

from duplus.errors import InputError


def mps_available() -> bool:
    """Whether Apple's Metal (MPS) backend can run here."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; any other name is used as given.

    Raises:
        InputError: a name torch does not know, or a CUDA/MPS device this machine lacks.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InputError("--device", f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"{name}: no CUDA device is available here; use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError("--device", f"{name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not mps_available():
        raise InputError("--device", f"{name}: Apple's MPS backend is not available here; use auto or cpu")
    return device
