"""Hostile inputs made on the fly (never stored): image headers that declare huge sizes, compressed decompression
bombs, animations, multi-page and float files, and graphs that are not MambaESR engines. Shared by the tests and by
``benchmarks/bad_inputs.py``; each generator returns bytes or writes a file and returns its path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int, color: int = 2, depth: int = 8, extra: bytes = b"") -> bytes:
    """A PNG of a few dozen bytes whose IHDR declares ``width`` x ``height`` (and no real pixel data)."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
            + extra + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))


def png_bomb(width: int, height: int) -> bytes:
    """A valid, fully decodable 8-bit gray PNG of zeros: 62 KB for 8000x8000 (64 MB of pixels, 1.9 GB as float
    RGB). Compressed row by row, so making it needs no memory of the image's size."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))


def apng(frames: int = 3) -> bytes:
    """A small PNG announcing an animation (acTL) of ``frames`` frames."""
    img = cv2.imencode(".png", np.full((8, 8, 3), 100, np.uint8))[1].tobytes()
    actl = _chunk(b"acTL", struct.pack(">II", frames, 0))
    return img[:33] + actl + img[33:]


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 declaring ``width`` x ``height`` with 3 components, EOI: 25 bytes."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", 2 + len(sof)) + sof + b"\xff\xd9"


def webp_header(width: int, height: int, animated: bool = False) -> bytes:
    """RIFF/WEBP with a VP8X chunk declaring a ``width`` x ``height`` canvas."""
    flags = 0x02 if animated else 0
    vp8x = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose only IFD declares ``width`` x ``height``, 8-bit RGB, one (absent) strip."""
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 2), (273, 4, 1, 0),
            (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, 0)]
    entries = b"".join(struct.pack("<HHII", *t) for t in tags)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + b"\x00" * 4


def bmp_header(width: int, height: int) -> bytes:
    """BITMAPFILEHEADER + BITMAPINFOHEADER declaring a ``width`` x ``height`` 24-bit image, no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen is ``width`` x ``height``, one 1x1 frame."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00" + b"\x3b")


#: Header-only bombs: (file name, bytes). Every one declares far more than the default 100 MP output limit allows.
def header_bombs() -> dict[str, bytes]:
    return {"bomb_png_65535.png": png_header(65535, 65535), "bomb_jpeg_65500.jpg": jpeg_header(65500, 65500),
            "bomb_webp_16384.webp": webp_header(16384, 16384), "bomb_tiff_100k.tif": tiff_header(100000, 100000),
            "bomb_bmp_100k.bmp": bmp_header(100000, 100000)}


def multipage_tiff(path: Path, pages: int = 3) -> Path:
    cv2.imwritemulti(str(path), [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(pages)])
    return path


def animated_gif(path: Path, frames: int = 2) -> Path:
    cv2.imwritemulti(str(path), [np.full((8, 8, 3), 100 * i, np.uint8) for i in range(frames)])
    return path


def float_tiff(path: Path) -> Path:
    cv2.imwrite(str(path), np.full((8, 8, 3), 0.5, np.float32))
    return path


def gray_alpha_png(path: Path, depth: int = 8, size: tuple[int, int] = (6, 5)) -> Path:
    """A gray+alpha PNG (colour type 4) with a gray ramp and a different alpha ramp."""
    h, w = size
    peak = 255 if depth == 8 else 65535
    gray = np.linspace(0, peak, h * w).reshape(h, w)
    alpha = gray[::-1, ::-1]
    samples = np.dstack([gray, alpha]).astype(">u2" if depth == 16 else np.uint8)
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(samples).view(np.uint8).reshape(h, -1)],
                          axis=1)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 4, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(rows.tobytes())) + _chunk(b"IEND", b""))
    return path


def onnx_graph(path: Path, kind: str, tile: int = 16) -> Path:
    """Graphs that load in ONNX Runtime but are not (good) MambaESR engines:
    ``nan``: every output is NaN; ``zero_nan``: x4 nearest upscale of x / x, so NaN exactly where the input is 0;
    ``two_d``: a 2-D input; ``shrink``: (1, 3, t, t) -> (1, 3, t/2, t/2) (scale 0); ``nearest``: a good x4 engine
    whose output is the nearest-neighbour upscale, so every output pixel is known (the I/O tests' model)."""
    import onnx
    from onnx import TensorProto, helper

    def tensor(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 4, 4])
    half = helper.make_tensor("half", TensorProto.FLOAT, [4], [1, 1, 0.5, 0.5])
    if kind in ("nan", "zero_nan"):
        nodes = ([helper.make_node("Sub", ["x", "x"], ["d"]), helper.make_node("Div", ["d", "d"], ["q"])]
                 if kind == "nan" else [helper.make_node("Div", ["x", "x"], ["q"])])
        nodes.append(helper.make_node("Resize", ["q", "", "scales"], ["y"], mode="nearest"))
        graph = helper.make_graph(nodes, kind, [tensor("x", [1, 3, tile, tile])],
                                  [tensor("y", [1, 3, 4 * tile, 4 * tile])], [scales])
    elif kind == "nearest":
        graph = helper.make_graph([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")], kind,
                                  [tensor("x", [1, 3, tile, tile])], [tensor("y", [1, 3, 4 * tile, 4 * tile])],
                                  [scales])
    elif kind == "two_d":
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], kind, [tensor("x", [4, tile])],
                                  [tensor("y", [4, tile])])
    elif kind == "shrink":
        graph = helper.make_graph([helper.make_node("Resize", ["x", "", "half"], ["y"], mode="nearest")], kind,
                                  [tensor("x", [1, 3, tile, tile])], [tensor("y", [1, 3, tile // 2, tile // 2])],
                                  [half])
    else:
        raise ValueError(kind)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def gray_trns_png(path: Path, depth: int = 8, size: tuple[int, int] = (6, 5), key: int = 3) -> Path:
    """A gray PNG (colour type 0, ``depth`` 1-16 bit) whose tRNS chunk makes the gray level ``key`` transparent:
    sample (y, x) is ``(y * w + x) % 2**depth``, so ``key`` occurs (and so do its neighbours)."""
    h, w = size
    values = (np.arange(h * w) % (1 << depth)).reshape(h, w)
    if depth == 16:
        rows = [values[y].astype(">u2").tobytes() for y in range(h)]
    elif depth == 8:
        rows = [values[y].astype(np.uint8).tobytes() for y in range(h)]
    else:
        per = 8 // depth
        rows = []
        for y in range(h):
            packed = bytearray((w + per - 1) // per)
            for x, v in enumerate(values[y]):
                packed[x // per] |= int(v) << (8 - depth * (x % per + 1))
            rows.append(bytes(packed))
    raw = b"".join(b"\x00" + r for r in rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0))
                     + _chunk(b"tRNS", struct.pack(">H", key)) + _chunk(b"IDAT", zlib.compress(raw))
                     + _chunk(b"IEND", b""))
    return path


def png_with_chunks(path: Path, before: int, last: bytes = b"", size: tuple[int, int] = (6, 5)) -> Path:
    """An RGB PNG with ``before`` empty tEXt-like private chunks (``prVt``) between IHDR and ``last`` (a whole
    chunk, e.g. a tRNS), then its image data: a header walk that stops early never reaches ``last``."""
    img = cv2.imencode(".png", np.full((*size, 3), 120, np.uint8))[1].tobytes()
    filler = _chunk(b"prVt", b"") * before
    path.write_bytes(img[:33] + filler + last + img[33:])
    return path


def trns_rgb(value: int = 120) -> bytes:
    """A tRNS chunk for an RGB PNG making the colour (value, value, value) transparent."""
    return _chunk(b"tRNS", struct.pack(">HHH", value, value, value))


def photo_jpeg(size: tuple[int, int] = (60, 80), progressive: bool = False) -> bytes:
    """A JPEG of a smooth, non-flat picture (so every row carries entropy-coded data)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([(x * 3) % 255, (y * 4) % 255, ((x + y) * 2) % 255]).astype(np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    return cv2.imencode(".jpg", img, params)[1].tobytes()


def truncated_jpeg(kind: str = "cut") -> bytes:
    """JPEGs whose pixel data ends before their last row, which libjpeg decodes anyway with the missing rows
    invented flat: ``cut``: the second half of the scan data gone, an EOI appended (a copy cut short and
    'repaired'); ``tall``: an intact file whose SOF declares twice the rows its data holds."""
    data = photo_jpeg()
    if kind == "cut":
        return data[:len(data) // 2] + b"\xff\xd9"
    at = data.index(b"\xff\xc0")
    height = struct.unpack(">H", data[at + 5:at + 7])[0]
    return data[:at + 5] + struct.pack(">H", 2 * height) + data[at + 7:]


def cmyk_tiff(path: Path, size: tuple[int, int] = (5, 6)) -> Path:
    """A CMYK TIFF (photometric 5, 4 samples), as print workflows write them (Pillow)."""
    from PIL import Image

    h, w = size
    c = np.linspace(0, 200, h * w).reshape(h, w).astype(np.uint8)
    Image.fromarray(np.dstack([c, c // 2, c // 3, c // 4]), "CMYK").save(path)
    return path


#: A prelude for ``python -c``: the run holds just before it publishes (its temporary complete) until the file
#: "go" exists in its folder (the other run of a pair finishes meanwhile). Used by tests/cli and bad_inputs.py.
HOLD_IMAGE = """
import os, time
from mambaesr_runtime.runtime import imageio
real = imageio.atomic_write
def held(path, write, suffix='.tmp', **kwargs):
    def write_then_wait(tmp):
        write(tmp)
        while not os.path.exists('go'):
            time.sleep(0.02)
    return real(path, write_then_wait, suffix, **kwargs)
imageio.atomic_write = held
"""
