"""The write rule of :class:`duplus.fileio.OutputFolder`: a command writes only inside its output
folder and never replaces or deletes what it did not write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from duplus.errors import InputError
from duplus.fileio import (
    MANIFEST_NAME,
    OutputFolder,
    check_literal_id,
    write_text_atomic,
)


def test_new_files_are_written_and_recorded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputFolder(out) as folder:
        write_text_atomic(out / "a.txt", "1")
        write_text_atomic(out / "sub" / "b.txt", "2")
        write_text_atomic(out / "a.txt", "3")  # created by this run: may be replaced
    assert (out / "a.txt").read_text() == "3"
    assert folder.owns(out / "sub" / "b.txt")
    assert (out / MANIFEST_NAME).is_file()
    assert set(OutputFolder(out).owned) >= {"a.txt", "sub/b.txt"}


def test_foreign_file_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "user.txt").write_text("mine")
    for replace_owned in (False, True):
        with (
            OutputFolder(tmp_path, replace_owned=replace_owned),
            pytest.raises(InputError, match="not written by duplus"),
        ):
            write_text_atomic(tmp_path / "user.txt", "x")
    assert (tmp_path / "user.txt").read_text() == "mine"


def test_owned_file_needs_replace_owned(tmp_path: Path) -> None:
    with OutputFolder(tmp_path):
        write_text_atomic(tmp_path / "r.csv", "1")
    with OutputFolder(tmp_path), pytest.raises(InputError, match="--overwrite"):
        write_text_atomic(tmp_path / "r.csv", "2")
    assert (tmp_path / "r.csv").read_text() == "1"
    with OutputFolder(tmp_path, replace_owned=True):
        write_text_atomic(tmp_path / "r.csv", "2")
    assert (tmp_path / "r.csv").read_text() == "2"


def test_write_outside_the_folder_is_refused(tmp_path: Path) -> None:
    with OutputFolder(tmp_path / "out"), pytest.raises(InputError, match="outside the output folder"):
        write_text_atomic(tmp_path / "elsewhere.txt", "x")
    assert not (tmp_path / "elsewhere.txt").exists()


def test_output_inside_or_equal_to_an_input_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "img.nii.gz").write_bytes(b"x")
    for out in (data, data / "seg"):
        with pytest.raises(InputError, match="input folder"):
            OutputFolder(out, inputs=[data])
    with pytest.raises(InputError, match="differ from the input"):
        OutputFolder(data / "img.nii.gz", inputs=[data / "img.nii.gz"])
    OutputFolder(tmp_path, inputs=[data])  # an output folder may contain the inputs


def test_remove_and_install_respect_ownership(tmp_path: Path) -> None:
    (tmp_path / "case1").mkdir()
    (tmp_path / "case1" / "scan.dcm").write_bytes(b"dicom")
    with OutputFolder(tmp_path, replace_owned=True) as folder:
        with pytest.raises(InputError, match="never deleted"):
            folder.remove(tmp_path / "case1")
        with folder.staging_folder() as stage:
            (stage / "masks").mkdir()
            (stage / "masks" / "liver.nii.gz").write_bytes(b"m")
            with pytest.raises(InputError, match="not written by duplus"):
                folder.install(stage / "masks", tmp_path / "case1")
            folder.install(stage / "masks", tmp_path / "case2")
        assert not stage.exists()
    assert (tmp_path / "case1" / "scan.dcm").read_bytes() == b"dicom"
    assert (tmp_path / "case2" / "liver.nii.gz").read_bytes() == b"m"
    # a later run with --overwrite may replace the folder it made, not one the user made
    with OutputFolder(tmp_path, replace_owned=True) as folder, folder.staging_folder() as stage:
        (stage / "m").mkdir()
        (stage / "m" / "spleen.nii.gz").write_bytes(b"s")
        folder.install(stage / "m", tmp_path / "case2")
    assert sorted(p.name for p in (tmp_path / "case2").iterdir()) == ["spleen.nii.gz"]


def test_folder_of_recorded_files_left_by_a_killed_run_is_removed(tmp_path: Path) -> None:
    """A killed run recorded the files it wrote in a sub-folder, never the folder itself: the next
    run may remove that folder (all of it duplus's), and still no folder with a user file."""
    with OutputFolder(tmp_path) as folder:
        write_text_atomic(tmp_path / "adapt" / "adapter.pt", "weights")
        write_text_atomic(tmp_path / "other" / "a.txt", "a")
    (tmp_path / "other" / "notes.txt").write_text("user notes")
    later = OutputFolder(tmp_path)  # what the next run reads from the manifest
    assert not later.owns(tmp_path / "adapt") and later.owns(tmp_path / "adapt" / "adapter.pt")
    with OutputFolder(tmp_path, replace_owned=True) as folder:
        folder.remove(tmp_path / "adapt")
        with pytest.raises(InputError, match="not written by duplus"):
            folder.remove(tmp_path / "other")
    assert not (tmp_path / "adapt").exists()
    assert (tmp_path / "other" / "notes.txt").read_text() == "user notes"
    with OutputFolder(tmp_path) as folder, pytest.raises(InputError, match="never deleted"):
        folder.remove(tmp_path / "other")  # without replace_owned: nothing an earlier run wrote


def test_folder_holding_a_user_file_is_not_replaced(tmp_path: Path) -> None:
    with OutputFolder(tmp_path) as folder, folder.staging_folder() as stage:
        (stage / "m").mkdir()
        (stage / "m" / "liver.nii.gz").write_bytes(b"1")
        folder.install(stage / "m", tmp_path / "case")
    (tmp_path / "case" / "notes.txt").write_text("user notes")
    with OutputFolder(tmp_path, replace_owned=True) as folder, folder.staging_folder() as stage:
        (stage / "m").mkdir()
        with pytest.raises(InputError, match="not written by duplus"):
            folder.install(stage / "m", tmp_path / "case")
    assert (tmp_path / "case" / "notes.txt").read_text() == "user notes"


def test_stale_staging_is_cleaned_on_the_next_run(tmp_path: Path) -> None:
    code = (
        "import os, sys; from duplus.fileio import OutputFolder\n"
        "f = OutputFolder(sys.argv[1]); f.__enter__(); cm = f.staging_folder(); s = cm.__enter__()\n"
        "(s / 'half.nii.gz').write_bytes(b'half'); print(s, flush=True); os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    stage = Path(proc.stdout.strip())
    assert proc.returncode == -9 and (stage / "half.nii.gz").is_file()
    user_hidden = tmp_path / ".duplus-staging-user"
    user_hidden.mkdir()  # looks like ours, but no manifest names it
    with OutputFolder(tmp_path):
        pass
    assert not stage.exists()
    assert user_hidden.is_dir()


def test_failed_command_leaves_no_new_empty_folders(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), OutputFolder(out) as folder, folder.staging_folder():
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()


def test_damaged_manifest_is_refused_and_never_followed_outside(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(
        '{"format": "duplus-output-manifest", "files": ["../x", "/etc/passwd", "ok"]}'
    )
    folder = OutputFolder(tmp_path)
    assert folder.owned == {"ok"}
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(InputError, match="not a duplus output manifest"):
        OutputFolder(tmp_path)


@pytest.mark.parametrize(
    "bad", ["*", "P0000[1-2]", "../other/P00001", "a/b", "a\\b", "", " p1", ".hidden", "p?"]
)
def test_ids_are_literal(bad: str) -> None:
    with pytest.raises(InputError, match="id"):
        check_literal_id(bad, "clinical.csv")


def test_plain_ids_pass() -> None:
    for ok in ("P00001", "CHUM-001", "case_7.a", "Ünïcode"):
        assert check_literal_id(ok, "t.csv") == ok
