"""Atomic file writing: every output, cache entry and checkpoint is written to a temporary file in
the destination folder and renamed into place, so a crash never leaves a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from duplus.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    On any exception (including ``OSError`` for a full disk) the temporary file is removed and the
    destination is left untouched. The suffix of the temporary file matches ``path`` so writers that
    look at the extension (nibabel, numpy) keep working.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(path.parent, f"cannot create output folder ({exc.strerror or exc})") from exc
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    if not os.access(path.parent, os.W_OK):
        raise InputError(path.parent, "output folder is not writable")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising :class:`InputError` naming the file when it is missing or invalid."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise InputError(path, "file not found") from exc
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, "not a UTF-8 text file") from exc


def ensure_distinct_output(output: str | Path, *inputs: str | Path) -> None:
    """Refuse an output location that could overwrite input data.

    For a folder input the output may be neither that folder nor inside it; for a file input the
    output may be neither the file nor the folder holding it.
    """
    out = Path(output).resolve()
    for src in inputs:
        src_p = Path(src).resolve()
        if src_p.is_dir():
            if out == src_p or src_p in out.parents:
                raise InputError(output, f"output must not be the input folder {src} or lie inside it")
        elif out in (src_p, src_p.parent):
            raise InputError(output, f"output must differ from the input {src} and its folder")
