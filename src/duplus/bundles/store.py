"""Installed models (``$DUPLUS_HOME/models/NAME/model.duplus``) and the ``-c VALUE`` resolver.

``$DUPLUS_HOME`` defaults to ``~/.duplus``. Models packaged with duplus live in
``duplus/resources/models/NAME.duplus`` and are found by name like installed ones (an installed
model of the same name wins).

:func:`resolve_checkpoint` is the one place a ``-c`` value becomes a file, in this order:

1. an existing file: a ``.pt`` checkpoint or a ``.duplus`` bundle, used as it is;
2. an existing folder: a run folder (``checkpoint_best.pt`` if present, else
   ``checkpoint_last.pt``; a log line says which) or an installed model's folder;
3. a NAME: an installed model, else a packaged one.

:func:`resolve_adapter` does the same for ``--adapter`` (an adapt run folder gives its
``adapter.pt``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duplus.bundle_file import BUNDLE_SUFFIX, read_bundle, read_card
from duplus.errors import CheckpointError, InputError

logger = logging.getLogger(__name__)

HOME_ENV = "DUPLUS_HOME"
MODEL_FILE = "model.duplus"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class InstalledModel:
    """A model (or adapter) bundle that ``-c NAME`` finds."""

    name: str
    path: Path
    card: dict[str, Any]
    packaged: bool = False


def duplus_home() -> Path:
    """``$DUPLUS_HOME``, else ``~/.duplus``."""
    return Path(os.environ.get(HOME_ENV) or "~/.duplus").expanduser()


def models_dir() -> Path:
    return duplus_home() / "models"


def packaged_models_dir() -> Path:
    """Where bundles shipped inside the duplus package live."""
    return Path(__file__).resolve().parents[1] / "resources" / "models"


def check_model_name(name: str) -> str:
    """Refuse a model name that is not a plain folder name (letters, digits, ``._-``; 64 at most).

    Raises:
        InputError: naming ``--name``.
    """
    if not _NAME.match(name) or name in (".", ".."):
        raise InputError(
            "--name", f"{name!r} is not a model name (letters, digits, '.', '_', '-'; at most 64)"
        )
    return name


def import_bundle(bundle: str | Path, *, name: str | None = None, overwrite: bool = False) -> InstalledModel:
    """Verify a bundle and install it as ``$DUPLUS_HOME/models/NAME/model.duplus``.

    Args:
        bundle: the ``.duplus`` file.
        name: the name to install under (default: the name in its model card).
        overwrite: replace a model of that name installed earlier by ``duplus import``.

    Returns:
        The installed model.

    Raises:
        CheckpointError: the bundle is damaged or tampered with (nothing is installed).
        InputError: a bad name, or a model of that name already installed (without ``overwrite``).
    """
    from duplus.fileio import OutputFolder, write_bytes_atomic

    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(bundle, "bundle not found")
    data = bundle.read_bytes()
    verified = read_bundle(bundle, data)
    name = check_model_name(name or str(verified.card.get("name") or bundle.name.removesuffix(BUNDLE_SUFFIX)))
    dest = models_dir() / name
    if (dest / MODEL_FILE).exists() and not overwrite:
        raise InputError(
            dest, f"model {name!r} is already installed; pass --overwrite to replace it, or --name"
        )
    with OutputFolder(dest, inputs=[bundle], replace_owned=overwrite, name="model folder"):
        write_bytes_atomic(dest / MODEL_FILE, data)
    logger.info("installed %s %r in %s", verified.card.get("kind", "model"), name, dest)
    return InstalledModel(name=name, path=dest / MODEL_FILE, card=verified.card)


def list_models() -> list[InstalledModel]:
    """Installed models, then packaged ones not shadowed by an installed one, by name.

    A damaged bundle is listed with a card that says so, rather than hiding it.
    """
    found: dict[str, InstalledModel] = {}
    candidates = [(p.parent.name, p, False) for p in sorted(models_dir().glob(f"*/{MODEL_FILE}"))]
    candidates += [
        (p.name.removesuffix(BUNDLE_SUFFIX), p, True)
        for p in sorted(packaged_models_dir().glob(f"*{BUNDLE_SUFFIX}"))
    ]
    for name, path, packaged in candidates:
        if name in found:
            continue
        try:
            card = read_card(path)
        except CheckpointError as exc:
            card = {"kind": "damaged", "error": str(exc)}
        found[name] = InstalledModel(name=name, path=path, card=card, packaged=packaged)
    return list(found.values())


def _from_folder(folder: Path) -> Path:
    from duplus.training.trainer import BEST, LAST

    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE
    if (folder / BEST).is_file():
        logger.info("%s: using the run's %s", folder, BEST)
        return folder / BEST
    if (folder / LAST).is_file():
        logger.info("%s: no %s (the run kept no validation best); using %s", folder, BEST, LAST)
        return folder / LAST
    raise CheckpointError(folder, f"is a folder without {BEST}, {LAST} or {MODEL_FILE}")


def resolve_adapter(value: str | Path) -> Path:
    """Turn an ``--adapter`` value into a file: an existing file (``adapter.pt`` or an adapter
    bundle), an adapt run folder (its ``adapter.pt``), or the NAME of an installed adapter bundle.

    Raises:
        CheckpointError: nothing of that name.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        from duplus.adapt.trainer import ADAPTER_NAME

        if (path / ADAPTER_NAME).is_file():
            return path / ADAPTER_NAME
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        raise CheckpointError(path, f"is a folder without {ADAPTER_NAME} or {MODEL_FILE}")
    return resolve_checkpoint(value)


def resolve_checkpoint(value: str | Path) -> Path:
    """Turn a ``-c`` value into a checkpoint or bundle file (see the module docstring for the order).

    Raises:
        CheckpointError: nothing of that name: the message lists the installed models.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _from_folder(path)
    text = str(value)
    if _NAME.match(text):
        for candidate in (models_dir() / text / MODEL_FILE, packaged_models_dir() / f"{text}{BUNDLE_SUFFIX}"):
            if candidate.is_file():
                logger.info("model %r: %s", text, candidate)
                return candidate
    names = [m.name for m in list_models()]
    known = f"installed: {', '.join(names)}" if names else f"no models installed in {models_dir()}"
    raise CheckpointError(
        value, f"not a checkpoint file, a run folder or an installed model ({known}; see `duplus models`)"
    )
