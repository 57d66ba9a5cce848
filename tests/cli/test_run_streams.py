"""mambaesr-run with its streams taken away: a reader that went away (``| head -1``) or a stderr closed at start
(``2>&-``) never turns written outputs into a failure or mixes error lines into the results, and a file name that
is not UTF-8 is printed as its own bytes, not a UnicodeEncodeError. Real processes, real pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.runtime.imageio import write_image
from tinymodels import untrained

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from mambaesr_runtime.cli.run import main; sys.exit(main(sys.argv[1:]))"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    return str(export_onnx(untrained("tiny"), tmp_path_factory.mktemp("engine") / "tiny_t16_b2.onnx", 16, 16, batch=2))


def env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def images(folder: Path, names) -> Path:
    folder.mkdir()
    for name in names:
        write_image(folder / name, np.full((8, 8, 3), 50, np.uint8))
    return folder


@pytest.mark.parametrize("json_report", [False, True])
def test_a_reader_that_went_away_does_not_fail_a_run_that_wrote_its_outputs(engine, tmp_path, json_report):
    """Before: the first "a.png -> ..." line (or the --json report) raised BrokenPipeError: a traceback, exit 1,
    and the files after it were never upscaled."""
    src = images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write to stdout meets a closed pipe
    try:
        done = subprocess.run([*CLI, src, "-o", tmp_path / "out", "--model", engine, "--overlap", "4", "-q",
                               *(["--json"] if json_report else [])], stdout=write, stderr=subprocess.PIPE,
                              env=env(), check=False, timeout=300)
    finally:
        os.close(write)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_failure_still_exits_1_when_stdout_is_gone(engine, tmp_path):
    src = images(tmp_path / "in", ["a.png"])
    (src / "b.png").write_bytes(b"")
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([*CLI, src, "-o", tmp_path / "out", "--model", engine, "--overlap", "4", "-q"],
                              stdout=write, stderr=subprocess.PIPE, env=env(), check=False, timeout=300)
    finally:
        os.close(write)
    assert done.returncode == 1 and b"b.png: the file is empty" in done.stderr


def test_with_stderr_closed_errors_never_reach_stdout(engine, tmp_path):
    """Before: with fd 2 closed, sys.stderr is None and print(..., file=None) wrote "error: ..." to stdout."""
    src = images(tmp_path / "in", ["a.png"])
    (src / "b.png").write_bytes(b"")
    argv = [*CLI, src, "-o", tmp_path / "out", "--model", engine, "--overlap", "4", "-q"]
    done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", *map(str, argv)], stdout=subprocess.PIPE,
                          env=env(), check=False, timeout=300)
    assert done.returncode == 1
    assert done.stdout.decode().splitlines() == [f"{src / 'a.png'} -> {tmp_path / 'out' / 'a.png'}"]
    assert (tmp_path / "out" / "a.png").exists()


def test_a_file_name_that_is_not_utf8_is_printed_as_its_bytes(engine, tmp_path):
    """Before, with a strict stdout (PYTHONIOENCODING=utf-8, or any UTF-8 locale but C): UnicodeEncodeError after
    the output was written, a traceback and exit 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png", np.full((8, 8, 3), 50, np.uint8))
    os.rename(folder / "a.png", os.fsencode(folder) + b"/\xff.png")
    (folder / os.fsdecode(b"\xfe.png")).write_bytes(b"")  # a bad file: its error line names it too
    done = subprocess.run([*CLI, folder, "--model", engine, "--overlap", "4", "-q"], capture_output=True,
                          env=env(PYTHONIOENCODING="utf-8"), check=False, timeout=300)
    assert done.returncode == 1, done.stderr.decode(errors="replace")
    assert done.stdout == os.fsencode(folder) + b"/\xff.png -> " + os.fsencode(folder) + b"/\xff_x4.png\n"
    assert b"\xfe.png: the file is empty" in done.stderr or b"\\udcfe.png: the file is empty" in done.stderr
    assert b"Traceback" not in done.stderr
    assert os.path.exists(os.fsencode(folder) + b"/\xff_x4.png")
