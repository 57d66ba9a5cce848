"""mambaesr-run against hostile inputs: a bad file never ends a folder run, everything about the destination is
refused before any compute, every per-file message names its file, a re-run never upscales its own outputs, bad
numbers are exit 2, and a NaN-producing engine is an error naming the engine and the tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hostile
from mambaesr_runtime.cli.run import main
from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.runtime import upscaler as upscaler_module
from mambaesr_runtime.runtime.imageio import read_image, write_image
from tinymodels import untrained


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)
    return str(export_onnx(untrained("tiny"), tmp_path_factory.mktemp("engine") / "tiny_t16_b2.onnx", 16, 16, batch=2))


def run(engine, *argv):
    return main([*map(str, argv), "--model", engine, "--overlap", "4", "-q"])


def test_one_bad_file_never_ends_a_folder_run(engine, tmp_path, capsys):
    """Before: the 65535x65535 header-only PNG raised cv2.error out of the loop (traceback, exit 1, c.png never
    written), and a folder holding a symlink loop wrote nothing (RuntimeError from Path.resolve)."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png", np.full((8, 8, 3), 50, np.uint8))
    (folder / "b.png").write_bytes(hostile.png_header(65535, 65535))
    write_image(folder / "c.png", np.full((8, 8, 3), 90, np.uint8))
    (folder / "d.png").symlink_to(folder / "e.png")
    (folder / "e.png").symlink_to(folder / "d.png")
    out = tmp_path / "out"
    assert run(engine, folder, "-o", out) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    err = capsys.readouterr().err
    assert "b.png: a 65535x65535 input makes" in err and "d.png: a loop of symbolic links" in err
    assert "e.png: a loop of symbolic links" in err and "3 of 5 inputs failed" in err


def test_an_unexpected_exception_is_reported_by_file_and_the_run_goes_on(engine, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        write_image(folder / name, np.full((8, 8, 3), 50, np.uint8))
    real = upscaler_module.read_photo

    def flaky(path, header=None, **kwargs):
        if path.name == "b.png":
            raise MemoryError()
        if path.name == "c.png":
            raise RuntimeError("decoder exploded")
        return real(path, header, **kwargs)

    monkeypatch.setattr(upscaler_module, "read_photo", flaky)
    assert run(engine, folder, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "b.png: out of memory while processing it" in err
    assert "c.png: failed with RuntimeError: decoder exploded" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_ctrl_c_still_stops_the_run_with_130(engine, tmp_path, monkeypatch, capsys):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, np.full((8, 8, 3), 50, np.uint8))

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(upscaler_module, "read_photo", interrupt)
    assert run(engine, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out") == 130
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("out_name, words", [
    ("missing/x.png", "does not exist; create it"), ("x.xyz", "cannot write .xyz"),
    ("x.gif", "cannot write .gif"), ("noext", "cannot write files without an extension"),
    ("x16.jpg", ".jpg cannot hold 16-bit samples"), ("rgba.jpg", ".jpg has no alpha channel")])
def test_the_destination_is_refused_before_any_compute(engine, tmp_path, capsys, monkeypatch, out_name, words):
    """Before: these were refused by write_image, after the model had run."""
    src = write_image(tmp_path / "in.png", np.full((8, 8, 4 if "rgba" in out_name else 3), 50,
                                                   np.uint16 if "16" in out_name else np.uint8))
    monkeypatch.setattr(upscaler_module, "upscale_tiled", lambda *a, **k: pytest.fail("the model ran"))
    monkeypatch.setattr(upscaler_module, "read_photo", lambda *a, **k: pytest.fail("the input was decoded"))
    assert run(engine, src, "-o", tmp_path / out_name) == 2
    err = capsys.readouterr().err
    assert words in err and out_name.split("/")[-1] in err


def test_an_unwritable_destination_is_refused_before_any_compute(engine, tmp_path, capsys, monkeypatch):
    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    monkeypatch.setattr(upscaler_module, "upscale_tiled", lambda *a, **k: pytest.fail("the model ran"))
    assert run(engine, src, "-o", "/proc/mambaesr-out.png") == 2  # not writable, even for root
    assert "mambaesr-out.png: the output folder /proc is not writable" in capsys.readouterr().err


def test_every_per_file_message_names_the_file(engine, tmp_path, capsys):
    """Before: "image: unsupported sample type float32" and "a 8000x8000 input makes ..." named no file."""
    hostile.float_tiff(tmp_path / "float.tif")
    (tmp_path / "big.png").write_bytes(hostile.png_header(8000, 8000))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"hello")
    assert run(engine, tmp_path, "-o", tmp_path / "out") == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 4
    for line, name in zip(lines, ("big.png", "empty.png", "float.tif", "text.jpg")):
        assert f"error: {tmp_path / name}" in line, line


def test_a_second_run_without_o_skips_its_own_outputs(engine, tmp_path, capsys):
    """Before: the second run upscaled a_x4.png into a_x4_x4.png."""
    write_image(tmp_path / "a.png", np.full((8, 8, 3), 50, np.uint8))
    write_image(tmp_path / "b_x4.png", np.full((8, 8, 3), 50, np.uint8))  # no b.png beside it: a user's file
    assert run(engine, tmp_path) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x4.png", "b_x4.png", "b_x4_x4.png"]
    capsys.readouterr()
    assert run(engine, tmp_path) == 2  # a_x4.png exists (refused: no --overwrite); the outputs are skipped
    err = capsys.readouterr().err
    assert "skipped " + str(tmp_path / "a_x4.png") in err and "b_x4_x4.png: named like the output of" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x4.png", "b_x4.png", "b_x4_x4.png"]
    assert run(engine, tmp_path, "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x4.png", "b_x4.png", "b_x4_x4.png"]


def test_a_folder_run_never_takes_a_killed_writers_temporary_as_an_input(engine, tmp_path):
    """A SIGKILLed run leaves its temporary (.<name>.<random>.<ext>, half a file) beside the output; a later folder
    run over that folder must not upscale it (before: it failed as a corrupt input, or upscaled half a picture)."""
    folder = tmp_path / "in"
    folder.mkdir()
    data = write_image(folder / "a.png", np.full((8, 8, 3), 50, np.uint8)).read_bytes()
    (folder / ".b.png.k1ll3d00.png").write_bytes(data[:len(data) // 2])
    assert run(engine, folder, "-o", tmp_path / "out") == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


@pytest.mark.parametrize("argv, words", [
    (["--threads", "100000"], "threads must be an integer from 0"), (["--threads", "-1"], "threads must be"),
    (["--max-megapixels", "nan"], "must be a positive number"), (["--max-megapixels", "-5"], "positive number"),
    (["--max-megapixels", "inf"], "positive number"), (["--scale", "0"], "--scale must be a positive integer"),
    (["--frames", "0"], "--frames must be at least 1"), (["--camera", "-1"], "--camera takes a camera index"),
    (["--camera", "/dev/video0"], "or a GStreamer pipeline ending in appsink")])
def test_bad_numbers_exit_2_before_anything_opens(engine, tmp_path, capsys, argv, words):
    """Before: --threads 100000 crashed the process (exit 139); -1, nan and -5 were accepted."""
    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    assert run(engine, src, *argv) == 2
    assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_adaptive_with_one_model_says_there_is_nothing_to_switch(engine, tmp_path, capsys):
    """Before: "profile 'cpu' has no tier 'model'", which named neither flag."""
    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    assert run(engine, src, "--adaptive") == 2
    assert "drop --model to let the monitor choose, or --adaptive" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


@pytest.mark.parametrize("kind, words", [("two_d", "maps \\[4, 16\\] to \\[4, 16\\]"),
                                         ("shrink", "not an integer upscale")])
def test_a_graph_that_is_not_an_engine_exits_2(tmp_path, capsys, kind, words):
    """Before: a 2-D-input ONNX raised IndexError; a shrinking one had scale 0, so --scale 0 reached a ValueError."""
    import re

    model = hostile.onnx_graph(tmp_path / f"{kind}.onnx", kind)
    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    for scale in ("4", "0"):
        assert main([str(src), "--model", str(model), "--scale", scale, "-q"]) == 2
        assert re.search(words if scale == "4" else "--scale must be a positive", capsys.readouterr().err)


def test_nan_output_is_an_error_naming_engine_and_tile(tmp_path, capsys):
    """Before: an ONNX whose output is NaN gave exit 0 and an all-black image."""
    model = hostile.onnx_graph(tmp_path / "nan.onnx", "zero_nan", tile=16)
    img = np.full((40, 40, 3), 50, np.uint8)
    img[30:, 30:] = 0  # x / x is NaN only here: the bottom-right tile, and no other
    src = write_image(tmp_path / "in.png", img)
    assert main([str(src), "--model", str(model), "--overlap", "2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "in.png: engine nan.onnx (onnxruntime, fp32, tier model): tile 9 of 9 (LR rows 24-39, columns 24-39) " \
           "came out with NaN or infinite values" in err
    assert "re-export it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "nan.onnx"]
    img[30:, 30:] = 10
    write_image(src, img, overwrite=True)
    assert main([str(src), "--model", str(model), "--overlap", "2", "-q"]) == 0  # finite everywhere: fine
    assert read_image(tmp_path / "in_x4.png").shape == (160, 160, 3)


def test_telemetry_flag_and_its_old_name(tmp_path, capsys):
    """--telemetry names the source as mambaesr-monitor does; --monitor (the old name) still works and says so."""
    src = write_image(tmp_path / "a.png", np.full((8, 8, 3), 50, np.uint8))
    assert main([str(src), "--adaptive", "--telemetry", "psutil", "-q"]) == 0  # the cpu profile's shipped engines
    err = capsys.readouterr().err
    assert "adaptive:" in err and "note:" not in err
    assert main([str(src), "--adaptive", "--monitor", "psutil", "-q", "--overwrite"]) == 0
    assert "note: --monitor is now called --telemetry" in capsys.readouterr().err


@pytest.mark.parametrize("camera, words", [
    ("+0", "got '+0' (write the index as plain digits, e.g. 0: no sign"), (" 0", "got ' 0' (write the index as plain"),
    ("0 ", "got '0 ' (write the index"), ("\u00b2", "--camera takes a camera index written as digits")])
def test_a_camera_index_is_plain_digits(engine, tmp_path, capsys, monkeypatch, camera, words):
    """Before: '+0' and ' 0' passed the check as index 0, then went on as the string, opened as a video file after
    the model had loaded ("+0: no such video file")."""
    monkeypatch.setattr(upscaler_module, "open_backend", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["--camera", camera, "-o", str(tmp_path / "cam.mp4"), "-q"]) == 2
    assert words in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make, words", [
    (lambda p: p / "nonexistent", "--engines {}: no such folder; give the folder mambaesr-export wrote"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "--engines {}: is a file, not a folder")])
def test_an_engines_folder_that_is_not_one_is_refused(tmp_path, capsys, monkeypatch, make, words):
    """Before: --engines /nonexistent fell back to the shipped engines without a word."""
    from mambaesr_runtime.runtime import engines as engines_module

    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    folder = make(tmp_path)
    monkeypatch.setattr(engines_module, "open_backend", lambda *a, **k: pytest.fail("an engine was loaded"))
    assert main([str(src), "--engines", str(folder), "-q"]) == 2
    assert words.format(folder) in capsys.readouterr().err
    assert not (tmp_path / "in_x4.png").exists()


def test_mambaesr_engines_pointing_at_a_file_is_refused(tmp_path, capsys, monkeypatch):
    """Before: $MAMBAESR_ENGINES/cpu under a file was simply not found, and the shipped engines ran."""
    from mambaesr_runtime.runtime import engines as engines_module

    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    (tmp_path / "engines.txt").write_text("not a folder")
    monkeypatch.setenv("MAMBAESR_ENGINES", str(tmp_path / "engines.txt"))
    monkeypatch.setattr(engines_module, "open_backend", lambda *a, **k: pytest.fail("an engine was loaded"))
    assert main([str(src), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"MAMBAESR_ENGINES={tmp_path / 'engines.txt'} is a file, not a folder; point it at the folder" in err
    monkeypatch.setenv("MAMBAESR_ENGINES", str(tmp_path / "missing"))
    assert main([str(src), "-q"]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    monkeypatch.undo()
    (tmp_path / "all").mkdir()  # a folder without engines for this device: the shipped ones, as before
    monkeypatch.setenv("MAMBAESR_ENGINES", str(tmp_path / "all"))
    assert main([str(src), "-q"]) == 0


@pytest.mark.parametrize("model, precision, words", [
    ("shipped", "fp16", "student_x4_t264_b1.onnx is an fp32 engine (its manifest says so) and computes in fp32 on "
                        "onnxruntime: --precision fp16 cannot change that; for fp16, build a TensorRT plan on the "
                        "device (mambaesr-export --device cpu --precision fp16)"),
    ("shipped", "int8", "is an fp32 engine (its manifest says so) and computes in fp32 on onnxruntime: --precision "
                        "int8 cannot change that; for int8, export the int8 QDQ graph"),
    ("tiny", "fp16", "tiny_t16_b2.onnx is an ONNX graph, which ONNX Runtime runs in the types it was made in")])
def test_a_precision_the_engine_file_does_not_have_is_refused(engine, tmp_path, capsys, monkeypatch, model,
                                                              precision, words):
    """Before: --model X.onnx --precision fp16 ran fp32 (and the summary said fp32), as if asked for."""
    from mambaesr_runtime.runtime.upscaler import shipped_model

    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    path = str(shipped_model()) if model == "shipped" else engine
    monkeypatch.setattr(upscaler_module, "open_backend", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main([str(src), "--model", path, "--precision", precision, "--overlap", "4", "-q"]) == 2
    err = capsys.readouterr().err
    assert words in err and "or leave out --precision" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_the_precision_an_engine_file_has_is_accepted(engine, tmp_path):
    from mambaesr_runtime.runtime.upscaler import shipped_model

    src = write_image(tmp_path / "in.png", np.full((8, 8, 3), 50, np.uint8))
    assert main([str(src), "--model", str(shipped_model()), "--precision", "fp32", "-q"]) == 0
    assert main([str(src), "--model", engine, "--precision", "fp32", "--overlap", "4", "-q", "--overwrite"]) == 0
