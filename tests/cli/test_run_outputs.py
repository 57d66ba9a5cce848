"""mambaesr-run never loses data at its outputs: two runs to the same output (image or video) cannot both "succeed"
with one silently replacing the other, a full disk fails the file instead of leaving an empty or unplayable one, a
long but valid output name works, and refusals that the header and the arguments decide come before any decode.

Real processes where the point is a race or a limit (two CLIs at once, RLIMIT_FSIZE), main() in-process elsewhere.
The model is an x4 nearest-neighbour ONNX graph."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hostile
from mambaesr_runtime.cli.run import main
from mambaesr_runtime.runtime import upscaler as upscaler_module
from mambaesr_runtime.runtime.imageio import read_image, write_image

ROOT = Path(__file__).resolve().parents[2]

HOLD_VIDEO = """
import os, time
from mambaesr_runtime.runtime import avvideo
real = avvideo.finish_output
def held(*a, **k):
    while not os.path.exists('go'):
        time.sleep(0.02)
    return real(*a, **k)
avvideo.finish_output = held
"""
MAIN = """
import sys
from mambaesr_runtime.cli.run import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return str(hostile.onnx_graph(tmp_path_factory.mktemp("engine") / "nearest.onnx", "nearest"))


def env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}


def cli(folder: Path, argv, prelude: str = "", **kw):
    return subprocess.Popen([sys.executable, "-c", prelude + MAIN, *map(str, argv)], cwd=folder, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("kind", ["image", "video"])
def test_of_two_runs_to_the_same_output_the_second_to_finish_fails_and_replaces_nothing(engine, tmp_path, kind):
    """Before: both exited 0, and the one that finished last silently replaced the other's output."""
    if kind == "video":
        pytest.importorskip("av", reason="PyAV (the video extra) makes the clip")
        import clips

        src, out, hold = clips.make_clip(tmp_path / "in.mp4", audio=False), tmp_path / "out.mp4", HOLD_VIDEO
        temporary = ".out.mp4.*"
    else:
        src, out, hold = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8)), tmp_path / "out.png", \
            hostile.HOLD_IMAGE
        temporary = ".out.png.*"
    argv = [src, "-o", out, "--model", engine, "--overlap", "4", "-q"]
    first = cli(tmp_path, argv, hold)  # passes its checks (no out yet), then waits with its result complete
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(temporary)):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    second = subprocess.run([sys.executable, "-c", MAIN, *map(str, argv)], cwd=tmp_path, env=env(),
                            capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    written = out.read_bytes()
    (tmp_path / "go").touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 2, err
    assert f"{out} appeared while this {kind} was being upscaled" in err and "pass --overwrite" in err
    assert out.read_bytes() == written  # the second run's output, untouched
    assert names(tmp_path) == sorted(["go", src.name, out.name])  # the loser's temporary is gone


def test_a_full_disk_fails_an_image_and_leaves_nothing(engine, tmp_path):
    """A write past RLIMIT_FSIZE fails as on a full disk (EFBIG); the message says what to do."""
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    src = write_image(tmp_path / "in.png", noise)
    code = ("import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({src.stat().st_size}, {src.stat().st_size}))\n" + MAIN)
    done = subprocess.run([sys.executable, "-c", code, str(src), "-o", str(tmp_path / "out.png"), "--model", engine,
                           "--overlap", "4", "-q"], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert "out.png: cannot write (File too large); nothing was written: free space" in done.stderr
    assert names(tmp_path) == ["in.png"]


def test_a_long_valid_output_name_works_and_an_impossible_one_is_refused_before_the_model(engine, tmp_path, capsys,
                                                                                          monkeypatch):
    """Before: a 243-byte name was refused after the whole upscale (its temporary's name passed 255 bytes)."""
    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    name = "o" * 243 + ".png"
    assert main([str(src), "-o", str(tmp_path / name), "--model", engine, "--overlap", "4", "-q"]) == 0
    assert read_image(tmp_path / name).shape == (32, 32, 3)
    monkeypatch.setattr(upscaler_module, "read_photo", lambda *a, **k: pytest.fail("the input was decoded"))
    too_long = "o" * 256 + ".png"
    assert main([str(src), "-o", str(tmp_path / too_long), "--model", engine, "--overlap", "4", "-q"]) == 2
    assert "is 260 bytes long and this file system takes at most 255: choose a shorter name" in \
        capsys.readouterr().err.replace("the file name is", "is")
    assert names(tmp_path) == sorted(["in.png", name])


@pytest.mark.parametrize("out, words", [
    ("wide.webp", "the output would be 16800x40, and .webp holds at most 16383 pixels a side; write .png or .tif"),
    ("wide.png", None)])
def test_a_format_size_limit_is_refused_before_any_decode(engine, tmp_path, capsys, monkeypatch, out, words):
    """Before: WebP's 16,383-px limit was found by the encoder, after the whole upscale, with raw OpenCV ERROR lines."""
    src = write_image(tmp_path / "in.png", np.full((10, 4200, 3), 90, np.uint8))
    if words:
        monkeypatch.setattr(upscaler_module, "read_photo", lambda *a, **k: pytest.fail("the input was decoded"))
    code = main([str(src), "-o", str(tmp_path / out), "--model", engine, "--overlap", "4", "-q"])
    err = capsys.readouterr().err
    if words:
        assert code == 2 and words in err and "ERROR" not in err
        assert names(tmp_path) == ["in.png"]
    else:
        assert code == 0 and read_image(tmp_path / out).shape == (40, 16800, 3)


def test_a_cmyk_tiff_goes_to_jpeg_as_rgb(engine, tmp_path, capsys):
    """Before: refused for an alpha it does not have (after the upscale), and a PNG output came out RGBA."""
    src = hostile.cmyk_tiff(tmp_path / "print.tif")
    assert main([str(src), "-o", str(tmp_path / "print.jpg"), "--model", engine, "--overlap", "4", "-q"]) == 0
    assert main([str(src), "-o", str(tmp_path / "print.png"), "--model", engine, "--overlap", "4", "-q"]) == 0
    assert read_image(tmp_path / "print.jpg").shape == (20, 24, 3)
    assert read_image(tmp_path / "print.png").shape == (20, 24, 3)


@pytest.mark.parametrize("depth", [8, 16])
def test_a_gray_png_with_trns_keeps_its_transparency_and_jpeg_is_refused_before_the_model(engine, tmp_path, capsys,
                                                                                         monkeypatch, depth):
    src = hostile.gray_trns_png(tmp_path / "g.png", depth, (6, 5), key=1)
    assert main([str(src), "--model", engine, "--overlap", "4", "-q"]) == 0
    out = read_image(tmp_path / "g_x4.png")
    assert out.shape == (24, 20, 2) and out[..., 1].min() == 0 and out[..., 1].max() == (255 if depth == 8 else 65535)
    monkeypatch.setattr(upscaler_module, "upscale_tiled", lambda *a, **k: pytest.fail("the model ran"))
    assert main([str(src), "-o", str(tmp_path / "g.jpg"), "--model", engine, "--overlap", "4", "-q"]) == 2
    err = capsys.readouterr().err
    assert ("cannot hold gray+alpha here (the image has transparency); write .png" in err if depth == 8 else
            "cannot hold 16-bit samples" in err)
    assert names(tmp_path) == ["g.png", "g_x4.png"]


@pytest.mark.parametrize("kind", ["cut", "tall"])
def test_a_jpeg_missing_rows_fails_with_the_reason(engine, tmp_path, capsys, kind):
    (tmp_path / "p.jpg").write_bytes(hostile.truncated_jpeg(kind))
    assert main([str(tmp_path / "p.jpg"), "--model", engine, "--overlap", "4", "-q"]) == 2
    assert "p.jpg: the JPEG's image data ends before its last row" in capsys.readouterr().err
    assert names(tmp_path) == ["p.jpg"]


def test_a_png_trns_after_5000_chunks_is_known_before_the_model(engine, tmp_path, capsys, monkeypatch):
    """Before: the header walk stopped at 4,096 chunks: 'no alpha', so -o x.jpg ran the model and then failed."""
    src = hostile.png_with_chunks(tmp_path / "late.png", 5000, hostile.trns_rgb(120))
    monkeypatch.setattr(upscaler_module, "upscale_tiled", lambda *a, **k: pytest.fail("the model ran"))
    assert main([str(src), "-o", str(tmp_path / "x.jpg"), "--model", engine, "--overlap", "4", "-q"]) == 2
    assert ".jpg has no alpha channel and the image has one" in capsys.readouterr().err
