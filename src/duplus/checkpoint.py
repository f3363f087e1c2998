"""DuPLUS's files of tensors: one header scheme, written atomically, read with ``weights_only=True``.

Every ``.pt`` file DuPLUS writes (model checkpoints, adapter files, prompt-embedding caches,
prognosis heads) is a plain dict of tensors and JSON-like values (never pickled objects), so
reading one cannot run code, with the same header::

    {"format": "<kind>", "format_version": <int>, "duplus_version": "<x.y.z>", ...payload}

:func:`save_torch_file` / :func:`load_torch_file` write and check it. A model checkpoint
(:func:`save_checkpoint` / :func:`load_checkpoint`) carries everything needed to rebuild the model
and to resume training: the resolved config, model preset, label space, text-encoder id, and
optionally the optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import errno
import pickle
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duplus import __version__
from duplus.errors import CheckpointError, InputError
from duplus.fileio import atomic_path

FORMAT = "duplus-checkpoint"
FORMAT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch, numpy and ``random`` as weights-only-safe values."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_torch_file(path: str | Path, kind: str, version: int, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the header of ``kind`` to ``path`` atomically (temp file + rename).

    A failed write (e.g. a full disk) leaves any previous file at ``path`` intact and raises an
    ``OSError`` naming it.
    """
    path = Path(path)
    data = {"format": kind, "format_version": version, "duplus_version": __version__, **payload}
    with atomic_path(path, suffix=".tmp") as tmp:
        try:
            torch.save(data, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write (a full disk) this way
            free = shutil.disk_usage(path.parent).free
            full = free < 64 * 2**20
            reason = "no space left on device" if full else f"write failed ({str(exc).splitlines()[0][:120]})"
            raise OSError(errno.ENOSPC if full else errno.EIO, reason, str(path)) from exc
    return path


def load_torch_file(
    path: str | Path,
    kind: str,
    version: int,
    *,
    what: str,
    error: type[InputError] = CheckpointError,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a file written by :func:`save_torch_file` and check its header.

    Args:
        path: the file.
        kind: the ``format`` it must carry.
        version: the newest ``format_version`` this duplus reads.
        what: what the file is, for errors ("checkpoint", "adapter file", ...).
        error: the error type raised.
        map_location: where tensors are loaded.

    Raises:
        ``error``: missing file, not a torch file, pickled code (refused by ``weights_only``), another
            kind of file, or a newer format; for a ``.duplus`` bundle also a pickle or unknown member
            inside or bytes that differ from its sha256 sums.
    """
    from duplus.bundle_file import is_bundle

    path = Path(path)
    if not path.is_file():
        raise error(path, f"{what} not found")
    if is_bundle(path):
        return _load_bundle(path, kind, version, what=what, error=error, map_location=map_location)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # torch refused a pickled callable or class: code
            raise error(path, "refused: the file carries pickled code or objects, not plain weights") from exc
        raise error(
            path, f"not a readable {what} (not a torch file: {str(exc).splitlines()[0][:120]})"
        ) from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(path, f"not a readable {what} ({msg[:200]})") from exc
    if not isinstance(data, dict) or data.get("format") != kind:
        raise error(path, f"not a DuPLUS {what} (missing the {kind} header)")
    found = int(data.get("format_version") or data.get("version") or 0)  # "version": older files
    if found > version:
        raise error(path, f"{what} format {found} is newer than this duplus reads ({version})")
    return data


def _to_device(obj: Any, device: str | torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def _load_bundle(
    path: Path,
    kind: str,
    version: int,
    *,
    what: str,
    error: type[InputError],
    map_location: str | torch.device,
) -> dict[str, Any]:
    """The payload of a ``.duplus`` bundle (safetensors + JSON, verified), checked like a ``.pt``."""
    from duplus.bundle_file import read_bundle

    bundle = read_bundle(path)
    data = bundle.payload
    if data.get("format") != kind:
        held = {"model": "a model", "adapter": "an adapter"}.get(
            str(bundle.card.get("kind")), "something else"
        )
        raise error(path, f"is a bundle of {held}, not a {what}")
    found = int(data.get("format_version") or 0)
    if found > version:
        raise error(path, f"{what} format {found} is newer than this duplus reads ({version})")
    return data if str(map_location) == "cpu" else _to_device(data, map_location)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a model checkpoint (see :func:`save_torch_file`)."""
    return save_torch_file(path, FORMAT, FORMAT_VERSION, payload)


def check_finite_weights(state: dict[str, Any], path: str | Path) -> None:
    """Refuse weights holding NaN or Inf: such a model writes empty masks or NaN maps silently.

    Raises:
        CheckpointError: naming the file, the first bad tensor and how many values are bad.
    """
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    path, f"weights hold {bad} NaN/Inf values (first in {name!r}); the model is broken"
                )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a DuPLUS model checkpoint safely: a ``.pt`` file or a ``.duplus`` model bundle.

    Raises:
        CheckpointError: missing file, not a torch file, a file carrying pickled code, a torch file
            that is not a DuPLUS checkpoint, or weights holding NaN/Inf.
    """
    data = load_torch_file(path, FORMAT, FORMAT_VERSION, what="checkpoint", map_location=map_location)
    if isinstance(data.get("model"), dict):
        check_finite_weights(data["model"], path)
    return data
