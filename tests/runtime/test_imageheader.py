"""Image headers: every format's declared size is read without decoding, decompression bombs are refused from the
header (never decoded, peak memory of a whole refusal far below the bomb's), and what would be silently lost
(animations, extra pages, float samples, a gray+alpha kind) is refused or kept."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest

import hostile
from mambaesr_runtime.errors import MambaESRError
from mambaesr_runtime.runtime import imageio
from mambaesr_runtime.runtime.imageheader import ImageError, read_header
from mambaesr_runtime.runtime.imageio import inspect_image, read_image, write_image
from mambaesr_runtime.runtime.upscaler import Upscaler


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 3), (9, 7, 4)])
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_header_agrees_with_what_opencv_decodes(tmp_path, shape, suffix):
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    path.write_bytes(cv2.imencode(suffix, img)[1].tobytes())
    header = read_header(path)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert (header.height, header.width) == back.shape[:2] == (9, 7)
    assert header.alpha == (back.ndim == 3 and back.shape[2] == 4)
    assert header.bits == 8 and header.frames == 1 and not header.float_samples


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_headers(tmp_path, suffix):
    path = write_image(tmp_path / f"x{suffix}", np.zeros((5, 4, 3), np.uint16))
    header = read_header(path)
    assert header.sixteen_bit and (header.width, header.height) == (4, 5)


@pytest.mark.parametrize("name", sorted(hostile.header_bombs()))
def test_header_bombs_are_refused_without_decoding(tmp_path, name, monkeypatch):
    """Before: the 65535x65535 PNG header gave a cv2.error traceback; every bomb was handed to the decoder."""
    path = tmp_path / name
    path.write_bytes(hostile.header_bombs()[name])
    for decoder in ("imread", "imdecode"):
        monkeypatch.setattr(imageio.cv2, decoder, lambda *a: pytest.fail("a bomb reached the decoder"))
    header = read_header(path)
    assert header.pixels > 100e6
    with Upscaler() as up:
        with pytest.raises(MambaESRError, match=rf"{name}: a {header.width}x{header.height} input makes .* above "
                                                r"the 100 MP limit"):
            up.upscale_file(path, tmp_path / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_compressed_bomb_is_refused_in_bounded_memory(tmp_path):
    """A 62 KB 8000x8000 gray PNG: before, it was decoded to 1.86 GB of copies before the size check. Now the whole
    mambaesr-run process (ONNX Runtime and the shipped model included) peaks far below 200 MB."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc (Linux)")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(hostile.png_bomb(8000, 8000))
    assert bomb.stat().st_size < 100_000
    # VmHWM: the peak of this process's own memory. (ru_maxrss would not do: a child's starts at its parent's peak,
    # here the whole pytest process's.)
    code = ("import re, sys\n"
            "from mambaesr_runtime.cli.run import main\n"
            f"rc = main([{str(bomb)!r}, '-q'])\n"
            "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
            "sys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    assert "bomb.png: a 8000x8000 input makes a 32000x32000 output" in done.stderr
    peak_mb = int(done.stdout.split()[-1]) / 1024
    assert peak_mb < 200, f"refusing the bomb peaked at {peak_mb:.0f} MB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png"]


def test_a_file_swapped_for_a_bomb_after_its_check_is_not_decoded(tmp_path, monkeypatch):
    """The bytes decoded are the bytes whose header was checked: a bomb moved in under the checked name is refused."""
    path = write_image(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    header = inspect_image(path)
    path.write_bytes(hostile.png_bomb(8000, 8000))
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *a: pytest.fail("the swapped file reached the decoder"))
    with pytest.raises(ImageError, match="x.png: the file changed while it was being read"):
        read_image(path, header)


def test_corrupt_and_foreign_headers_are_named(tmp_path):
    cases = {"zero.png": hostile.png_header(0, 10), "badtype.png": hostile.png_header(10, 10, color=5),
             "cut.jpg": hostile.jpeg_header(10, 10)[:8], "nosof.jpg": b"\xff\xd8\xff\xd9",
             "text.webp": b"RIFF\x10\x00\x00\x00WEBPJUNK",
             "loop.tif": b"II*\x00\x08\x00\x00\x00\x00\x00\x08\x00\x00\x00",
             "ppm.png": b"P6\n4 4\n255\n" + b"\x00" * 48}
    words = {"zero.png": "declares a 0x10 image", "badtype.png": "colour type 5", "cut.jpg": "truncated",
             "nosof.jpg": "no frame header", "text.webp": "unknown chunk", "loop.tif": "corrupt",
             "ppm.png": "not a readable image"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError, match=rf"{name}: .*{words[name]}"):
            read_header(tmp_path / name)


def test_links_folders_devices_and_pipes_are_refused_by_name(tmp_path):
    """Before: a symlink loop raised RuntimeError out of Path.resolve(); a FIFO named .png would block forever."""
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nothing.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    for name, words in (("a.png", "loop of symbolic links"), ("gone.png", "link to a missing file"),
                        ("zero.png", "not a regular file"), ("fifo.png", "not a regular file"),
                        ("dir.png", "is a folder"), ("none.png", "no such file")):
        with pytest.raises(ImageError, match=words):
            read_header(tmp_path / name)


def test_multipage_animated_and_float_files_are_refused_not_cut(tmp_path):
    """Before: a multi-page TIFF kept page 1 silently, an animated GIF was refused only after the upscale, a float
    TIFF's refusal did not name the file."""
    cases = {hostile.multipage_tiff(tmp_path / "pages.tif"): "pages.tif: a multi-page TIFF \\(3 pages\\)",
             hostile.animated_gif(tmp_path / "anim.gif"): "anim.gif: an animated GIF \\(2 frames\\)",
             hostile.float_tiff(tmp_path / "float.tif"): "float.tif: 32-bit floating-point samples"}
    (tmp_path / "anim.png").write_bytes(hostile.apng(3))
    cases[tmp_path / "anim.png"] = "anim.png: an animated PNG \\(3 frames\\)"
    (tmp_path / "anim.webp").write_bytes(hostile.webp_header(8, 8, animated=True))
    cases[tmp_path / "anim.webp"] = "anim.webp: an animated WEBP;"
    for path, words in cases.items():
        with pytest.raises(ImageError, match=words):
            inspect_image(path)


def test_a_file_far_larger_than_its_pixels_is_refused(tmp_path):
    path = tmp_path / "padded.png"
    path.write_bytes(hostile.png_header(4, 4) + b"\x00" * (imageio.EXTRA_BYTES_ALLOWED + 4096))
    with pytest.raises(ImageError, match="padded.png: the file is 64 MB but its header declares only 4x4"):
        inspect_image(path)


@pytest.mark.parametrize("depth", [8, 16])
def test_gray_alpha_stays_gray_alpha(tmp_path, depth):
    """Before: a gray+alpha PNG came out as RGBA (OpenCV expands it to BGRA)."""
    src = hostile.gray_alpha_png(tmp_path / "ga.png", depth)
    img = read_image(src)
    assert img.shape == (6, 5, 2) and img.dtype == (np.uint16 if depth == 16 else np.uint8)
    with Upscaler() as up:
        up.upscale_file(src, tmp_path / "ga_x4.png")
    header = read_header(tmp_path / "ga_x4.png")
    assert header.gray_alpha and header.channels == 2 and header.bits == depth
    out = read_image(tmp_path / "ga_x4.png")
    assert out.shape == (24, 20, 2)
    # the alpha plane is the input's, upscaled bicubic: flat where the input is flat, same corners
    peak = np.iinfo(out.dtype).max
    assert abs(int(out[0, 0, 1]) - int(img[0, 0, 1])) <= 0.02 * peak
    words = "16-bit samples" if depth == 16 else "gray\\+alpha"
    with pytest.raises(ImageError, match=f"ga.jpg: .jpg cannot hold {words}"), Upscaler() as up:
        up.upscale_file(src, tmp_path / "ga.jpg")


def test_gray_alpha_tiff_is_refused_because_opencv_drops_its_alpha(tmp_path):
    path = tmp_path / "ga.tif"
    tags = [(256, 4, 1, 4), (257, 4, 1, 4), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 2),
            (338, 3, 1, 2)]
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags)
                     + b"\x00" * 4)
    with pytest.raises(ImageError, match="ga.tif: a gray\\+alpha TIFF, whose alpha OpenCV drops"):
        inspect_image(path)


def test_a_trns_after_thousands_of_chunks_still_makes_an_alpha(tmp_path):
    """Before: the walk stopped at 4,096 chunks, so the header said 'no alpha' while OpenCV decoded RGBA (and the
    alpha refusals for JPEG came only after the upscale)."""
    path = hostile.png_with_chunks(tmp_path / "late.png", 5000, hostile.trns_rgb(120))
    header = inspect_image(path)
    assert header.alpha and header.channels == 3
    assert read_image(path).shape == (5, 6, 4) or read_image(path).shape == (6, 5, 4)


def test_a_png_with_more_chunks_than_the_walk_allows_is_refused(tmp_path, monkeypatch):
    from mambaesr_runtime.runtime import imageheader

    monkeypatch.setattr(imageheader, "_MAX_PNG_CHUNKS", 100)
    path = hostile.png_with_chunks(tmp_path / "many.png", 150)
    with pytest.raises(ImageError, match="more than 100 chunks before its image data; the file is damaged or made "
                                         "to stall readers: re-save it"):
        read_header(path)
    assert read_header(hostile.png_with_chunks(tmp_path / "fine.png", 50)).width == 5
