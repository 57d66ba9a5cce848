"""Image I/O: every mode and depth round-trips; bad inputs and outputs get specific errors and leave nothing behind."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from mambaesr_runtime.runtime.imageio import ImageError, decode, encode, read_image, write_image


def _nearest(rgb, s):
    return rgb.repeat(s, 0).repeat(s, 1)


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_round_trip_keeps_mode_and_depth(tmp_path, channels, dtype, suffix):
    rng = np.random.default_rng(0)
    shape = (9, 7) if channels is None else (9, 7, channels)
    img = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    if channels == 4:
        img[..., 3] = 123 * (np.iinfo(dtype).max // 255)  # flat alpha: bicubic keeps it exactly
    path = write_image(tmp_path / f"in{suffix}", img)
    back = read_image(path)
    assert back.dtype == dtype and np.array_equal(back.reshape(img.shape), img)
    dec = decode(back, str(path))
    assert dec.rgb.dtype == np.float32 and dec.rgb.shape == (9, 7, 3) and 0 <= dec.rgb.min() <= dec.rgb.max() <= 1
    out = encode(_nearest(dec.rgb, 2), dec, 2)  # an "upscaler" that repeats pixels: output = input repeated
    assert out.dtype == dtype
    want = _nearest(img if img.ndim == 3 else img[:, :, None], 2)
    assert np.array_equal(out.reshape(want.shape), want)


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp"])
def test_8bit_formats_write_and_read(tmp_path, suffix):
    img = np.full((8, 8, 3), 100, np.uint8)
    back = read_image(write_image(tmp_path / f"x{suffix}", img))
    assert back.shape == (8, 8, 3) and abs(int(back.mean()) - 100) <= 2


def test_bad_inputs_are_named_and_left_untouched(tmp_path):
    good = write_image(tmp_path / "good.png", np.zeros((20, 20, 3), np.uint8))
    cases = {"missing.png": None, "empty.png": b"", "text.png": b"hello, not an image\n",
             "truncated.png": good.read_bytes()[:60]}
    words = {"missing.png": "no such file", "empty.png": "empty (0 bytes)", "text.png": "not a readable image",
             "truncated.png": "truncated"}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ImageError, match=re.escape(words[name])):
            read_image(path)
        if content is not None:
            assert path.read_bytes() == content  # input untouched
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)


def test_unsupported_kinds_are_refused():
    with pytest.raises(ImageError, match="5 channels are not supported"):
        decode(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageError, match="unsupported sample type float32"):
        decode(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageError, match="empty image"):
        decode(np.zeros((0, 4, 3), np.uint8))


def test_outputs_refuse_overwrite_bad_formats_and_unwritable_folders(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    path = write_image(tmp_path / "out.png", img)
    before = path.read_bytes()
    with pytest.raises(ImageError, match="pass overwrite=True"):
        write_image(path, img + 1)
    assert path.read_bytes() == before
    write_image(path, img + 1, overwrite=True)
    assert read_image(path).max() == 1
    with pytest.raises(ImageError, match="cannot write .gif"):
        write_image(tmp_path / "x.gif", img)
    with pytest.raises(ImageError, match="cannot hold 16-bit"):
        write_image(tmp_path / "x.jpg", img.astype(np.uint16))
    with pytest.raises(ImageError, match="does not exist"):
        write_image(tmp_path / "nope" / "x.png", img)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root ignores permissions: only assert where they apply
            with pytest.raises(ImageError, match="not writable"):
                write_image(locked / "x.png", img)
    finally:
        locked.chmod(0o700)
    with pytest.raises(ImageError, match="cannot write|not writable"):  # unwritable even for root
        write_image(Path("/proc/mambaesr-test.png"), img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "out.png"]  # no temporary files left
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # an ordinary new file, not mkstemp's 0600


def test_an_output_that_appears_while_it_is_computed_is_never_replaced(tmp_path, monkeypatch):
    """Another writer publishes the same name between the up-front check and the publish: it wins, untouched."""
    from mambaesr_runtime.runtime import imageio

    path = tmp_path / "out.png"
    real = imageio.encode_image

    def racing(img, where, *args, **kwargs):
        path.write_bytes(real(img + 9, path))  # the other writer, finished first
        return real(img, where, *args, **kwargs)

    monkeypatch.setattr(imageio, "encode_image", racing)
    with pytest.raises(imageio.OutputExistsError, match="appeared while this image was being upscaled"):
        write_image(path, np.zeros((4, 4, 3), np.uint8))
    assert read_image(path).min() == 9 and os.listdir(tmp_path) == ["out.png"]


def test_the_bytes_path_checks_decodes_and_encodes_as_the_file_path(tmp_path):
    """inspect_bytes / photo_of_bytes / encode_image (what the distributed workers run) against inspect_image /
    read_photo / write_image: the same header, pixels, metadata, bytes and error messages."""
    from mambaesr_runtime.runtime.imageio import (
        encode_image,
        inspect_bytes,
        inspect_image,
        photo_of_bytes,
        read_photo,
    )

    path = write_image(tmp_path / "a.png", np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3))
    data = path.read_bytes()
    header = inspect_image(path)
    assert inspect_bytes(data, path) == header
    by_path, by_bytes = read_photo(path, header), photo_of_bytes(data, header, path)
    assert np.array_equal(by_path.pixels, by_bytes.pixels) and by_path.meta == by_bytes.meta
    assert encode_image(by_bytes.pixels, tmp_path / "b.png", metadata=by_bytes.meta) == \
        write_image(tmp_path / "b.png", by_path.pixels, metadata=by_path.meta).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[:len(data) - 12])  # no IEND
    with pytest.raises(ImageError) as from_path:
        read_photo(cut)
    with pytest.raises(ImageError) as from_bytes:
        photo_of_bytes(cut.read_bytes(), inspect_bytes(cut.read_bytes(), cut), cut)
    assert str(from_path.value) == str(from_bytes.value)
# -- issue 24, part 2: inputs that lose data, refusals decided from the header ---------------------------------------
@pytest.mark.parametrize("kind", ["cut", "tall"])
def test_a_jpeg_whose_data_ends_before_its_last_row_is_refused(tmp_path, kind):
    """Before: exit 0 with the missing rows invented as flat gray (libjpeg only warns: 'premature end of data
    segment')."""
    import hostile

    path = tmp_path / f"{kind}.jpg"
    path.write_bytes(hostile.truncated_jpeg(kind))
    with pytest.raises(ImageError, match=re.escape(f"{path}: the JPEG's image data ends before its last row")) as info:
        read_image(path)
    assert "premature end of data segment" in str(info.value) and "Re-export or re-download it" in str(info.value)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(hostile.photo_jpeg())
    assert read_image(whole).shape == (60, 80, 3)


def test_a_harmless_libjpeg_warning_passes_and_is_passed_on(tmp_path, capfd):
    """Only the warnings that mean rows are missing refuse the file; libjpeg's others still reach stderr."""
    import hostile

    data = hostile.photo_jpeg()
    path = tmp_path / "extra.jpg"
    sos = data.index(b"\xff\xda")
    path.write_bytes(data[:sos] + b"\x00\x00" + data[sos:])  # two stray bytes before the scan's marker
    assert read_image(path).shape == (60, 80, 3)
    assert "Corrupt JPEG data: 2 extraneous bytes before marker 0xda" in capfd.readouterr().err


def test_the_jpeg_check_works_with_stderr_closed_and_leaves_it_closed(tmp_path):
    import subprocess
    import sys

    import hostile

    path = tmp_path / "tall.jpg"
    path.write_bytes(hostile.truncated_jpeg("tall"))
    code = ("import os, sys\nfrom mambaesr_runtime.runtime.imageio import ImageError, read_image\n"
            "try:\n    read_image(sys.argv[1])\nexcept ImageError as exc:\n    print('refused', 'ends before' in str(exc))\n"
            "try:\n    os.fstat(2)\n    print('fd 2 open')\nexcept OSError:\n    print('fd 2 closed')\n")
    done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-c", code, str(path)],
                          capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.stdout.split("\n")[:2] == ["refused True", "fd 2 closed"]


@pytest.mark.parametrize("depth", [1, 2, 4, 8, 16])
def test_a_gray_png_with_trns_keeps_its_transparency(tmp_path, depth):
    """Before: OpenCV dropped a gray PNG's tRNS (the output lost its transparency) while the header counted it as
    gray+alpha (so -o x.jpg was refused for an alpha the output would not have had)."""
    import hostile

    key = 1
    path = hostile.gray_trns_png(tmp_path / "g.png", depth, (6, 5), key)
    img = read_image(path)
    peak = 65535 if depth == 16 else 255
    assert img.shape == (6, 5, 2) and img.dtype == (np.uint16 if depth == 16 else np.uint8)
    gray = (np.arange(30) % (1 << depth)).reshape(6, 5)
    assert np.array_equal(img[..., 1] == 0, gray == key)  # transparent exactly where the file says
    assert set(np.unique(img[..., 1])) <= {0, peak}
    out = write_image(tmp_path / "out.png", img)
    assert out.read_bytes()[25] == 4  # written back as a gray+alpha PNG
    with pytest.raises(ImageError, match=r"cannot hold gray\+alpha here .* write .png"):
        write_image(tmp_path / "out.jpg", img if depth != 16 else img.astype(np.uint8))


def test_a_cmyk_tiff_decodes_to_rgb_without_an_invented_alpha(tmp_path):
    """Before: OpenCV's BGR + filler plane came through as RGBA (so -o x.jpg was refused for an alpha it does not
    have, and a PNG output got an opaque alpha plane)."""
    import hostile
    from mambaesr_runtime.runtime.imageio import inspect_image

    path = hostile.cmyk_tiff(tmp_path / "print.tif")
    header = inspect_image(path)
    assert (header.cmyk, header.alpha, header.channels) == (True, False, 3)
    assert "CMYK TIFF" in header.describe()
    img = read_image(path)
    assert img.shape == (5, 6, 3)
    write_image(tmp_path / "out.jpg", img)  # a photo printer's CMYK TIFF to JPEG: no alpha in the way


@pytest.mark.parametrize("suffix, side", [(".webp", 16384), (".jpg", 65501), (".jpeg", 65501)])
def test_an_output_larger_than_its_format_holds_is_refused_from_its_size(tmp_path, suffix, side):
    """Before: refused by the encoder after the whole upscale (20 s, 672 MB and raw OpenCV ERROR lines)."""
    from mambaesr_runtime.runtime.imageio import MAX_SIDE, check_output

    with pytest.raises(ImageError, match=rf"the output would be {side}x40, and \{suffix} holds at most "
                                         rf"{MAX_SIDE[suffix]} pixels a side; write .png or .tif"):
        check_output(tmp_path / f"wide{suffix}", size=(40, side))
    check_output(tmp_path / f"ok{suffix}", size=(40, side - 1))
    check_output(tmp_path / "wide.png", size=(40, side))
    assert list(tmp_path.iterdir()) == []


def test_a_file_created_at_the_destination_during_the_write_is_not_replaced(tmp_path, monkeypatch):
    """Before: check_output passed at the start, and the rename at the end replaced what had appeared meanwhile."""
    from mambaesr_runtime.runtime import imageio

    img = np.zeros((4, 4, 3), np.uint8)
    dst = tmp_path / "out.png"
    real = imageio.with_metadata

    def meanwhile(data, *a, **k):
        dst.write_bytes(b"another run's result")
        return real(data, *a, **k)

    monkeypatch.setattr(imageio, "with_metadata", meanwhile)
    with pytest.raises(ImageError, match="out.png appeared while this image was being upscaled .* pass "
                                         "overwrite=True"):
        write_image(dst, img, metadata=imageio.NONE)
    assert dst.read_bytes() == b"another run's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    write_image(dst, img, overwrite=True, metadata=imageio.NONE)
    assert read_image(dst).shape == (4, 4, 3)


def test_a_long_valid_output_name_is_written_and_one_that_cannot_be_is_refused(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    name = "n" * 243 + ".png"
    write_image(tmp_path / name, img)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    with pytest.raises(ImageError, match="bytes long and this file system takes at most 255: choose a shorter"):
        write_image(tmp_path / ("n" * 256 + ".png"), img)
