"""Self-describing, atomically written checkpoints, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and JSON-like values (never pickled objects), so loading it
cannot run code. It carries everything needed to rebuild the model and to resume training:
the resolved config, model preset, label space, text-encoder id, package version, and optionally
the optimizer, scheduler and RNG states.
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
from duplus.errors import CheckpointError
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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus the format header to ``path`` atomically (temp file + rename).

    A failed write (e.g. a full disk) leaves any previous checkpoint at ``path`` intact.
    """
    path = Path(path)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "duplus_version": __version__, **payload}
    with atomic_path(path, suffix=".tmp") as tmp:
        try:
            torch.save(data, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a failed write (a full disk) this way
            free = shutil.disk_usage(path.parent).free
            reason = (
                "no space left on device"
                if free < 64 * 2**20
                else f"write failed ({str(exc).splitlines()[0][:120]})"
            )
            raise OSError(errno.ENOSPC if free < 64 * 2**20 else errno.EIO, reason, str(path)) from exc
    return path


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
    """Load a DuPLUS checkpoint safely: a ``.pt`` file, or a ``.duplus`` model bundle
    (:mod:`duplus.bundles.archive`, safetensors + JSON, checked against its sha256 sums).

    Raises:
        CheckpointError: missing file, not a torch file, a file carrying pickled code (refused by
            ``weights_only=True``), a damaged or modified bundle, an adapter bundle, or a file
            that is not a DuPLUS checkpoint.
    """
    from duplus.bundles.archive import is_bundle, read_bundle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    if is_bundle(path):
        bundle = read_bundle(path)
        if bundle.card.get("kind") == "adapter":
            raise CheckpointError(
                path, "is an adapter bundle; pass it as the adapter, and its base model as -c"
            )
        data = bundle.payload
        if map_location != "cpu":
            data = _to_device(data, map_location)
        return _check_header(path, data)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            path, "refused: the file carries pickled code or objects, not plain weights"
        ) from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(path, f"not a readable checkpoint ({msg[:200]})") from exc
    return _check_header(path, data)


def _to_device(obj: Any, device: str | torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


def _check_header(path: Path, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, "not a DuPLUS checkpoint (missing the duplus-checkpoint header)")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(path, f"checkpoint format {data['format_version']} is newer than this duplus")
    if isinstance(data.get("model"), dict):
        check_finite_weights(data["model"], path)
    return data
