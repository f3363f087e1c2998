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


def _file_mode(path: Path) -> int:
    """The permission bits a new file at ``path`` gets: those of the file it replaces, else
    ``0o666`` less the umask (``mkstemp`` alone would leave ``0o600``)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    On any exception (including ``OSError`` for a full disk) the temporary file is removed and the
    destination is left untouched; an ``OSError`` without a file name gets ``path`` as its
    ``filename``, so the error names the file. The suffix of the temporary file matches ``path`` so
    writers that look at the extension (nibabel, numpy) keep working. The new file gets the
    permissions of the file it replaces (a new file: ``0o666`` less the umask).
    """
    path = Path(path)
    check_writable_folder(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(path.parent, f"cannot create output folder ({exc.strerror or exc})") from exc
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise


def check_writable_folder(folder: str | Path) -> None:
    """Raise :class:`InputError` unless ``folder`` is, or can be created as, a writable folder.

    Checks the folder itself or, when it does not exist yet, its nearest existing parent: that must
    be a folder (not a file) and writable. Call it before any work, so a run that cannot write its
    outputs fails at once instead of after hours of computing.
    """
    folder = Path(folder)
    probe = folder.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        if probe == folder.absolute():
            raise InputError(folder, "output folder is an existing file, not a folder")
        raise InputError(folder, f"cannot create the output folder: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(probe, "output folder is not writable")


@contextlib.contextmanager
def removing_new_folders(folder: str | Path) -> Iterator[None]:
    """On an exception, remove the folders on the way to ``folder`` that did not exist when the
    block started and are still empty, so a failed command leaves no empty output folders."""
    new: list[Path] = []
    probe = Path(folder).absolute()
    while not probe.exists() and probe.parent != probe:
        new.append(probe)
        probe = probe.parent
    try:
        yield
    except BaseException:
        for d in new:  # deepest first
            try:
                d.rmdir()
            except OSError:  # not empty, or never created
                if d.exists():
                    break
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
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
