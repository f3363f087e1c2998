"""The ``.duplus`` model bundle: one zip of safetensors weights and JSON, never pickles.

Members (nothing else is allowed in a bundle)::

    card.json            the model card: format, kind (model | adapter), what the model does and
                         was trained on, and the sha256 of the two members below
    checkpoint.json      the checkpoint or adapter dict with every tensor replaced by a reference
                         {"__tensor__": key, "dtype": "float32"}
    weights.safetensors  the tensors by key (float16 storage optional)

:func:`read_bundle` checks the member list, both sha256 sums and the payload's own format header
before it returns anything; a bundle that carries a pickle, an unknown member or modified bytes is
refused with one line. Loading uses ``safetensors`` and ``json`` only, so it cannot run code.
This module is a leaf (torch, safetensors, json): :mod:`duplus.checkpoint` reads bundles through it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from duplus.errors import CheckpointError
from duplus.fileio import atomic_path

BUNDLE_FORMAT = "duplus-bundle"
BUNDLE_VERSION = 1
BUNDLE_SUFFIX = ".duplus"
CARD = "card.json"
PAYLOAD = "checkpoint.json"
WEIGHTS = "weights.safetensors"
MEMBERS = (CARD, PAYLOAD, WEIGHTS)
STORAGE_DTYPES = ("float32", "float16")
_TENSOR = "__tensor__"
_FLOAT = "__float__"
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same checkpoint gives the same bytes


@dataclass(frozen=True)
class Bundle:
    """A bundle read and verified: its model card and the payload dict with tensors restored."""

    path: Path
    card: dict[str, Any]
    payload: dict[str, Any]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_identities(path: str | Path) -> set[str]:
    """The sha256 sums that name a checkpoint: its file's, and for a bundle also that of the
    ``.pt`` checkpoint it was exported from (so an adapter trained on the ``.pt`` fits the
    bundle, and one trained on the bundle fits the ``.pt``)."""
    ids = {file_sha256(path)}
    if is_bundle(path):
        source = read_card(path).get("source") or {}
        if isinstance(source, dict) and isinstance(source.get("sha256"), str):
            ids.add(source["sha256"])
    return ids


def checkpoint_identity(path: str | Path) -> str:
    """The one sha256 an adapter records for its base: a bundle's source checkpoint, else the file's."""
    if is_bundle(path):
        source = read_card(path).get("source") or {}
        if isinstance(source, dict) and isinstance(source.get("sha256"), str):
            return str(source["sha256"])
    return file_sha256(path)


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a zip holding a ``card.json`` (a bundle, maybe a damaged one)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return CARD in zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


# ---------------------------------------------------------------------- tensors <-> JSON
def _flatten(obj: Any, key: str, tensors: dict[str, torch.Tensor], dtype: str) -> Any:
    """``obj`` as JSON, its tensors moved into ``tensors`` under path-like keys."""
    if isinstance(obj, torch.Tensor):
        name = key or "tensor"
        t = obj.detach().cpu().contiguous()
        stored = t.to(torch.float16) if dtype == "float16" and t.is_floating_point() else t
        tensors[name] = stored.clone()
        return {_TENSOR: name, "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"{key or 'payload'}: only string keys can go in a bundle")
        return {k: _flatten(v, f"{key}/{k}" if key else k, tensors, dtype) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_flatten(v, f"{key}/{i}", tensors, dtype) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT: repr(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"{key}: a {type(obj).__name__} cannot go in a bundle")


def _restore(obj: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            name = obj[_TENSOR]
            if name not in tensors:
                raise CheckpointError(where, f"damaged bundle: tensor {name!r} is not in {WEIGHTS}")
            dtype = getattr(torch, str(obj.get("dtype", "")), None)
            if not isinstance(dtype, torch.dtype):
                raise CheckpointError(
                    where, f"damaged bundle: tensor {name!r} has dtype {obj.get('dtype')!r}"
                )
            return tensors[name].to(dtype)
        if _FLOAT in obj and len(obj) == 1:
            return float(obj[_FLOAT])
        return {k: _restore(v, tensors, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v, tensors, where) for v in obj]
    return obj


# ---------------------------------------------------------------------- write
def write_bundle(
    path: str | Path, card: dict[str, Any], payload: dict[str, Any], *, dtype: str = "float32"
) -> Path:
    """Write a bundle (atomically): ``payload``'s tensors as safetensors, the rest as JSON.

    Args:
        path: the ``.duplus`` file.
        card: the model card (format fields and sha256 sums are added here).
        payload: a checkpoint or adapter dict (tensors, dicts, lists, numbers, strings).
        dtype: ``float32``, or ``float16`` to store floating tensors at half size.

    Returns:
        ``path``.
    """
    from safetensors.torch import save as save_safetensors

    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(payload, "", tensors, dtype)
    weights = save_safetensors(tensors)
    payload_json = json.dumps(tree, indent=1, sort_keys=True).encode("utf-8")
    full_card = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        **card,
        "storage_dtype": dtype,
        "files": {PAYLOAD: sha256_bytes(payload_json), WEIGHTS: sha256_bytes(weights)},
    }
    members = {CARD: json.dumps(full_card, indent=2).encode("utf-8"), PAYLOAD: payload_json, WEIGHTS: weights}
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in MEMBERS:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, members[name])
    return path


# ---------------------------------------------------------------------- read
def _read_members(
    path: Path, data: bytes | None = None, wanted: tuple[str, ...] = MEMBERS
) -> dict[str, bytes]:
    """Check a bundle's member list and read the ``wanted`` members (from ``data`` when given,
    the bytes of ``path`` already in memory)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data) if data is not None else path) as zf:
            names = zf.namelist()
            pickles = [n for n in names if n.endswith(_PICKLE_SUFFIXES) or n.endswith("data.pkl")]
            if pickles:
                raise CheckpointError(path, f"refused: the bundle carries a pickled payload ({pickles[0]})")
            extra = sorted(set(names) - set(MEMBERS))
            if extra:
                raise CheckpointError(
                    path,
                    f"refused: unexpected member {extra[0]!r} (a bundle holds only {', '.join(MEMBERS)})",
                )
            missing = [m for m in MEMBERS if m not in names]
            if missing:
                raise CheckpointError(path, f"damaged bundle: no {missing[0]}")
            if len(names) != len(set(names)):
                raise CheckpointError(path, "refused: a member name appears twice")
            return {name: zf.read(name) for name in wanted}
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, ValueError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(path, f"not a readable bundle ({detail})") from exc


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card of a bundle (checked for format, not yet against the weights)."""
    path = Path(path)
    return _parse_card(path, _read_members(path, wanted=(CARD,))[CARD])


def _parse_card(path: Path, data: bytes) -> dict[str, Any]:
    try:
        card = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"damaged bundle: {CARD} is not JSON") from exc
    if not isinstance(card, dict) or card.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(path, f"not a DuPLUS bundle ({CARD} lacks the {BUNDLE_FORMAT} header)")
    if int(card.get("format_version", 0)) > BUNDLE_VERSION:
        raise CheckpointError(path, f"bundle format {card['format_version']} is newer than this duplus")
    if not isinstance(card.get("files"), dict):
        raise CheckpointError(path, f"damaged bundle: {CARD} has no sha256 sums")
    return card


def read_bundle(path: str | Path, data: bytes | None = None) -> Bundle:
    """Read and verify a bundle (from ``data``, the file's bytes, when given).

    Raises:
        CheckpointError: not a zip; a pickle or an unknown member inside; a member whose sha256
            differs from the card's; a payload that is not JSON or misses a tensor.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    path = Path(path)
    members = _read_members(path, data)
    card = _parse_card(path, members[CARD])
    for name in (PAYLOAD, WEIGHTS):
        actual = sha256_bytes(members[name])
        if actual != card["files"].get(name):
            raise CheckpointError(
                path,
                f"refused: {name} has sha256 {actual[:12]}, the model card says {str(card['files'].get(name))[:12]}; "
                "the bundle was modified or damaged",
            )
    try:
        tensors = load_safetensors(members[WEIGHTS])
        tree = json.loads(members[PAYLOAD].decode("utf-8"))
    except (SafetensorError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(path, f"damaged bundle ({type(exc).__name__})") from exc
    payload = _restore(tree, tensors, path)
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"damaged bundle: {PAYLOAD} is not an object")
    return Bundle(path=path, card=card, payload=payload)
