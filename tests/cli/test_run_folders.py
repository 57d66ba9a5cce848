"""mambaesr-run's folder rules and default names: a folder run says what it leaves out (subfolders, hidden and
system files) instead of failing on them or skipping them silently; -o must be a folder for a folder input (and a
trailing slash makes it one for a single input); the default output suffix is one that can be written (a GIF
still becomes PNG, a WebM without PyAV becomes MP4); an input that vanishes mid-run fails by itself.

The model is an x4 nearest-neighbour ONNX graph."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

import hostile
from mambaesr_runtime.cli import run as run_module
from mambaesr_runtime.cli.run import main
from mambaesr_runtime.runtime.imageio import read_image, write_image
from mambaesr_runtime.runtime.upscaler import Upscaler


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return str(hostile.onnx_graph(tmp_path_factory.mktemp("engine") / "nearest.onnx", "nearest"))


def run(engine, *argv):
    return main([*map(str, argv), "--model", engine, "--overlap", "4", "-q"])


def image(path, value=50):
    return write_image(path, np.full((8, 8, 3), value, np.uint8))


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_subfolders_hidden_and_system_files_are_skipped_and_said(engine, tmp_path, capsys):
    """Before: a subfolder was skipped without a word, and macOS's ._a.jpg (a resource fork, not a JPEG) failed the
    run with exit 1."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    image(src / "a.jpg")
    image(src / "sub" / "b.png")
    (src / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (src / ".DS_Store").write_bytes(b"Bud1")
    (src / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    assert run(engine, src, "-o", tmp_path / "out", "--json") == 0
    captured = capsys.readouterr()
    assert names(tmp_path / "out") == ["a.jpg"]
    assert f"note: {src}: skipped 1 subfolder (sub): a folder run reads only the files directly in it; give a " \
           f"subfolder as an input to upscale it" in captured.err
    assert f"note: {src}: skipped 3 hidden or system files (.DS_Store, ._a.jpg, Thumbs.db)" in captured.err
    report = json.loads(captured.out)
    assert report["skipped"] == 4 and report["done"] == 1 and report["failed"] == 0
    assert run(engine, src / "sub", "-o", tmp_path / "out") == 0  # a subfolder given as an input is upscaled
    assert names(tmp_path / "out") == ["a.jpg", "b.png"]


def test_a_folder_of_only_subfolders_says_so(engine, tmp_path, capsys):
    (tmp_path / "in" / "2024").mkdir(parents=True)
    image(tmp_path / "in" / "2024" / "a.png")
    assert run(engine, tmp_path / "in", "-o", tmp_path / "out") == 2
    assert "holds no images or videos" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["clip.mp4", "big.png"])
def test_a_folder_input_with_a_file_output_is_refused_with_the_fix(engine, tmp_path, capsys, out):
    """Before: -o clip.mp4 for a folder created a directory named clip.mp4 and wrote the images into it."""
    (tmp_path / "in").mkdir()
    image(tmp_path / "in" / "a.png")
    assert run(engine, tmp_path / "in", "-o", tmp_path / out) == 2
    stem = out.split(".")[0]
    assert f"looks like a file, but a folder is given: pass a folder (created if new, e.g. -o {tmp_path / stem}/)" \
        in capsys.readouterr().err
    assert names(tmp_path) == ["in"]


def test_an_existing_file_as_the_output_of_several_inputs_is_refused(engine, tmp_path, capsys):
    """Before: [Errno 17] File exists: 'out' (the output folder could not be made over the file)."""
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    (tmp_path / "out").write_text("mine")
    assert run(engine, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"-o {tmp_path / 'out'} is a file, but several inputs are given: pass a folder" in err
    assert "Errno" not in err and (tmp_path / "out").read_text() == "mine"


def test_a_trailing_slash_makes_the_output_a_folder_for_one_input(engine, tmp_path):
    """Before: -o newdir/ was taken as a file name (and refused for having no extension)."""
    image(tmp_path / "a.png")
    assert run(engine, tmp_path / "a.png", "-o", f"{tmp_path / 'newdir'}/") == 0
    assert names(tmp_path / "newdir") == ["a.png"]
    assert read_image(tmp_path / "newdir" / "a.png").shape == (32, 32, 3)


def test_a_gif_still_is_written_as_png_by_default(engine, tmp_path):
    """Before: without -o the output was a_x4.gif, which cannot be written: a readable GIF always failed."""
    cv2.imwrite(str(tmp_path / "a.gif"), np.full((8, 8, 3), 90, np.uint8))
    assert run(engine, tmp_path / "a.gif") == 0
    assert read_image(tmp_path / "a_x4.png").shape == (32, 32, 3)
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "b.gif"), np.full((8, 8, 3), 90, np.uint8))
    assert run(engine, folder, "-o", tmp_path / "out") == 0  # a folder run takes GIF stills too
    assert names(tmp_path / "out") == ["b.png"]
    # a second run: a_x4.png is skipped as a.gif's output (not upscaled into a_x4_x4.png), and a.gif's output exists
    assert run(engine, tmp_path) == 2
    assert names(tmp_path) == ["a.gif", "a_x4.png", "in", "out"]


def test_two_inputs_that_would_write_one_file_are_refused_up_front(engine, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.gif"), np.full((8, 8, 3), 90, np.uint8))
    image(tmp_path / "a.png")
    assert run(engine, tmp_path, "-o", tmp_path / "out") == 2
    assert "a.gif and" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_webm_without_pyav_defaults_to_mp4(engine, tmp_path, monkeypatch):
    """Before: the default output was .webm, which only PyAV writes: without it a readable WebM always failed."""
    from mambaesr_runtime.cli.run import _default_suffix

    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    images = run_module._suffixes()[0]
    assert _default_suffix(tmp_path / "clip.webm", images, None) == ".mp4"
    assert _default_suffix(tmp_path / "clip.WEBM", images, None) == ".mp4"
    assert _default_suffix(tmp_path / "clip.mkv", images, None) == ".mkv"
    monkeypatch.delitem(sys.modules, "av")
    pytest.importorskip("av")
    assert _default_suffix(tmp_path / "clip.webm", images, None) == ".webm"


def test_a_webm_without_pyav_is_upscaled_to_mp4(engine, tmp_path, monkeypatch):
    pytest.importorskip("av", reason="PyAV makes the clip")
    import clips

    src = clips.make_clip(tmp_path / "clip.webm", vcodec="libvpx-vp9", acodec="libopus")
    monkeypatch.setitem(sys.modules, "av", None)
    assert run(engine, src) == 0
    assert names(tmp_path) == ["clip.webm", "clip_x4.mp4"]
    cap = cv2.VideoCapture(str(tmp_path / "clip_x4.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(clips.VFR_MS)
    cap.release()


def test_an_input_that_vanishes_mid_run_fails_by_itself(engine, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        image(src / name)
    real = Upscaler.upscale_file

    def and_delete_b(self, source, *a, **k):
        out = real(self, source, *a, **k)
        if source.name == "a.png":
            (src / "b.png").unlink()  # another program removes an input the run has listed
        return out

    monkeypatch.setattr(Upscaler, "upscale_file", and_delete_b)
    assert run(engine, src, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"error: {src / 'b.png'}: no such file" in err and "1 of 3 inputs failed" in err
    assert names(tmp_path / "out") == ["a.png", "c.png"]


def test_an_output_folder_removed_mid_run_fails_the_rest_by_name(engine, tmp_path, capsys, monkeypatch):
    """Before (rm -rf of the inputs and outputs while a run went on): '[Errno 17] File exists: out' from a mkdir
    racing the removal. Each remaining file now fails with the reason, before it is decoded."""
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        image(src / name)
    real = Upscaler.upscale_file

    def and_remove_out(self, source, *a, **k):
        out = real(self, source, *a, **k)
        shutil.rmtree(tmp_path / "out")
        return out

    monkeypatch.setattr(Upscaler, "upscale_file", and_remove_out)
    assert run(engine, src, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"the output folder {tmp_path / 'out'} does not exist; create it or choose another output" in err
    assert "Errno" not in err and not (tmp_path / "out").exists()
