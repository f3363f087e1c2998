"""Which code produced a result: the git commit of a checkout, for results files and reports."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_commit(where: str | Path = ".") -> str:
    """The short commit of the git checkout holding ``where``, with ``+dirty`` when tracked files
    differ from it; ``"unknown"`` outside a checkout or without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=where, check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


__all__ = ["code_commit"]
