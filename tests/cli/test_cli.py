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
