"""mambaesr-run stopped by a real signal: SIGTERM (kill, systemd, docker stop) and SIGHUP (the terminal closed) unwind
as Ctrl+C does, so the temporary output is removed, and the exit code is 128 + the signal's number.

Each run is a real process (python -c calling the CLI's main) that is slowed at one point so the signal lands there,
every time: mid-video (after a few frames are in the temporary container) or mid-write of an image (its temporary
file made, the rename not yet done). The test sends the signal once the temporary file exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from processes import spawn_signalable

from mambaesr_runtime.cli.signals import Terminated, exit_code, interrupt_on_termination
from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.runtime.imageio import write_image
from tinymodels import untrained

ROOT = Path(__file__).resolve().parents[2]

# Slow the run down at one point (a frame of a video, the write of an image) so a signal sent once the temporary
# output exists lands while it is in progress; then run the real CLI.
SLOW_VIDEO = """
import time
from mambaesr_runtime.runtime import upscaler
real = upscaler.Upscaler.stream
def slow(self, frames, *a, **k):
    for out in real(self, frames, *a, **k):
        time.sleep(0.2)
        yield out
upscaler.Upscaler.stream = slow
"""
SLOW_IMAGE = """
import time
from mambaesr_runtime.runtime import imageio
real = imageio.atomic_write
def slow(path, write, suffix='.tmp', **kwargs):
    def slow_write(tmp):
        write(tmp)
        time.sleep(60)
    return real(path, slow_write, suffix, **kwargs)
imageio.atomic_write = slow
"""
MAIN = """
import sys
from mambaesr_runtime.cli.run import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    return str(export_onnx(untrained("tiny"), tmp_path_factory.mktemp("engine") / "tiny_t16_b2.onnx", 16, 16, batch=2))


def stopped_run(folder: Path, slow: str, argv: list, temporary: str, sig: int):
    """Run the CLI in ``folder``, send ``sig`` once a file matching ``temporary`` exists; (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    proc = spawn_signalable([sys.executable, "-c", slow + MAIN, *map(str, argv)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(folder.glob(temporary)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"no {temporary} appeared (exit {proc.returncode}): {err[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{signal.Signals(sig).name} did not stop the run")
    return proc.returncode, err


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_mid_video_removes_the_temporary_output(engine, tmp_path, sig, code):
    """Before: SIGTERM and SIGHUP killed the process on the spot (exit -15 / -1) and .out.mp4.<random>.mp4 stayed."""
    pytest.importorskip("av", reason="PyAV (the video extra) makes the clip")
    import clips

    src = clips.make_clip(tmp_path / "clip.mp4", pts_ms=[40 * i for i in range(200)], audio=False)
    got, err = stopped_run(tmp_path, SLOW_VIDEO, [src, "-o", tmp_path / "out.mp4", "--model", engine,
                                                  "--overlap", "4", "-q"], ".out.mp4.*", sig)
    assert got == code, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    name = signal.Signals(sig).name
    assert (f"interrupted by {name}:" if sig != signal.SIGINT else "interrupted:") in err
    assert "out.mp4 was not written" in err and "Traceback" not in err


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_mid_folder_keeps_the_finished_images_and_removes_the_temporary_one(engine, tmp_path, sig, code):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        write_image(src / name, np.full((8, 8, 3), 50, np.uint8))
    out = tmp_path / "out"
    got, err = stopped_run(tmp_path, SLOW_IMAGE, [src, "-o", out, "--model", engine, "--overlap", "4", "-q", "--json"],
                           "out/.a.png.*", sig)
    assert got == code, err
    assert list(out.iterdir()) == [] and sorted(p.name for p in src.iterdir()) == ["a.png", "b.png"]


def test_terminated_is_a_keyboard_interrupt_with_its_exit_code():
    assert issubclass(Terminated, KeyboardInterrupt)
    assert (exit_code(Terminated(signal.SIGTERM)), exit_code(Terminated(signal.SIGHUP))) == (143, 129)
    assert exit_code(KeyboardInterrupt()) == 130


def test_the_handlers_are_restored_and_an_ignored_sighup_stays_ignored():
    """nohup starts a command with SIGHUP ignored: the run must then survive a closed terminal, as before."""
    before_term = signal.getsignal(signal.SIGTERM)
    before_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupt_on_termination():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (before_term, signal.SIG_DFL)
            with pytest.raises(Terminated) as info:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler runs at the next bytecode; the sleep is cut short by it
            assert info.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == before_term
    finally:
        signal.signal(signal.SIGHUP, before_hup)
