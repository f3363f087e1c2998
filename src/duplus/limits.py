"""Resource bounds checked before anything large is allocated.

A header, a resampling plan or a checkpoint's metadata can ask for more memory than the machine
has (a 24^3 image at 500 mm spacing resampled to 1.5 mm is 8000^3 voxels; a 1 MB gzip file can
hold 1 GiB of zeros). Each such size is checked here first and refused with one line naming the
file and the size. ``DUPLUS_MAX_VOXELS`` raises or lowers the bound.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from duplus.errors import ConfigError, InputError

DEFAULT_MAX_VOXELS = 2**29
"""536,870,912 voxels: a 512 x 512 x 2048 CT (2 GiB as float32) passes, a gzip bomb does not."""

DEFAULT_MAX_PARAMETERS = 2 * 10**8
"""Parameters a checkpoint's model description may ask for (the ``base`` preset has ~30 M)."""


def max_voxels() -> int:
    """The voxel bound: ``$DUPLUS_MAX_VOXELS`` or :data:`DEFAULT_MAX_VOXELS`."""
    raw = os.environ.get("DUPLUS_MAX_VOXELS")
    if raw is None or not raw.strip():
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(raw))
    except ValueError as exc:
        raise ConfigError(f"DUPLUS_MAX_VOXELS={raw!r}: expected a number of voxels") from exc
    if value <= 0:
        raise ConfigError(f"DUPLUS_MAX_VOXELS={raw!r}: must be positive")
    return value


def check_voxels(shape: Sequence[int], source: str | Path | None, what: str) -> None:
    """Refuse a grid of more than :func:`max_voxels` voxels (channels count too).

    Args:
        shape: the grid (any number of axes).
        source: the file (or option) the grid comes from, named in the error.
        what: what the grid is, e.g. "image", "grid resampled to 1.5 mm".
    """
    n = math.prod(int(s) for s in shape)
    limit = max_voxels()
    if n > limit:
        dims = " x ".join(str(int(s)) for s in shape)
        raise InputError(
            source,
            f"{what} of {dims} = {n:,} voxels exceeds the limit of {limit:,} (set DUPLUS_MAX_VOXELS to raise it)",
        )
