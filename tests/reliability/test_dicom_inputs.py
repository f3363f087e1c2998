"""DICOM inputs a hospital folder really holds, through ``duplus segment``: a missing slice, uneven
spacing, a gantry tilt, a damaged or undecodable file, two series in one folder. Each bad case
exits 2 with one stderr line naming the folder or file, leaves every input byte-identical and
writes nothing; ``--allow-uneven`` and ``--series-uid`` make the refused cases run. Also ``-c`` given
a run folder (issue 27, item 15)."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from duplus.cli import main

_spec = importlib.util.spec_from_file_location(
    "dicom_series", Path(__file__).parents[1] / "data" / "dicom_series.py"
)
assert _spec is not None and _spec.loader is not None
dicom_series = sys.modules.setdefault("dicom_series", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(dicom_series)
write_series = dicom_series.write_series

STEPS = [2.5 * k for k in range(6)]


def _missing(folder: Path) -> str:
    write_series(folder, depths=[d for d in STEPS if d != 7.5])
    return "1 missing slice(s)"


def _uneven(folder: Path) -> str:
    write_series(folder, depths=[0.0, 2.5, 5.0, 6.0, 8.5, 11.0])
    return "uneven slice spacing"


def _tilt(folder: Path) -> str:
    write_series(folder, depths=STEPS, tilt_mm=(0.0, 0.3))
    return "gantry tilt"


def _truncated(folder: Path) -> str:
    s = write_series(folder, depths=STEPS)
    s.files[3].write_bytes(s.files[3].read_bytes()[:-100])
    return f"{s.files[3]}: cannot decode the pixel data"


def _corrupt_j2k(folder: Path) -> str:
    from pydicom.uid import JPEG2000Lossless

    s = write_series(folder, rows=32, cols=32, depths=STEPS, transfer_syntax=JPEG2000Lossless)
    data = bytearray(s.files[2].read_bytes())
    start = data.index(b"\xff\x4f\xff\x51")
    data[start + 4 : start + 40] = b"\xff" * 36
    s.files[2].write_bytes(bytes(data))
    return f"{s.files[2]}: cannot decode the pixel data (JPEG 2000"


def _not_dicom(folder: Path) -> str:
    write_series(folder, depths=STEPS)
    (folder / "s100.dcm").write_bytes(b"\0" * 64)
    return f"{folder / 's100.dcm'}: not a DICOM file"


def _two_series(folder: Path) -> str:
    write_series(folder, uid="1.2.3.100", depths=STEPS, prefix="a")
    write_series(folder, uid="1.2.3.200", depths=STEPS, prefix="b")
    return "mixes 2 DICOM series; choose one with --series-uid: 1.2.3.100"


CASES = {
    "missing-slice": (_missing, ["--allow-uneven"]),
    "uneven-spacing": (_uneven, ["--allow-uneven"]),
    "gantry-tilt": (_tilt, ["--allow-uneven"]),
    "truncated-file": (_truncated, None),
    "corrupt-jpeg2000": (_corrupt_j2k, None),
    "not-dicom-file": (_not_dicom, None),
    "two-series": (_two_series, ["--series-uid", "1.2.3.200"]),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _segment(folder: Path, out: Path, checkpoint: Path | str, *extra: str) -> list[str]:
    return ["segment", "-q", "-i", str(folder), "-o", str(out), "-c", str(checkpoint), "--modality", "CT",
            "--region", "abdomen", "--targets", "liver", *extra]  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_dicom_refused_in_one_line(name: str, tmp_path: Path, trained_run: Any, capsys) -> None:  # type: ignore[no-untyped-def]
    build, fix = CASES[name]
    folder = tmp_path / "in" / "ct1"
    words = build(folder)
    before = _snapshot(tmp_path)
    rc = main(_segment(folder, tmp_path / "out", trained_run.checkpoint))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err
    assert err[0].startswith(f"duplus: error: {folder}")
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()
    if fix is not None:
        assert main(_segment(folder, tmp_path / "fixed", trained_run.checkpoint, *fix)) == 0
        assert (tmp_path / "fixed" / "ct1" / "liver.nii.gz").is_file()
        assert _snapshot(tmp_path / "in") == {k.removeprefix("in/"): v for k, v in before.items()}


def test_checkpoint_run_folder_uses_last_without_best(tmp_path: Path, trained_run: Any, caplog) -> None:  # type: ignore[no-untyped-def]
    write_series(tmp_path / "ct1", depths=STEPS)
    assert not (trained_run.run_dir / "checkpoint_best.pt").exists()  # val_fraction 0
    with caplog.at_level(logging.INFO, logger="duplus.bundles.store"):
        rc = main(_segment(tmp_path / "ct1", tmp_path / "out", trained_run.run_dir))
    assert rc == 0 and (tmp_path / "out" / "ct1" / "liver.nii.gz").is_file()
    assert "no checkpoint_best.pt" in caplog.text and "using checkpoint_last.pt" in caplog.text
