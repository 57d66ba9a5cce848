"""mambaesr-demo: runs a variant end to end and reports parity; bad arguments exit non-zero."""

from __future__ import annotations

import re

import pytest

from mambaesr_runtime.cli.demo import main


@pytest.mark.usefixtures("needs_torch")
def test_demo_runs_tiny_and_reports_parity(capsys):
    assert main(["--variant", "tiny", "--size", "12"]) == 0
    out = capsys.readouterr().out
    assert "(1, 3, 12, 12) -> output (1, 3, 48, 48)" in out
    err = float(re.search(r"max abs difference ([0-9.e+-]+)", out).group(1))
    assert err <= 1e-4


@pytest.mark.parametrize("argv", [["--variant", "huge"], ["--size", "0"]])
def test_demo_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
