"""The other CLIs (mambaesr-eval, -export, -monitor, -demo, -train) have mambaesr-run's guards: SIGTERM and SIGHUP
exit 128 + N after the same cleanup as Ctrl+C, a stdout reader that went away never turns a finished command into a
failure (or a traceback), and mambaesr-eval writes its report atomically.

Before: SIGTERM killed them on the spot (exit -15, a monitor's recording lost), `| head -0` gave BrokenPipeError
tracebacks and exit 1, and an interrupted mambaesr-eval -o left a half-written results.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from processes import spawn_signalable

from mambaesr_runtime.cli import export as export_cli
from mambaesr_runtime.cli import train as train_cli
from mambaesr_runtime.cli.signals import Terminated, guarded_main

ROOT = Path(__file__).resolve().parents[2]
STUDENT = ROOT / "mambaesr_runtime" / "weights" / "student_x4_t264_b1.onnx"


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def command(module: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from mambaesr_runtime.cli.{module} import main; "
                                  f"sys.exit(main(sys.argv[1:]))"]


def reader_gone(argv, timeout=300) -> subprocess.CompletedProcess:
    """Run ``argv`` with a stdout whose reader went away before the first line (``| head -0``)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, env=env(), check=False, timeout=timeout)
    finally:
        os.close(write)


def mini_set(folder: Path) -> Path:
    (folder / "Mini" / "HR").mkdir(parents=True)
    y, x = np.mgrid[0:40, 0:36]
    cv2.imwrite(str(folder / "Mini" / "HR" / "a.png"), np.dstack([x * 6, y * 5, (x + y) * 3]).astype(np.uint8))
    return folder / "Mini"


@pytest.mark.parametrize("module, argv", [
    ("export", ["--list-devices"]),
    ("monitor", ["--telemetry", "psutil", "--count", "2", "--interval", "0.01"]),
    ("eval", [str(STUDENT), "{set}"]),
    ("demo", ["--variant", "tiny", "--size", "16", "--threads", "1"])])
def test_a_stdout_reader_that_went_away_does_not_fail_the_command(tmp_path, module, argv):
    if module == "demo":
        pytest.importorskip("torch", reason="mambaesr-demo runs the PyTorch model")
    done = reader_gone(command(module) + [a.format(set=mini_set(tmp_path)) if "{set}" in a else a for a in argv])
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_train_summary_with_its_reader_gone(tmp_path):
    run = tmp_path / "runs" / "student_1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"curves": {"val": []}}))
    (tmp_path / "runs" / "latest").symlink_to(run)
    done = reader_gone(command("train") + ["summary", "--runs", str(tmp_path / "runs")])
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_stops_the_monitor_with_its_code_and_keeps_the_recording(tmp_path, sig, code):
    record = tmp_path / "trace.json"
    proc = spawn_signalable(command("monitor") + ["--telemetry", "psutil", "--interval", "0.05", "--record",
                                                  str(record)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env(), text=True)
    try:
        deadline = time.monotonic() + 60
        while proc.stdout.readline().count("#") == 0:  # the first sample line: the loop (and its handler) runs
            assert proc.poll() is None and time.monotonic() < deadline
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failure above never leaves a monitor running on
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert f"interrupted by {signal.Signals(sig).name}" in err and "Traceback" not in err
    assert json.loads(record.read_text())["samples"]  # what was seen, written whole (atomically)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json"]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_export_and_train_say_which_signal_stopped_them(monkeypatch, capsys, tmp_path, sig, code):
    from mambaesr_runtime.export import pipeline
    from mambaesr_runtime.training import loop
    from mambaesr_runtime.training import pipeline as training_pipeline  # noqa: F401 - imported now, so it binds
    # the real loop.train (it does `from .loop import train`), not the stand-in below

    def stopped(*a, **k):
        raise Terminated(sig)

    monkeypatch.setattr(pipeline, "export_profile", stopped)
    assert export_cli.main(["--device", "cpu", "-o", str(tmp_path / "out")]) == code
    assert f"interrupted by {signal.Signals(sig).name}; nothing partial was left behind" in capsys.readouterr().err
    monkeypatch.setattr(loop, "train", stopped)
    assert train_cli.main(["student", "--runs", str(tmp_path / "runs"), "--steps", "1"]) == code
    assert f"interrupted by {signal.Signals(sig).name}: the last saved state is intact" in capsys.readouterr().err


def test_guarded_main_turns_an_unhandled_interruption_into_its_exit_code(capsys):
    def body(argv):
        raise Terminated(signal.SIGTERM)

    assert guarded_main(body) == 143
    assert "interrupted by SIGTERM" in capsys.readouterr().err

    def ctrl_c(argv):
        raise KeyboardInterrupt

    assert guarded_main(ctrl_c) == 130


def test_eval_report_is_written_atomically(tmp_path, monkeypatch):
    """An interruption while the report is written leaves each file whole (the previous one), and no temporary."""
    from mambaesr_runtime import fileio
    from mambaesr_runtime.evaluation import benchmark

    out = tmp_path / "report"
    monkeypatch.setattr(benchmark, "markdown_table", lambda result: f"| {result['v']} |\n")
    benchmark.write_report({"v": "old"}, out)
    real_dump = fileio.json.dump

    def cut(data, fh, **kw):
        fh.write('{"v": "ne')  # half the JSON is on disk when Ctrl+C (or SIGTERM) lands
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.json, "dump", cut)
    with pytest.raises(KeyboardInterrupt):
        benchmark.write_report({"v": "new"}, out)
    monkeypatch.setattr(fileio.json, "dump", real_dump)
    assert json.loads((out / "results.json").read_text()) == {"v": "old"}  # before: '{"v": "ne', unreadable
    assert (out / "results.md").read_text() == "| new |\n"
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
    monkeypatch.setattr(benchmark.cv2, "imwrite", lambda path, img: False)  # the disk refuses the crop sheet
    with pytest.raises(OSError, match="could not write the crop sheet"):
        benchmark.write_report({"v": "x"}, out, np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
