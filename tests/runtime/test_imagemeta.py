"""Photos with real metadata, made here: an EXIF-rotated phone JPEG (with a thumbnail and an ICC profile) comes out
upright with its EXIF (thumbnail gone, orientation reset) and profile; an ICC-tagged PNG keeps its profile, text
chunks and density; WebP gets them in a VP8X container; --strip-metadata, --quality, --outscale and --format.

The model is an x4 nearest-neighbour ONNX graph, so every output pixel is known: upright means the pixels equal
Pillow's own ``exif_transpose`` of the input, upscaled."""

from __future__ import annotations

import functools
import io
import json
import struct

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, ImageOps, PngImagePlugin

import hostile
from mambaesr_runtime.cli.run import main
from mambaesr_runtime.runtime import imageio, imagemeta
from mambaesr_runtime.runtime.imageio import read_photo
from mambaesr_runtime.runtime.upscaler import Upscaler

MAKE, DATE_TIME_ORIGINAL = 0x010F, 0x9003


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return str(hostile.onnx_graph(tmp_path_factory.mktemp("engine") / "nearest.onnx", "nearest"))


def run(engine, *argv):
    return main([*map(str, argv), "--model", engine, "--overlap", "4", "-q"])


@functools.lru_cache(maxsize=None)
def srgb_icc() -> bytes:
    """One sRGB profile per test run: the profile's header carries its creation time, so two calls a second apart
    give different bytes."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


THUMBNAIL = b"\xff\xd8" + b"THUMBNAIL-BYTES" * 20 + b"\xff\xd9"


def phone_exif(orientation: int, width: int, height: int) -> bytes:
    """An EXIF block as a phone writes it: IFD0 (make, orientation), the Exif IFD (capture time, pixel size) and
    IFD1 with a JPEG thumbnail. Pillow writes IFD0 and the Exif IFD; IFD1 and the thumbnail are appended here."""
    ex = Image.Exif()
    ex[MAKE], ex[ORIENT] = "PhoneMaker", orientation
    sub = ex.get_ifd(ExifTags.IFD.Exif)
    sub[DATE_TIME_ORIGINAL] = "2026:12:03 10:00:00"
    sub[imagemeta.PIXEL_X_TAG], sub[imagemeta.PIXEL_Y_TAG] = width, height
    tiff = bytearray(ex.tobytes()[6:])
    order = "<" if tiff[:2] == b"II" else ">"
    ifd0 = struct.unpack(order + "I", tiff[4:8])[0]
    count = struct.unpack(order + "H", tiff[ifd0:ifd0 + 2])[0]
    next_at = ifd0 + 2 + 12 * count
    assert struct.unpack(order + "I", tiff[next_at:next_at + 4])[0] == 0
    ifd1 = len(tiff)
    tiff[next_at:next_at + 4] = struct.pack(order + "I", ifd1)
    thumb_at = ifd1 + 2 + 2 * 12 + 4
    tiff += struct.pack(order + "H", 2)
    tiff += struct.pack(order + "HHII", 0x0201, 4, 1, thumb_at) + struct.pack(order + "HHII", 0x0202, 4, 1,
                                                                               len(THUMBNAIL))
    tiff += struct.pack(order + "I", 0) + THUMBNAIL
    return b"Exif\x00\x00" + bytes(tiff)


ORIENT = imagemeta.ORIENTATION_TAG


def pattern(h: int, w: int) -> np.ndarray:
    """RGB with no symmetry: a ramp across, a ramp down, and a block in the stored top-left corner."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 60)], axis=2)
    img[: h // 3, : w // 4] = (250, 250, 250)
    return img.astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillows_exif_transpose(orientation):
    img = pattern(5, 7)
    ex = Image.Exif()
    ex[ORIENT] = orientation
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", exif=ex)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    np.testing.assert_array_equal(imagemeta.orient(img, orientation), expected)


def test_an_exif_rotated_phone_jpeg_comes_out_upright_with_its_metadata(engine, tmp_path):
    """The issue's case: stored 40x20 with orientation 6 ("rotate 90"); it came out 160x80 with no EXIF."""
    src = tmp_path / "phone.jpg"
    Image.fromarray(pattern(20, 40)).save(src, "JPEG", quality=95, exif=phone_exif(6, 40, 20),
                                          icc_profile=srgb_icc())
    with Image.open(src) as im:  # the fixture is what a phone writes: a thumbnail in IFD1
        assert im.getexif().get_ifd(ExifTags.IFD.IFD1) and THUMBNAIL in src.read_bytes()
        upright = np.asarray(ImageOps.exif_transpose(im))
    assert upright.shape == (40, 20, 3)
    assert run(engine, src, "-o", tmp_path / "big.jpg") == 0
    data = (tmp_path / "big.jpg").read_bytes()
    with Image.open(tmp_path / "big.jpg") as out:
        assert out.size == (80, 160)  # upright: 20x40 displayed, x4
        ex = out.getexif()
        assert ex[ORIENT] == 1 and ex[MAKE] == "PhoneMaker"
        sub = ex.get_ifd(ExifTags.IFD.Exif)
        assert sub[DATE_TIME_ORIGINAL] == "2026:12:03 10:00:00"
        assert (sub[imagemeta.PIXEL_X_TAG], sub[imagemeta.PIXEL_Y_TAG]) == (80, 160)
        assert not ex.get_ifd(ExifTags.IFD.IFD1) and THUMBNAIL not in data
        assert out.info["icc_profile"] == srgb_icc()
        # Upright pixels: the x4 nearest upscale of Pillow's exif_transpose, up to JPEG's loss twice over.
        small = np.asarray(out.convert("RGB")).reshape(40, 4, 20, 4, 3).mean(axis=(1, 3))
    assert np.abs(small - upright).mean() < 4
    assert np.abs(small - np.rot90(upright, 2)).mean() > 40  # the test can tell a wrong turn


def test_strip_metadata_keeps_the_output_upright_and_bare(engine, tmp_path):
    src = tmp_path / "phone.jpg"
    Image.fromarray(pattern(20, 40)).save(src, "JPEG", exif=phone_exif(8, 40, 20), icc_profile=srgb_icc())
    assert run(engine, src, "-o", tmp_path / "bare.png", "--strip-metadata") == 0
    with Image.open(tmp_path / "bare.png") as out:
        assert out.size == (80, 160) and "icc_profile" not in out.info and not out.getexif()


def test_an_icc_tagged_png_keeps_profile_text_and_density(engine, tmp_path):
    src = tmp_path / "wide.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "A wide-gamut test")
    info.add_text("Comment", "zipped " * 40, zip=True)
    info.add_itxt("Description", "ünïcödé 图", lang="en")
    Image.fromarray(pattern(12, 18)).save(src, "PNG", pnginfo=info, icc_profile=srgb_icc(), dpi=(300, 300))
    assert run(engine, src, "-o", tmp_path / "out.png") == 0
    with Image.open(tmp_path / "out.png") as out:
        out.load()
        assert out.size == (72, 48) and out.info["icc_profile"] == srgb_icc()
        assert out.text == {"Title": "A wide-gamut test", "Comment": "zipped " * 40, "Description": "ünïcödé 图"}
        assert out.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        np.testing.assert_array_equal(np.asarray(out), pattern(12, 18).repeat(4, 0).repeat(4, 1))


@pytest.mark.parametrize("channels", [3, 4])
def test_webp_carries_exif_and_icc_in_a_vp8x_container(engine, tmp_path, channels):
    src = tmp_path / "in.png"
    img = pattern(10, 14)
    if channels == 4:
        img = np.dstack([img, np.full(img.shape[:2], 128, np.uint8)])
    ex = Image.Exif()
    ex[MAKE] = "PhoneMaker"
    Image.fromarray(img).save(src, "PNG", exif=ex, icc_profile=srgb_icc())
    assert run(engine, src, "--format", "webp", "--quality", "80") == 0
    with Image.open(tmp_path / "in_x4.webp") as out:
        out.load()
        assert out.size == (56, 40) and out.mode == ("RGBA" if channels == 4 else "RGB")
        assert out.info["icc_profile"] == srgb_icc() and out.getexif()[MAKE] == "PhoneMaker"


def test_quality_outscale_and_format(engine, tmp_path, capsys, caplog):
    src = tmp_path / "a.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(src)
    assert run(engine, src, "-o", tmp_path / "q30.jpg", "--quality", "30") == 0
    assert run(engine, src, "-o", tmp_path / "q95.jpg") == 0
    assert (tmp_path / "q30.jpg").stat().st_size < 0.7 * (tmp_path / "q95.jpg").stat().st_size
    assert run(engine, src, "--outscale", "2") == 0  # named by the output's scale
    with Image.open(tmp_path / "a_x2.png") as out:
        assert out.size == (32, 32)
        # x4 nearest then area-averaged to x2: each 2x2 output block is the input pixel
        np.testing.assert_array_equal(np.asarray(out)[::2, ::2], np.asarray(Image.open(src)))
    assert run(engine, src, "--outscale", "2.5", "--format", "jpg") == 0
    assert Image.open(tmp_path / "a_x2.5.jpg").size == (40, 40)
    assert run(engine, src, "--outscale", "6") == 0
    assert Image.open(tmp_path / "a_x6.png").size == (96, 96)
    assert "outscale 6 is above the engine's x4" in caplog.text
    capsys.readouterr()
    assert run(engine, src, "-o", tmp_path / "x.png", "--format", "jpg") == 2
    assert "-o " in capsys.readouterr().err
    for bad in (["--quality", "0"], ["--quality", "101"], ["--outscale", "0"], ["--outscale", "nan"]):
        assert run(engine, src, "-o", tmp_path / "bad.png", *bad) == 2
        assert bad[0] in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_json_summary_is_one_document_on_stdout(engine, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(pattern(8, 8)).save(folder / "a.png")
    (folder / "b.png").write_bytes(hostile.png_header(65535, 65535))
    assert run(engine, folder, "-o", tmp_path / "out", "--json") == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout holds the summary and nothing else
    assert report["exit_code"] == 1 and report["done"] == 1 and report["failed"] == 1
    assert report["engine"]["backend"] == "onnxruntime" and report["engine"]["scale"] == 4
    a, b = report["inputs"]
    assert a["status"] == "done" and a["output"].endswith("a.png") and a["kind"] == "image"
    assert b["status"] == "failed" and "65535x65535" in b["error"] and b["output"] is None
    assert main([str(folder / "a.png"), "--device", "toaster", "--json", "-q"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == 2 and "unknown device" in report["error"] and report["inputs"] == []


def test_no_progress_bar_when_stderr_is_not_a_terminal(engine, tmp_path, capsys):
    Image.fromarray(pattern(40, 40)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "--model", engine, "--overlap", "4"]) == 0  # no -q: stderr is a pipe
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.strip().endswith("a_x4.png")


def test_progress_shows_rate_and_eta_on_a_terminal(engine, tmp_path, capsys, monkeypatch):
    Image.fromarray(pattern(40, 40)).save(tmp_path / "a.png")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert main([str(tmp_path / "a.png"), "--model", engine, "--overlap", "4"]) == 0
    err = capsys.readouterr().err
    assert "tile" in err and "/s" in err and "<" in err  # tqdm's "[elapsed<remaining, rate tile/s]"


def test_damaged_exif_costs_the_metadata_not_the_picture(tmp_path, caplog):
    src = tmp_path / "d.jpg"
    Image.fromarray(pattern(8, 8)).save(src, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    photo = read_photo(src)
    assert photo.pixels.shape == (8, 8, 3) and photo.meta.orientation == 1


def test_metadata_is_read_after_the_header_check(tmp_path, monkeypatch):
    """A header bomb is refused by the header check; Pillow is never asked to open it."""
    (tmp_path / "bomb.jpg").write_bytes(hostile.jpeg_header(65535, 65535))
    monkeypatch.setattr(imageio, "read_meta", lambda *a, **k: pytest.fail("metadata read before the check"))
    with Upscaler(model=hostile.onnx_graph(tmp_path / "n.onnx", "nearest"), overlap=4) as up:
        with pytest.raises(Exception, match="65535x65535"):
            up.upscale_file(tmp_path / "bomb.jpg", tmp_path / "out.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.jpg", "n.onnx"]


def test_a_profile_that_does_not_describe_the_output_is_dropped(tmp_path, caplog):
    """OpenCV decodes a CMYK JPEG to RGB: its CMYK profile on those pixels would shift every colour."""
    cmyk = bytearray(srgb_icc())
    cmyk[16:20] = b"CMYK"
    meta = imagemeta.PhotoMeta(icc=bytes(cmyk))
    out = imagemeta.with_metadata(png_bytes(), ".png", meta, (4, 4, 3), "x.png")
    assert b"iCCP" not in out and "ICC profile is for 'CMYK' data" in caplog.text
    gray = imagemeta.with_metadata(png_bytes(), ".png", imagemeta.PhotoMeta(icc=srgb_icc()), (4, 4), "g.png")
    assert b"iCCP" not in gray


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pattern(4, 4)).save(buf, "PNG")
    return buf.getvalue()
