"""Error types. Every error a user can cause is a :class:`DuplusError` whose message is one line
naming the offending file (or option) and the problem; the CLI prints it and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class DuplusError(Exception):
    """Base class of the errors the CLI reports as one line, without a traceback."""


class InputError(DuplusError):
    """Bad input data: ``InputError(path, problem)`` renders as ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ConfigError(DuplusError):
    """An invalid configuration file or option."""


class CheckpointError(InputError):
    """A checkpoint that is not a DuPLUS checkpoint, or does not fit the requested model."""
