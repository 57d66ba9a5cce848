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
    with pytest.raises(imageio.OutputExistsError, match="appeared while it was being computed"):
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
