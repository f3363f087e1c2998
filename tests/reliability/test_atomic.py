"""No data loss: atomic writes everywhere, caches validated and rebuilt, checkpoints safe.

Every writer goes through :func:`duplus.fileio.atomic_path` (temporary file in the destination
folder, then ``os.replace``). These tests break the write at its two dangerous moments (while the
temporary file is written, and at the rename) and check that the previous file survives, that no
temporary file is left, and that the error names the file. They then corrupt each cache the
package keeps and check it is detected and rebuilt, or refused with a one-line error.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pytest
import torch

from duplus.checkpoint import load_checkpoint, save_checkpoint
from duplus.config import PreprocessConfig
from duplus.data.io import load_nifti, save_nifti
from duplus.data.prepared import load_prepared, prepare_dataset
from duplus.data.specs import load_dataset_spec
from duplus.errors import CheckpointError, InputError
from duplus.fileio import (
    MANIFEST_NAME,
    atomic_path,
    check_writable_folder,
    write_json_atomic,
    write_text_atomic,
)

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------------------------------------ writers
def _write_text(path: Path, version: int) -> None:
    write_text_atomic(path, f"version {version}\n" * 100)


def _write_json(path: Path, version: int) -> None:
    write_json_atomic(path, {"version": version, "rows": list(range(100))})


def _write_nifti(path: Path, version: int) -> None:
    save_nifti(np.full((6, 6, 6), version, np.float32), np.eye(4), path)


def _write_checkpoint(path: Path, version: int) -> None:
    save_checkpoint(path, {"model": {"w": torch.full((64,), float(version))}, "step": version})


def _write_npy(path: Path, version: int) -> None:
    from duplus.data.prepared import _save_npy

    _save_npy(path, np.full((2, 5, 5, 5), version, np.float32))


def _write_prompt_cache(path: Path, version: int) -> None:
    from duplus.text.cache import EmbeddingCache

    cache = EmbeddingCache(cast(Any, StubEncoder()))
    cache.get([f"liver {version}", "spleen"])
    cache.save(path)


WRITERS: dict[str, tuple[str, Callable[[Path, int], None]]] = {
    "text": ("notes.md", _write_text),
    "json": ("labels.json", _write_json),
    "nifti": ("mask.nii.gz", _write_nifti),
    "checkpoint": ("checkpoint_last.pt", _write_checkpoint),
    "cache-npy": ("case_img.npy", _write_npy),
    "prompt-cache": ("prompt_cache.pt", _write_prompt_cache),
}


class StubEncoder:
    """Just enough of a :class:`~duplus.text.encoder.TextEncoder` for the embedding cache."""

    model_id = "stub-encoder"
    pooling = "mean"
    max_length = 16
    embed_dim = 8
    device = torch.device("cpu")
    is_trainable = False

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = [torch.tensor([float(ord(c)) for c in (t + " " * 8)[:8]]) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def _leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


@pytest.mark.parametrize("kind", list(WRITERS))
@pytest.mark.parametrize("where", ["while-writing", "at-rename"])
def test_failed_write_keeps_the_previous_file(
    kind: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, write = WRITERS[kind]
    path = tmp_path / name
    write(path, 1)
    before = path.read_bytes()
    if where == "at-rename":
        monkeypatch.setattr(os, "replace", _full_disk)
    else:
        # the writer has put some bytes into the temporary file when the disk fills up
        real_open = open

        def filling_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(file, mode, *args, **kwargs)
            if "w" in mode and Path(str(file)).name.startswith("."):
                handle.write(b"partial" if "b" in mode else "partial")
                handle.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return handle

        monkeypatch.setattr("builtins.open", filling_open)
        monkeypatch.setattr(torch, "save", _fill_then_fail)
        monkeypatch.setattr(nib, "save", _fill_then_fail)
    with pytest.raises(OSError) as exc:
        write(path, 2)
    monkeypatch.undo()
    assert exc.value.errno == errno.ENOSPC
    assert exc.value.filename == str(path)  # the CLI's one error line names the file
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, name) == []  # no temporary file left behind


def _fill_then_fail(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    Path(str(f)).write_bytes(b"half written")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_interrupt_during_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    write_text_atomic(path, "a,b\n1,2\n")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("a,b\n3")
        raise KeyboardInterrupt
    assert path.read_text() == "a,b\n1,2\n"
    assert _leftovers(tmp_path, "metrics.csv") == []


def test_new_files_get_normal_permissions(tmp_path: Path) -> None:
    """``mkstemp`` makes 0600 files; outputs must be readable like any other file (umask)."""
    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.txt", "x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
        (tmp_path / "shared.txt").write_text("old")
        (tmp_path / "shared.txt").chmod(0o664)
        write_text_atomic(tmp_path / "shared.txt", "new")  # a replaced file keeps its mode
        assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o664
    finally:
        os.umask(umask)


# ----------------------------------------------------------------------------- output folders
def test_check_writable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_writable_folder(tmp_path / "new" / "deeper")  # creatable: fine, and nothing created
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is an existing file"):
        check_writable_folder(tmp_path / "file")
    with pytest.raises(InputError, match="is a file") as exc:
        check_writable_folder(tmp_path / "file" / "sub")
    assert str(tmp_path / "file") in str(exc.value)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real = os.access
    # root may write anywhere: make access() answer for the mode bits, as for an ordinary user
    monkeypatch.setattr(os, "access", lambda p, m: not (m & os.W_OK) or bool(os.stat(p).st_mode & 0o200))
    with pytest.raises(InputError, match="not writable"):
        check_writable_folder(ro / "out")
    with pytest.raises(InputError, match="not writable"):
        write_text_atomic(ro / "x.txt", "x")
    monkeypatch.setattr(os, "access", real)
    assert list(ro.iterdir()) == []


def test_checkpoint_written_halfway_is_never_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint_last.pt"
    _write_checkpoint(path, 1)
    monkeypatch.setattr(torch, "save", _fill_then_fail)
    with pytest.raises(OSError):
        _write_checkpoint(path, 2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert _leftovers(tmp_path, path.name) == []


def test_foreign_and_damaged_checkpoints_are_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    _write_checkpoint(good, 3)
    data = good.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "flipped": data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:],
    }
    for name, blob in damaged.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(blob)
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        else:  # a flip that only hit padding leaves a readable, intact checkpoint
            assert torch.equal(ckpt["model"]["w"], torch.full((64,), 3.0))


# -------------------------------------------------------------------------- preprocessing cache
def _dataset(root: Path) -> Path:
    from duplus.data.phantoms import make_phantom_case

    training = []
    for i in range(2):
        case = make_phantom_case(i, "abdomen", "CT", shape=(16, 16, 16))
        save_nifti(np.rint(case.image), case.affine, root / "imagesTr" / f"c{i}.nii.gz", dtype=np.int16)
        save_nifti(case.label, case.affine, root / "labelsTr" / f"c{i}.nii.gz", dtype=np.int16)
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    labels = {str(v): n for v, n in case.label_names.items()}
    meta = {
        "name": "Cache",
        "modality": {"0": "CT"},
        "region": "abdomen",
        "labels": labels,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root / "dataset.json"


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, list[str]]:
    """A prepared 2-case cache, and a log of the cases (re)built from then on."""
    import duplus.data.prepared as pp

    spec_path = _dataset(tmp_path / "ds")
    cache = prepare_dataset(
        load_dataset_spec(spec_path), tmp_path / "cache", PreprocessConfig(), progress=False
    )
    built: list[str] = []
    real = pp._build_case

    def logging_build(record: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(record.case_id)
        return real(record, *args, **kwargs)

    monkeypatch.setattr(pp, "_build_case", logging_build)
    return spec_path, cache, built


def _prepare_again(spec_path: Path, cache: Path) -> None:
    prepare_dataset(load_dataset_spec(spec_path), cache.parent, PreprocessConfig(), progress=False)


def _truncate_npy(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 64])  # a valid header, too little data


def _reshape_npy(path: Path) -> None:
    np.save(path, np.zeros((1, 3, 3, 3), np.load(path).dtype))  # a valid npy of the wrong shape


def _pickled_npy(path: Path) -> None:
    np.save(path, np.array([{"code": "object array"}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    "spoil",
    [_truncate_npy, _reshape_npy, _pickled_npy, lambda p: p.write_bytes(b"garbage"), Path.unlink],
    ids=["truncated", "wrong-shape", "pickled-objects", "garbage", "deleted"],
)
@pytest.mark.parametrize("which", ["img", "seg"])
def test_damaged_cache_file_is_rebuilt(
    prepared: tuple[Path, Path, list[str]], spoil: Callable[[Path], Any], which: str
) -> None:
    spec_path, cache, built = prepared
    reference = np.load(cache / f"c1_{which}.npy")
    spoil(cache / f"c1_{which}.npy")
    _prepare_again(spec_path, cache)
    assert built == ["c1"]  # only the damaged case
    np.testing.assert_array_equal(np.load(cache / f"c1_{which}.npy"), reference)


def test_unreadable_manifest_rebuilds_the_cache(prepared: tuple[Path, Path, list[str]]) -> None:
    spec_path, cache, built = prepared
    (cache / "manifest.json").write_text('{"format": "duplus-prepared", "cases": [')
    _prepare_again(spec_path, cache)
    assert built == ["c0", "c1"]
    assert [c.case_id for c in load_prepared(cache).cases] == ["c0", "c1"]


def test_stale_cache_is_rebuilt_when_a_source_changes(prepared: tuple[Path, Path, list[str]]) -> None:
    spec_path, cache, built = prepared
    label = spec_path.parent / "labelsTr" / "c0.nii.gz"
    vol = load_nifti(label, is_label=True)
    data = vol.array[0].copy()
    data[data == 2] = 0  # the annotator removed the spleen
    save_nifti(data, vol.affine, label)
    _prepare_again(spec_path, cache)
    assert built == ["c0"]
    assert load_prepared(cache).cases[0].voxel_counts["spleen"] == 0


def test_edited_manifest_never_reaches_outside_the_cache(prepared: tuple[Path, Path, list[str]]) -> None:
    """A manifest naming files outside its folder is not trusted: nothing outside is read as
    cache or deleted as a stale entry (the inputs stay), and ``load_prepared`` refuses it."""
    spec_path, cache, built = prepared
    victim = spec_path.parent / "imagesTr" / "c0.nii.gz"
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["cases"][0]["image"] = "../../ds/imagesTr/c0.nii.gz"
    manifest["cases"].append({**manifest["cases"][1], "case_id": "gone", "image": str(victim)})
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="malformed manifest"):
        load_prepared(cache)
    _prepare_again(spec_path, cache)
    assert victim.is_file()
    assert built == ["c0"]
    assert [c.case_id for c in load_prepared(cache).cases] == ["c0", "c1"]


# ------------------------------------------------------------------------------- prompt cache
@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: p.write_bytes(p.read_bytes()[:200]),
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(b"\x80\x04not a cache"),
        lambda p: torch.save(
            {
                "format": "duplus-embedding-cache",
                "version": 1,
                "entries": {"x": {"texts": ["a", "b"], "embeddings": torch.zeros(3, 8)}},
            },
            p,
        ),  # fmt: skip
        lambda p: torch.save(
            {
                "format": "duplus-embedding-cache",
                "version": 1,
                "entries": {"x": PickledCode(p.parent / "code_ran")},
            },
            p,
        ),  # fmt: skip
        lambda p: torch.save({"format": "duplus-embedding-cache", "version": 99, "entries": {}}, p),
    ],
    ids=["truncated", "empty", "garbage", "rows-do-not-match-texts", "pickled-code", "future-version"],
)
def test_damaged_prompt_cache_is_refused(tmp_path: Path, spoil: Callable[[Path], Any]) -> None:
    """The prompt-embedding cache is only trusted when it loads cleanly; otherwise the error names
    the file and the (empty) cache is refilled by the encoder."""
    from duplus.text.cache import EmbeddingCache

    path = tmp_path / "prompt_cache.pt"
    _write_prompt_cache(path, 1)
    spoil(path)
    cache = EmbeddingCache(cast(Any, StubEncoder()))
    with pytest.raises(InputError) as exc:
        cache.load(path)
    assert str(exc.value).startswith(str(path)) and "\n" not in str(exc.value)
    assert len(cache) == 0
    assert not (tmp_path / "code_ran").exists()
    assert cache.get(["liver 1"]).shape == (1, 8) and cache.misses == 1  # rebuilt from the encoder


class PickledCode:
    """Unpickling this object would create ``marker``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_prompt_cache_of_a_real_run_loads(trained_run: Any) -> None:
    from duplus.text.cache import EmbeddingCache

    cache = EmbeddingCache(cast(Any, StubEncoder()))
    assert cache.load(trained_run.run_dir / "prompt_cache.pt") > 0


# -------------------------------------------------------------------------------- segment outputs
class FakePredictor:
    """Stands in for the network: segment's file handling is under test, not the model."""

    def predict(self, volume: Any, modality: str, region: str, targets: list[str], **kwargs: Any) -> Any:
        from duplus.inference.predictor import Prediction

        shape = volume.spatial_shape
        prob = np.stack([np.full(shape, 0.2 + 0.6 * (k % 2), np.float32) for k in range(len(targets))])
        return Prediction(
            probabilities=prob,
            masks=(prob >= 0.5).astype(np.uint8),
            targets=list(targets),
            affine=volume.affine,
            prompts={"t1": f"A {modality} scan of the {region}", "t2": {t: t for t in targets}},
        )


def _segment(image: Path, out: Path, ml: bool, overwrite: bool = False) -> list[Path]:
    from duplus.api.segmentation import segment_files

    return segment_files(
        image, out, ["liver", "spleen"], modality="CT", region="abdomen", checkpoint="unused.pt",
        device="cpu", sw_batch_size=1, ml=ml, overwrite=overwrite, progress=False,
    )  # fmt: skip


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


@pytest.mark.parametrize("ml", [False, True], ids=["per-target", "multi-label"])
def test_segment_failure_keeps_previous_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ml: bool
) -> None:
    import duplus.api.segmentation as seg
    import duplus.inference.postprocess as post

    monkeypatch.setattr(seg, "load_predictor", lambda *a, **k: FakePredictor())
    image = tmp_path / "in" / "ct.nii.gz"
    save_nifti(np.zeros((8, 8, 8), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]), image)
    out = tmp_path / "out"
    written = _segment(image, out, ml)
    before = _outputs(out)
    assert written and before
    calls = {"n": 0}
    real = post.save_nifti

    def second_write_fails(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2 or ml:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(post, "save_nifti", second_write_fails)
    with pytest.raises(OSError):
        _segment(image, out, ml, overwrite=True)
    assert _outputs(out) == before  # the previous result is whole, and no staging folder is left
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [MANIFEST_NAME]


def test_segment_into_a_new_folder_leaves_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duplus.api.segmentation as seg
    import duplus.inference.postprocess as post

    monkeypatch.setattr(seg, "load_predictor", lambda *a, **k: FakePredictor())
    monkeypatch.setattr(post, "save_nifti", _full_disk)
    image = tmp_path / "in" / "ct.nii.gz"
    save_nifti(np.zeros((8, 8, 8), np.int16), np.eye(4), image)
    with pytest.raises(OSError):
        _segment(image, tmp_path / "new" / "out", ml=False)
    assert not (tmp_path / "new").exists()
