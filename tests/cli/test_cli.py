from __future__ import annotations

import subprocess
import sys

import pytest

from duplus.cli import build_parser, main

COMMANDS = ["demo", "make-phantoms", "prepare", "train", "segment", "evaluate", "adapt", "prognosis"]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([cmd, "--help"])
    assert exc.value.code == 0


def test_console_script_help_is_fast_and_lazy():
    code = "import sys, duplus.cli; sys.exit(int(any(m in sys.modules for m in ('torch', 'monai', 'transformers'))))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_config_error_is_one_line_nonzero(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("datasets: []\nunknown_key: 1\n")
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "unknown_key" in err[0] and str(cfg) in err[0]
    assert not (tmp_path / "run").exists()


def test_make_phantoms_dataset_cases(tmp_path, capsys):
    """``--dataset-cases`` sizes one dataset apart; the others keep ``--cases`` / ``--test-cases``."""
    import json

    out = tmp_path / "ph"
    args = ["make-phantoms", str(out), "--cases", "1", "--test-cases", "1", "--shape", "16"]
    sizes_given = [
        "--dataset-cases",
        "Task02_PhantomPancreasCT=3,2",
        "--dataset-cases",
        "Task04_PhantomBrainMRI=2",
    ]
    rc = main([*args, *sizes_given])
    assert rc == 0
    index = {d["name"]: d for d in json.loads((out / "phantoms.json").read_text())["datasets"]}
    sizes = {name: (d["numTraining"], d["numTest"]) for name, d in index.items()}
    assert sizes.pop("Task02_PhantomPancreasCT") == (3, 2)
    assert sizes.pop("Task04_PhantomBrainMRI") == (2, 1)  # TEST left out: --test-cases
    assert set(sizes.values()) == {(1, 1)}
    pancreas = out / "Task02_PhantomPancreasCT"
    meta = json.loads((pancreas / "dataset.json").read_text())
    assert len(meta["training"]) == 3 and len(meta["test"]) == 2
    assert len(list((pancreas / "imagesTr").iterdir())) == 3
    assert len(list((pancreas / "labelsTs").iterdir())) == 2
    capsys.readouterr()

    rc = main(["make-phantoms", str(tmp_path / "bad"), "--dataset-cases", "Task99_Nothing=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Task99_Nothing" in err[0] and "Task02_PhantomPancreasCT" in err[0]
    assert not (tmp_path / "bad").exists()
    rc = main(["make-phantoms", str(tmp_path / "bad"), "--dataset-cases", "Task02_PhantomPancreasCT=0,1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Task02_PhantomPancreasCT: need >= 1 training" in err[0]
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["make-phantoms", "x", "--dataset-cases", "Task02_PhantomPancreasCT"])
