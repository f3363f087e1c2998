"""Writing outputs safely: atomically, and only where a command may write.

Two promises live here, in one place:

* **Atomic writes.** Every output, cache entry and checkpoint is written to a temporary file in
  the destination folder and renamed into place, so a crash never leaves a half-written file.
* **The write rule.** A command writes only inside its output folder(s), and never deletes or
  replaces a file or folder it did not create. A command opens an :class:`OutputFolder`; while it
  is open, every :func:`atomic_path` write is checked against it: a path outside every open output
  folder is refused, and an existing file may be replaced only when this run created it or, with
  ``replace_owned`` (``--overwrite``, ``train --resume``, a cache), when an earlier ``duplus`` run
  wrote it, as the small manifest (``.duplus-manifest.json``) it keeps in the folder records.
  An output folder equal to or inside an input is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
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
    guard = _guard_for(path)
    check_writable_folder(path.parent)
    try:
        if guard is not None:
            guard.mkdir(path.parent)
        else:
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
        if guard is not None:
            guard.record(path)
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


# ---------------------------------------------------------------------- the write rule
MANIFEST_NAME = ".duplus-manifest.json"
MANIFEST_FORMAT = "duplus-output-manifest"
STAGING_PREFIX = ".duplus-staging-"

_OPEN_FOLDERS: contextvars.ContextVar[tuple[OutputFolder, ...]] = contextvars.ContextVar(
    "duplus_output_folders", default=()
)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _folders_holding(path: Path) -> list[OutputFolder]:
    target = path.absolute()
    return [
        f
        for f in _OPEN_FOLDERS.get()
        if f.pid == os.getpid() and _inside(target, f.root) and target != f.root
    ]


def _guard_for(path: Path) -> OutputFolder | None:
    """The open output folder that ``path`` may be written in, after checking the write rule;
    ``None`` when no command has an output folder open (library use)."""
    folders = tuple(f for f in _OPEN_FOLDERS.get() if f.pid == os.getpid())  # not a forked copy
    if not folders:
        return None
    target = path.absolute()
    for folder in reversed(folders):  # the innermost folder holding the path decides
        if _inside(target, folder.root):
            folder.check_write(target)
            return folder
    raise InputError(path, f"outside the output folder {folders[-1].root}; duplus writes only there")


class OutputFolder:
    """The folder a command writes into, and the rule it writes by.

    Use it as a context manager around the whole command; while it is open, :func:`atomic_path`
    (and every writer built on it) checks each write against it and records what it wrote in the
    folder's manifest. Folders it created are removed again if the command fails and they are
    still empty; staging folders a killed run left behind are removed when the folder is opened.

    Args:
        root: the output folder (created on first write).
        inputs: the command's input files and folders. ``root`` may be neither one of them nor
            inside one; it may contain them (nothing in it is replaced that duplus did not write).
        replace_owned: allow replacing or deleting files an earlier duplus run wrote here
            (``--overwrite``, ``train --resume``, a cache). Files duplus did not write are never
            replaced.
        name: what the folder is called in errors (e.g. ``--out``).

    Raises:
        InputError: ``root`` is, or lies inside, an input; it is a file; it is not writable; or
            its manifest is damaged.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        inputs: Iterable[str | Path] = (),
        replace_owned: bool = False,
        name: str = "output folder",
    ) -> None:
        self.root = Path(root).absolute()
        self.pid = os.getpid()
        self.name = name
        self.replace_owned = replace_owned
        check_not_inside_inputs(root, inputs)
        check_writable_folder(root)
        self.manifest_path = self.root / MANIFEST_NAME
        self.owned: set[str] = set()
        self.staging: set[str] = set()
        self.created: set[Path] = set()
        self._new_dirs: list[Path] = []  # the root and its missing parents, when they did not exist
        probe = self.root
        while not (probe.exists() or probe.is_symlink()) and probe.parent != probe:
            self._new_dirs.append(probe)
            probe = probe.parent
        self._token: contextvars.Token | None = None
        self._read_manifest()

    # ------------------------------------------------------------------ manifest
    def _read_manifest(self) -> None:
        if not self.manifest_path.is_file():
            return
        data = read_json(self.manifest_path)
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise InputError(
                self.manifest_path, "not a duplus output manifest; remove it or choose another folder"
            )
        for key, dest in (("files", self.owned), ("staging", self.staging)):
            names = data.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InputError(
                    self.manifest_path, f"damaged duplus output manifest ({key!r} is not a list of names)"
                )
            dest.update(n for n in names if self._relative_ok(n))

    @staticmethod
    def _relative_ok(name: str) -> bool:
        """A manifest entry must name a path inside the folder (a damaged or edited manifest must
        never make duplus touch anything outside it)."""
        p = Path(name)
        return bool(name) and not p.is_absolute() and ".." not in p.parts and name != MANIFEST_NAME

    def _write_manifest(self) -> None:
        data = {"format": MANIFEST_FORMAT, "files": sorted(self.owned), "staging": sorted(self.staging)}
        self.mkdir(self.root)
        fd, tmp = tempfile.mkstemp(prefix=f"{MANIFEST_NAME}.", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.write("\n")
            os.replace(tmp, self.manifest_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _rel(self, path: Path) -> str:
        return path.absolute().relative_to(self.root).as_posix()

    def owns(self, path: str | Path) -> bool:
        """Whether ``path`` (inside the folder) was written by this run or recorded by an earlier one."""
        target = Path(path).absolute()
        return target in self.created or (_inside(target, self.root) and self._rel(target) in self.owned)

    # ------------------------------------------------------------------ the rule
    def check_write(self, path: str | Path) -> None:
        """Raise unless ``path`` may be written (created, or replaced under the rule)."""
        target = Path(path).absolute()
        if not _inside(target, self.root) or target == self.root:
            raise InputError(path, f"outside the {self.name} {self.root}; duplus writes only there")
        if target.name == MANIFEST_NAME:
            raise InputError(path, "is the output manifest duplus keeps; choose another name")
        if not (target.exists() or target.is_symlink()):
            return
        if target in self.created:
            return
        if target.is_dir() and not target.is_symlink():
            raise InputError(path, "is an existing folder; duplus never replaces a folder with a file")
        if self._rel(target) in self.owned:
            if self.replace_owned:
                return
            raise InputError(
                path, "already exists (written by an earlier duplus run); pass --overwrite to replace it"
            )
        raise InputError(path, "already exists and was not written by duplus; it is never replaced")

    def check_new_folder(self, path: str | Path) -> None:
        """Raise unless ``path`` is free for a new output folder, or one this run or (with
        ``replace_owned``) an earlier duplus run made."""
        target = Path(path).absolute()
        if not (target.exists() or target.is_symlink()) or target in self.created:
            return
        if not target.is_dir() or target.is_symlink():
            raise InputError(path, "already exists and is not a folder duplus made; it is never replaced")
        rel = self._rel(target)
        if rel in self.owned and self.replace_owned:
            return
        if rel in self.owned:
            raise InputError(
                path, "already exists (written by an earlier duplus run); pass --overwrite to replace it"
            )
        raise InputError(path, "already exists and was not written by duplus; it is never replaced")

    def record(self, *paths: str | Path) -> None:
        """Note files or folders this run wrote (they may be replaced later in this run, and by a
        later run with ``replace_owned``), here and in every open output folder enclosing them."""
        for path in paths:
            holders = {id(f): f for f in [self, *_folders_holding(Path(path))]}
            for folder in holders.values():
                folder._note(path)

    def _note(self, *paths: str | Path) -> None:
        for path in paths:
            target = Path(path).absolute()
            self.created.add(target)
            self.owned.add(self._rel(target))
            if target.is_dir():
                for sub in target.rglob("*"):
                    self.created.add(sub)
                    self.owned.add(self._rel(sub))
        self._write_manifest()

    def adopt(self, *paths: str | Path) -> None:
        """Count existing files inside the folder as duplus's own without writing them: only for
        files a duplus manifest of this folder already names (caches made before this manifest)."""
        for path in paths:
            target = Path(path).absolute()
            if _inside(target, self.root) and target != self.root and target.is_file():
                self.owned.add(self._rel(target))
        self._write_manifest()

    def mkdir(self, path: str | Path) -> Path:
        """Create a folder inside the output folder (parents too), noting the ones it created so a
        failed command can remove them again while they are empty."""
        target = Path(path).absolute()
        if not _inside(target, self.root):
            raise InputError(path, f"outside the {self.name} {self.root}; duplus writes only there")
        missing = []
        probe = target
        while not probe.exists() and not probe.is_symlink():
            missing.append(probe)
            probe = probe.parent
        target.mkdir(parents=True, exist_ok=True)
        self.created.update(d for d in missing if d != self.root)
        return target

    def remove(self, path: str | Path) -> None:
        """Delete a file or folder that duplus wrote; anything else is refused."""
        target = Path(path).absolute()
        is_dir = target.is_dir() and not target.is_symlink()
        # a folder duplus made holds files it recorded (a killed run may not have recorded the folder)
        holds_owned = (
            is_dir
            and _inside(target, self.root)
            and target != self.root
            and any(o.startswith(self._rel(target) + "/") for o in self.owned)
        )
        if not (self.owns(target) or holds_owned) or (not self.replace_owned and target not in self.created):
            raise InputError(path, "was not written by this duplus run; it is never deleted")
        if is_dir:
            foreign = [
                p
                for p in target.rglob("*")
                if (p.is_file() or p.is_symlink()) and p.name != MANIFEST_NAME and not self.owns(p)
            ]
            if foreign:
                raise InputError(foreign[0], "was not written by duplus; its folder is not replaced")
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        rel = self._rel(target)
        self.owned = {o for o in self.owned if o != rel and not o.startswith(rel + "/")}
        self.created = {c for c in self.created if not _inside(c, target)}
        self._write_manifest()

    def install(self, staged: str | Path, dest: str | Path) -> Path:
        """Move a finished file or folder from a staging folder to ``dest`` under the write rule
        (an owned ``dest`` is replaced only with ``replace_owned``)."""
        staged, target = Path(staged), Path(dest).absolute()
        if staged.is_dir():
            self.check_new_folder(target)
        else:
            self.check_write(target)
        if target.exists():
            self.remove(target)
        self.mkdir(target.parent)
        os.replace(staged, target)
        self.record(target)
        return target

    @contextlib.contextmanager
    def staging_folder(self) -> Iterator[Path]:
        """A hidden folder inside the output folder to assemble one result in; removed afterwards.
        It is in the manifest while it exists, so a killed run's leftovers are cleaned next time."""
        self.mkdir(self.root)
        path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        rel = self._rel(path)
        self.staging.add(rel)
        self._write_manifest()
        self.created.add(path)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            self.staging.discard(rel)
            self.created = {c for c in self.created if not _inside(c, path)}
            self.owned = {o for o in self.owned if o != rel and not o.startswith(rel + "/")}
            self._write_manifest()

    def clean_stale_staging(self) -> list[Path]:
        """Remove the staging folders a killed earlier run left (only those its manifest names)."""
        removed = []
        for rel in sorted(self.staging):
            path = self.root / rel
            if path.name.startswith(STAGING_PREFIX) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if self.staging:
            self.staging.clear()
            self._write_manifest()
        return removed

    # ------------------------------------------------------------------ context
    def __enter__(self) -> OutputFolder:
        self._token = _OPEN_FOLDERS.set((*_OPEN_FOLDERS.get(), self))
        if self.staging:
            self.clean_stale_staging()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._token is not None:
            _OPEN_FOLDERS.reset(self._token)
            self._token = None
        if exc_type is None:
            return
        if self._new_dirs and not self.owned and not self.staging:
            with contextlib.suppress(OSError):
                self.manifest_path.unlink()
        made = [d for d in self.created if d.is_dir()]
        if self._new_dirs and self.root.is_dir():
            made += [d for d in self.root.rglob("*") if d.is_dir() and not d.is_symlink()]
        for d in sorted(set(made), key=lambda d: -len(d.parts)) + self._new_dirs:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()  # only empty ones go


def remove_output(path: str | Path) -> None:
    """Delete a file or folder under the write rule of the open output folder holding it."""
    target = Path(path).absolute()
    for folder in reversed(_OPEN_FOLDERS.get()):
        if _inside(target, folder.root) and target != folder.root:
            folder.remove(target)
            return
    raise InputError(path, "is in no output folder of this command; duplus deletes only its own outputs")


def check_not_inside_inputs(output: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output folder that equals an input or lies inside an input folder (or next to an
    input file, in the folder that holds it: a result must never land among the user's data)."""
    out = Path(output).resolve()
    for src in inputs:
        src_p = Path(src).resolve()
        if src_p.is_dir():
            if _inside(out, src_p):
                raise InputError(output, f"output must not be the input folder {src} or lie inside it")
        elif out == src_p:
            raise InputError(output, f"output must differ from the input {src}")


_ID_FORBIDDEN = set("/\\*?[]{}:\0")


def check_literal_id(case_id: str, source: str | Path) -> str:
    """Refuse a case or patient id that is not a plain file-name stem.

    Ids name files (``<id>.nii.gz``), so they are matched literally: an id with a path separator,
    a glob pattern character, a leading dot or ``..`` could reach another patient's file or one
    outside the data folder.

    Raises:
        InputError: naming ``source`` (the table or folder the id came from) and the id.
    """
    text = str(case_id)
    bad = sorted(set(text) & _ID_FORBIDDEN)
    if not text.strip() or text != text.strip():
        raise InputError(source, f"id {text!r} is empty or has leading/trailing spaces")
    if bad or text.startswith(".") or any(ord(c) < 32 for c in text):
        what = f"characters {''.join(bad)!r}" if bad else "a leading dot or control characters"
        raise InputError(source, f"id {text!r} has {what}; ids must be plain file-name stems")
    return text
