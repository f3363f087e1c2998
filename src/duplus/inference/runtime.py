"""How a volume's windows run: numeric precision, memory layout, overlap and which windows run.

Two paths, picked with one flag (``fast``, ``duplus segment --fast``):

* **default**: float32 on the CPU, contiguous layout, overlap 0.5, every window of the body crop;
  on CUDA, bfloat16 autocast (float16 where the GPU lacks bfloat16).
* **fast**: bfloat16 where the device computes it natively (CUDA; a CPU with AVX-512 BF16 or AMX),
  float32 elsewhere; channels-last layout; overlap 0.25; windows without a single body voxel are
  not run (they are air: their logits are a constant background).

On the CPU bfloat16 means converting the network's weights (a cached copy) and every window,
not autocast: with autocast the normalisations and activations convert back and forth, and in
the contiguous layout oneDNN's bfloat16 convolutions are no faster than float32 ones (see
``docs/PERFORMANCE.md``). The stitched logits are always float32.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from duplus.errors import InputError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_OVERLAP = 0.5
FAST_OVERLAP = 0.25


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX), read from
    ``/proc/cpuinfo``; elsewhere PyTorch's own check (oneDNN's), which is looser."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(check()) if check is not None else False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class RunSettings:
    """How the windows of a volume run.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``fp16``.
        cast: ``none`` (float32), ``autocast`` (CUDA/MPS) or ``weights`` (a converted copy of the
            network; the CPU).
        channels_last: run the network in the ``channels_last_3d`` layout.
        overlap: sliding-window overlap.
        skip_air: do not run windows without a body voxel.
        fast: the settings of the fast path.
    """

    precision: str = "fp32"
    cast: str = "none"
    channels_last: bool = False
    overlap: float = DEFAULT_OVERLAP
    skip_air: bool = False
    fast: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def describe(self) -> dict[str, object]:
        """JSON-friendly summary (logged and kept with the prediction)."""
        return {
            "fast": self.fast,
            "precision": self.precision,
            "cast": self.cast,
            "channels_last": self.channels_last,
            "overlap": self.overlap,
            "skip_air_windows": self.skip_air,
        }


def resolve_run_settings(
    device: torch.device, *, fast: bool = False, overlap: float | None = None, precision: str = "auto"
) -> RunSettings:
    """The settings for ``device``: the default path, or the fast one.

    Args:
        device: where the network runs.
        fast: the fast path (see the module docstring).
        overlap: sliding-window overlap; ``None`` takes the path's own (0.5, fast 0.25).
        precision: ``auto`` (the path's choice), ``fp32``, ``bf16`` or ``fp16``.

    Raises:
        InputError: an unknown precision, or ``fp16`` on the CPU (no half-precision convolutions).
    """
    if precision not in PRECISIONS:
        raise InputError(
            "--precision", f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    cpu = device.type == "cpu"
    if precision == "auto":
        if cpu:
            precision = "bf16" if fast and cpu_has_native_bf16() else "fp32"
        elif device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp16" if fast else "fp32"
    if cpu and precision == "fp16":
        raise InputError("--precision", "fp16 needs a GPU; on the CPU use bf16 or fp32")
    if cpu and precision == "bf16" and not cpu_has_native_bf16():
        logger.warning("this CPU has no native bfloat16 (AVX-512 BF16 / AMX): bf16 will be slow")
    cast = "none" if precision == "fp32" else ("weights" if cpu else "autocast")
    return RunSettings(
        precision=precision,
        cast=cast,
        channels_last=fast,
        overlap=float(overlap) if overlap is not None else (FAST_OVERLAP if fast else DEFAULT_OVERLAP),
        skip_air=fast,
        fast=fast,
    )


def prepare_model(model: nn.Module, settings: RunSettings) -> nn.Module:
    """``model`` itself, or a converted copy for ``settings`` (bfloat16 weights on the CPU, the
    channels-last layout); the original is left as it is."""
    if settings.cast != "weights" and not settings.channels_last:
        return model
    out = copy.deepcopy(model)
    if settings.cast == "weights":
        out = out.to(dtype=settings.dtype)
    if settings.channels_last:
        out = out.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    return out.eval()


__all__ = [
    "DEFAULT_OVERLAP",
    "FAST_OVERLAP",
    "PRECISIONS",
    "RunSettings",
    "cpu_has_native_bf16",
    "prepare_model",
    "resolve_run_settings",
]
