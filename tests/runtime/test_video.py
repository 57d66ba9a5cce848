"""Videos that would lose data: a damaged input (a frame that does not decode, a frame its container lists but the
demuxer never delivers) fails instead of coming out shorter, unless allow_frame_loss; a full disk or a file-size
limit fails instead of publishing a file that plays nothing; a file that appears at the destination during the run
is never replaced; a frame too small for OpenCV's MJPG writer is refused before it can corrupt the heap.

Both paths: PyAV (.mp4/.mkv outputs) and OpenCV (.avi outputs, which read their input through OpenCV too). The
model is an x4 nearest-neighbour ONNX graph."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clips
import hostile
from mambaesr_runtime.runtime import avvideo
from mambaesr_runtime.runtime.upscaler import Upscaler
from mambaesr_runtime.runtime.video import MJPG_MIN_SIDE, VideoError, upscale_video

av = pytest.importorskip("av", reason="PyAV (the video extra) makes the clips")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return str(hostile.onnx_graph(tmp_path_factory.mktemp("engine") / "nearest.onnx", "nearest"))


@pytest.fixture()
def up(engine):
    with Upscaler(model=engine, overlap=4) as upscaler:
        yield upscaler


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """(a damaged MJPG .avi: one of 8 frames lost by the demuxer, an MP4 whose mdat is damaged: 7 of 40 frames
    do not decode), made once."""
    folder = tmp_path_factory.mktemp("damaged")
    avi = clips.damaged_avi(clips.mjpg_avi(folder / "good.avi"), folder / "cut.avi", frame=3)
    mp4 = clips.damaged_mdat(clips.noisy_h264(folder / "good.mp4"), folder / "bad.mp4")
    return {"avi": avi, "mp4": mp4}


@pytest.mark.parametrize("kind, out, words", [
    ("avi", "out.mp4", "the container lists 8 frames but only 7 could be read"),
    ("avi", "out.avi", "frame 8 of the 8 its container lists cannot be read"),
    ("mp4", "out.mkv", "(in stream order) does not decode"),
    ("mp4", "out.avi", "of the 40 its container lists cannot be read")])
def test_a_damaged_video_fails_and_writes_nothing(up, damaged, tmp_path, kind, out, words):
    """Before: exit 0 with 1-13 of 8-40 frames, the rest dropped without a word."""
    with pytest.raises(VideoError) as info:
        upscale_video(up, damaged[kind], tmp_path / out)
    assert words in str(info.value) and "nothing was written" in str(info.value)
    assert "allow_frame_loss=True" in str(info.value)
    assert names(tmp_path) == []


@pytest.mark.parametrize("kind, out, frames", [("avi", "out.mp4", 7), ("avi", "out.avi", 7),
                                               ("mp4", "out.mkv", None), ("mp4", "out.avi", 33)])
def test_allow_frame_loss_writes_what_decodes_and_says_how_much_is_missing(up, damaged, tmp_path, caplog, kind,
                                                                          out, frames):
    dst, n = upscale_video(up, damaged[kind], tmp_path / out, allow_frame_loss=True)
    lost = [r.getMessage() for r in caplog.records if "could not be" in r.getMessage()]
    assert len(lost) == 1 and "are left out (allow_frame_loss)" in lost[0], lost
    total = 8 if kind == "avi" else 40
    assert n < total and (frames is None or n == frames)
    assert f"of {total} frames could not be" in lost[0] and f"the output is {n} frames" in lost[0]
    assert avvideo.readable_frames(dst) == n
    assert names(tmp_path) == [out]


def test_an_intact_video_is_not_called_damaged(up, tmp_path):
    src = clips.mjpg_avi(tmp_path / "in.avi")
    assert upscale_video(up, src, tmp_path / "a.mp4")[1] == 8
    assert upscale_video(up, src, tmp_path / "a.avi")[1] == 8
    assert upscale_video(up, src, tmp_path / "b.mkv", max_frames=3)[1] == 3  # stopping early is no loss


FSIZE_RUN = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG) instead of killing
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from mambaesr_runtime.cli.run import main
sys.exit(main(sys.argv[1:]))
"""


def limited_run(folder: Path, limit: int, argv) -> subprocess.CompletedProcess:
    """The CLI in a process whose files cannot grow past ``limit`` bytes: every write past it fails as on a full
    disk (EFBIG rather than ENOSPC; no root, no mount needed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", FSIZE_RUN, str(limit), *map(str, argv)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("out, limit", [("out.mp4", 20000), ("out.avi", 10000), ("out.avi", "index")])
def test_a_disk_that_fills_up_fails_the_video_and_keeps_nothing(engine, tmp_path, out, limit):
    """Before: exit 0, "40 frames" printed, and a file holding no readable frame (its index never written). The
    OpenCV writer (.avi) reports no write error at all: the finished file is read back (10000 bytes: about a third
    of the 40 frames in it; "index": 8 bytes short of the whole file, so every frame is in but the end of the RIFF
    chunk, its index, is cut)."""
    src = clips.make_clip(tmp_path / "in.mp4", pts_ms=[40 * i for i in range(40)])
    argv = [src, "-o", tmp_path / out, "--model", engine, "--overlap", "4", "-q"]
    if limit == "index":
        assert limited_run(tmp_path, resource.RLIM_INFINITY, argv).returncode == 0
        limit = (tmp_path / out).stat().st_size - 8
        (tmp_path / out).unlink()
    done = limited_run(tmp_path, limit, argv)
    assert done.returncode == 2, done.stderr
    assert "the disk is full, or a quota or file-size limit was reached" in done.stderr
    assert "nothing was kept" in done.stderr and "Traceback" not in done.stderr
    assert names(tmp_path) == ["in.mp4"]


def test_a_real_full_disk(engine, tmp_path):
    """The same on a 16 KB tmpfs (ENOSPC, as a full SD card gives it): needs root to mount, skipped otherwise."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)]
    if subprocess.run(mount, capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = clips.make_clip(tmp_path / "in.mp4", pts_ms=[40 * i for i in range(40)])
        for out in ("out.mp4", "out.avi"):
            done = limited_run(tmp_path, resource.RLIM_INFINITY, [src, "-o", mnt / out, "--model", engine,
                                                                  "--overlap", "4", "-q"])
            assert done.returncode == 2 and "the disk is full" in done.stderr, done.stderr
            assert names(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("out", ["out.mp4", "out.avi"])
def test_a_file_created_at_the_destination_during_the_run_is_kept(up, tmp_path, monkeypatch, out):
    """Before: replaced without --overwrite (checked at the start, renamed over at the end)."""
    src = clips.make_clip(tmp_path / "in.mp4", audio=False)
    real = up.stream

    def stream(frames, *a, **k):
        for i, frame in enumerate(real(frames, *a, **k)):
            if i == 2:
                (tmp_path / out).write_bytes(b"someone else's")
            yield frame

    monkeypatch.setattr(up, "stream", stream)
    with pytest.raises(VideoError, match="appeared while this video was being upscaled .* was left as it is"):
        upscale_video(up, src, tmp_path / out)
    assert (tmp_path / out).read_bytes() == b"someone else's"
    assert names(tmp_path) == ["in.mp4", out]
    dst, n = upscale_video(up, src, tmp_path / out, overwrite=True)  # overwrite still replaces
    assert n == len(clips.VFR_MS) and avvideo.readable_frames(dst) == n


def test_a_long_valid_output_name_works(up, tmp_path):
    """Before: refused after the whole upscale: the temporary's name was longer than 255 bytes."""
    src = clips.make_clip(tmp_path / "in.mp4", audio=False)
    name = "v" * 243 + ".mp4"
    _, n = upscale_video(up, src, tmp_path / name)
    assert n == len(clips.VFR_MS) and names(tmp_path) == sorted(["in.mp4", name])
    with pytest.raises(VideoError, match="bytes long and this file system takes at most"):
        upscale_video(up, src, tmp_path / ("v" * 260 + ".mkv"))


SMALL_AVI = """
import sys
from mambaesr_runtime.runtime.upscaler import Upscaler
from mambaesr_runtime.runtime.video import upscale_video
with Upscaler(model=sys.argv[1], overlap=4) as up:
    try:
        upscale_video(up, sys.argv[2], sys.argv[3])
    except Exception as exc:
        print(type(exc).__name__, exc)
        sys.exit(2)
"""


@pytest.mark.parametrize("size", [(1, 1), (2, 3)])
def test_a_frame_too_small_for_the_mjpg_writer_is_refused_before_it_is_opened(engine, tmp_path, size):
    """Before: a 1x1 video to .avi aborted the process (heap corruption in OpenCV's MJPG writer: 'free(): invalid
    next size') and left its temporary. In a child process with glibc's heap checks on, so a corruption aborts."""
    src = clips.mjpg_avi(tmp_path / "tiny.avi", frames=3, size=size)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_CHECK_": "3", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SMALL_AVI, engine, str(src), str(tmp_path / "out.avi")], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.returncode != -signal.SIGABRT, done.stderr
    assert f"is too small for OpenCV's MJPG writer (.avi), which corrupts memory below {MJPG_MIN_SIDE}" in done.stdout
    assert "write .mp4 or .mkv instead" in done.stdout
    assert names(tmp_path) == ["tiny.avi"]


def test_a_tiny_video_still_goes_to_mp4(up, tmp_path):
    src = clips.mjpg_avi(tmp_path / "tiny.avi", frames=3, size=(1, 1))
    dst, n = upscale_video(up, src, tmp_path / "out.mp4")
    assert n == 3
    with av.open(str(dst)) as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (4, 4)
    assert np.asarray(frame.to_ndarray(format="rgb24")).shape == (4, 4, 3)
