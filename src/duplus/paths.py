"""Run, cache and data roots: from the config or ``DUPLUS_*`` environment variables, never machine paths."""

from __future__ import annotations

import os
from pathlib import Path

from duplus.errors import ConfigError


def cache_root(run_dir: Path | None = None, configured: str | Path | None = None) -> Path:
    """Where preprocessed cases are cached.

    Order: the config's ``cache_dir``, then ``$DUPLUS_CACHE``, then ``<run_dir>/cache``.
    """
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("DUPLUS_CACHE")
    if env:
        return Path(env).expanduser()
    if run_dir is None:
        raise ConfigError("no cache folder: pass --cache, set cache_dir in the config, or set DUPLUS_CACHE")
    return Path(run_dir) / "cache"


def resolve_relative(path: str | Path, base: Path) -> Path:
    """Resolve ``path`` against ``base`` (the folder of the config that names it) unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()
