"""Photo metadata at the image-io edge: EXIF orientation applied on read, EXIF / ICC profile / PNG text and pHYs
carried to the output where its format can hold them.

Pixels stay with OpenCV (it decodes and encodes them faster than Pillow: see docs/running.md). This module only reads
and writes what travels beside the pixels, from bytes whose header :mod:`.imageheader` has already accepted, so no
refusal of the header check (bombs, pages, depths) is bypassed: JPEG, WebP and TIFF metadata are parsed by Pillow,
whose ``Image.open`` reads headers and decodes no pixels; a PNG's chunks are walked here (Pillow would decode the
whole image to find text chunks after the pixel data). The writers put the kept metadata into the bytes OpenCV
encoded: APP1 / APP2 segments and the JFIF density of a JPEG, chunks after a PNG's IHDR, a VP8X WebP container.

What is kept (:class:`PhotoMeta`): EXIF without its thumbnail (IFD1) and with the orientation reset to 1 (the pixels
are turned upright on read) and the pixel dimensions set to the output's; the ICC profile; PNG text chunks; the pixel
density (PNG pHYs, JPEG JFIF density, TIFF resolution), kept as it is (so the printed size grows with the scale).
Where the output cannot hold an item (EXIF or text in BMP, text in JPEG, anything in TIFF and BMP outputs, which
this writer leaves bare) it is dropped and :func:`dropped` says what, for the log.

Pillow is imported here only, lazily: it is a requirement of the package, and its absence is a
:class:`~mambaesr_runtime.errors.DependencyError` naming the fix.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass, replace

import numpy as np

from ..errors import DependencyError
from .imageheader import ImageError

log = logging.getLogger(__name__)

ORIENTATION_TAG, EXIF_IFD_TAG = 0x0112, 0x8769
THUMBNAIL_TAGS = (0x0201, 0x0202)  # JPEGInterchangeFormat(Length): a thumbnail's pointers never belong in IFD0
PIXEL_X_TAG, PIXEL_Y_TAG = 0xA002, 0xA003
#: A compressed PNG chunk (zTXt, iCCP) may not inflate past this: a metadata chunk is no place for a bomb.
MAX_INFLATED = 16 << 20
#: What each output format can carry (the writers below).
CARRIES = {".jpg": {"exif", "icc", "dpi"}, ".jpeg": {"exif", "icc", "dpi"}, ".png": {"exif", "icc", "text", "dpi"},
           ".webp": {"exif", "icc"}}


@dataclass(frozen=True)
class PhotoMeta:
    """Metadata read from a photo, to be written with its upscaled pixels."""

    orientation: int = 1
    """EXIF orientation (1-8) of the file as stored; :func:`orient` turns the pixels upright by it."""
    exif: bytes | None = None
    """The EXIF block as a TIFF structure (no ``Exif\\0\\0`` prefix), as read: cleaned on write."""
    icc: bytes | None = None
    """The ICC colour profile."""
    text: tuple[tuple[str, str], ...] = ()
    """PNG text chunks (tEXt, zTXt, iTXt) as (keyword, text), in file order."""
    dpi: tuple[float, float] | None = None
    """Pixel density in dots per inch (x, y)."""

    def items(self) -> list[str]:
        """The kinds present: 'exif', 'icc', 'text', 'dpi'."""
        return [k for k, v in (("exif", self.exif), ("icc", self.icc), ("text", self.text), ("dpi", self.dpi))
                if v]


NONE = PhotoMeta()


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise DependencyError("photo metadata (EXIF orientation, ICC profiles) is read with Pillow, which is not "
                              "installed: pip install pillow (it is a requirement of mambaesr-runtime; "
                              "reinstall the package)") from exc
    return Image


# -- reading -------------------------------------------------------------------------------------------------------
def read_meta(data: bytes, fmt: str, source: object = "image") -> PhotoMeta:
    """The metadata of an encoded image (``fmt``: the header's format name). Damaged metadata is dropped with a
    warning (the pixels are still good); it never fails the image."""
    if fmt == "png":
        return _png_meta(data, source)
    if fmt not in ("jpeg", "webp", "tiff"):
        return NONE
    Image = _pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the size was judged from the header already
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{source}: Pillow, which reads its metadata, refuses so large an image ({exc}); raise "
                         f"PIL.Image.MAX_IMAGE_PIXELS in your program or split the image") from exc
    except Exception as exc:  # noqa: BLE001 - OpenCV decoded the pixels; metadata Pillow cannot parse is dropped
        log.warning("%s: its metadata cannot be read (%s); the output will have none", source, exc)
        return NONE
    with im:
        info = im.info
        icc = info.get("icc_profile") or None
        dpi = _dpi(info.get("dpi"))
        exif, orientation = None, 1
        try:
            if fmt == "tiff":  # a TIFF's IFD0 is the file's structure, not EXIF: take its orientation only
                orientation = int(im.tag_v2.get(ORIENTATION_TAG, 1))
            else:
                raw = info.get("exif")
                if raw:
                    exif = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
                    orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not cost the picture
            log.warning("%s: its EXIF cannot be parsed (%s); it is dropped and the picture kept as stored", source, exc)
            exif, orientation = None, 1
    return PhotoMeta(_orientation(orientation, source), exif, icc, (), dpi)


def _orientation(value: int, source) -> int:
    if value not in range(1, 9):
        log.warning("%s: EXIF orientation %s is not one of 1-8; the picture is kept as stored", source, value)
        return 1
    return value


def _dpi(value) -> tuple[float, float] | None:
    if not value:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _png_chunks(data: bytes):
    """(type, body) of each chunk of a PNG, stopping at IEND or at the first damaged length."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            return
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length


def _inflate(blob: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(blob, MAX_INFLATED)
    if inflater.unconsumed_tail:
        raise ValueError(f"inflates past {MAX_INFLATED >> 20} MB")
    return out


def _png_meta(data: bytes, source) -> PhotoMeta:
    exif = icc = dpi = None
    text: list[tuple[str, str]] = []
    for kind, body in _png_chunks(data):
        try:
            if kind == b"eXIf":
                exif = body
            elif kind == b"iCCP":
                _name, rest = body.split(b"\x00", 1)
                icc = _inflate(rest[1:])
            elif kind == b"pHYs" and len(body) == 9:
                x, y, unit = struct.unpack(">IIB", body)
                if unit == 1 and x and y:  # per metre; unit 0 is an aspect ratio only
                    dpi = (x * 0.0254, y * 0.0254)
            elif kind == b"tEXt":
                key, value = body.split(b"\x00", 1)
                text.append((key.decode("latin-1"), value.decode("latin-1")))
            elif kind == b"zTXt":
                key, rest = body.split(b"\x00", 1)
                text.append((key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")))
            elif kind == b"iTXt":
                key, rest = body.split(b"\x00", 1)
                compressed, rest = rest[0], rest[2:]
                _lang, _translated, value = rest.split(b"\x00", 2)
                text.append((key.decode("latin-1"), (_inflate(value) if compressed else value).decode("utf-8")))
        except (ValueError, IndexError, zlib.error, UnicodeDecodeError) as exc:
            log.warning("%s: its PNG %s chunk is damaged (%s); it is dropped", source, kind.decode("latin-1"), exc)
    orientation = 1
    if exif:
        try:
            ex = _pillow().Exif()
            ex.load(exif)
            orientation = int(ex.get(ORIENTATION_TAG, 1))
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not cost the picture
            log.warning("%s: its EXIF cannot be parsed (%s); it is dropped", source, exc)
            exif = None
    return PhotoMeta(_orientation(orientation, source), exif, icc, tuple(text), dpi)


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels (rows first, as OpenCV decodes them) turned upright for an EXIF ``orientation``: 2 mirror,
    3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise."""
    if orientation in (5, 6, 7, 8):
        img = img.swapaxes(0, 1)  # 5: the transpose; 6, 7, 8 are it followed by a mirror or a flip
    flip = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    if flip:
        img = np.flip(img, flip)
    return np.ascontiguousarray(img)


# -- writing -------------------------------------------------------------------------------------------------------
def dropped(meta: PhotoMeta, suffix: str) -> list[str]:
    """The metadata kinds of ``meta`` that an output with ``suffix`` cannot carry here."""
    return [k for k in meta.items() if k not in CARRIES.get(suffix, set())]


def clean_exif(exif: bytes, width: int, height: int, source: object = "image") -> bytes | None:
    """The EXIF block to write (TIFF structure): orientation reset to 1, no thumbnail (Pillow writes no IFD1), the
    pixel dimensions those of the output. ``None`` when Pillow cannot re-serialise it (logged)."""
    try:
        ex = _pillow().Exif()
        ex.load(exif)
        if ORIENTATION_TAG in ex:
            ex[ORIENTATION_TAG] = 1
        for tag in THUMBNAIL_TAGS:
            ex.pop(tag, None)
        sub = ex.get_ifd(EXIF_IFD_TAG)
        if PIXEL_X_TAG in sub or PIXEL_Y_TAG in sub:
            sub[PIXEL_X_TAG], sub[PIXEL_Y_TAG] = width, height
        blob = ex.tobytes()
    except Exception as exc:  # noqa: BLE001 - the picture is written without EXIF rather than not at all
        log.warning("%s: its EXIF cannot be rewritten (%s); the output has none", source, exc)
        return None
    return blob[6:] if blob.startswith(b"Exif\x00\x00") else blob


def with_metadata(encoded: bytes, suffix: str, meta: PhotoMeta, shape: tuple, source: object = "image") -> bytes:
    """``encoded`` (what OpenCV wrote for ``suffix``) with the metadata of ``meta`` that the format can carry.
    ``shape``: the output array's shape (for the EXIF pixel dimensions and the WebP canvas)."""
    if not meta.items():
        return encoded
    h, w = shape[:2]
    exif = clean_exif(meta.exif, w, h, source) if meta.exif else None
    icc = meta.icc
    if icc is not None:
        # The profile must describe the output's pixels: a CMYK JPEG's profile on the RGB OpenCV decoded would
        # shift every colour. ICC header bytes 16-19: the data colour space.
        wanted = b"GRAY" if len(shape) == 2 or shape[2] == 2 else b"RGB "
        if icc[16:20] != wanted:
            log.warning("%s: its ICC profile is for %r data, the output is %s; the profile is dropped", source,
                        icc[16:20].decode("latin-1").strip(), wanted.decode().strip())
            icc = None
    meta = replace(meta, exif=exif, icc=icc)
    lost = dropped(meta, suffix)
    if lost:
        log.info("%s: a %s file here cannot carry its %s; dropped", source, suffix, ", ".join(lost))
    if suffix in (".jpg", ".jpeg"):
        return _jpeg_with(encoded, meta, source)
    if suffix == ".png":
        return _png_with(encoded, meta)
    if suffix == ".webp":
        return _webp_with(encoded, meta, w, h, alpha=len(shape) == 3 and shape[2] in (2, 4))
    return encoded


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def _jpeg_with(data: bytes, meta: PhotoMeta, source) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise ImageError(f"{source}: the JPEG encoder returned no JPEG")
    pos = 2
    head = bytearray(data[:2])
    if data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00":  # keep OpenCV's JFIF APP0 first, as JFIF wants
        end = 4 + struct.unpack(">H", data[4:6])[0]
        app0 = bytearray(data[2:end])
        if meta.dpi and all(0 < round(d) <= 0xFFFF for d in meta.dpi):
            app0[11] = 1  # density in dots per inch
            app0[12:16] = struct.pack(">HH", round(meta.dpi[0]), round(meta.dpi[1]))
        head += app0
        pos = end
    if meta.exif:
        body = b"Exif\x00\x00" + meta.exif
        if len(body) + 2 > 0xFFFF:
            log.warning("%s: its EXIF (%d bytes) is too long for one JPEG segment; dropped", source, len(body))
        else:
            head += _segment(0xE1, body)
    if meta.icc:
        step = 0xFFFF - 2 - 14
        parts = [meta.icc[i:i + step] for i in range(0, len(meta.icc), step)]
        if len(parts) > 255:
            log.warning("%s: its ICC profile (%d bytes) is too long for JPEG; dropped", source, len(meta.icc))
        else:
            for i, part in enumerate(parts):
                head += _segment(0xE2, b"ICC_PROFILE\x00" + bytes((i + 1, len(parts))) + part)
    return bytes(head) + data[pos:]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_with(data: bytes, meta: PhotoMeta) -> bytes:
    ihdr_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    extra = b""
    if meta.icc:
        extra += _chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(meta.icc, 9))
    if meta.dpi:
        extra += _chunk(b"pHYs", struct.pack(">IIB", round(meta.dpi[0] / 0.0254), round(meta.dpi[1] / 0.0254), 1))
    if meta.exif:
        extra += _chunk(b"eXIf", meta.exif)
    for key, value in meta.text:
        try:
            extra += _chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1"))
        except UnicodeEncodeError:
            extra += _chunk(b"iTXt", key.encode("latin-1", "replace") + b"\x00\x00\x00\x00\x00"
                            + value.encode("utf-8"))
    return data[:ihdr_end] + extra + data[ihdr_end:]


def _riff_chunks(data: bytes):
    pos = 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        yield kind, data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _webp_with(data: bytes, meta: PhotoMeta, w: int, h: int, alpha: bool) -> bytes:
    if not (meta.exif or meta.icc):
        return data
    chunks = [(k, b) for k, b in _riff_chunks(data) if k not in (b"VP8X", b"ICCP", b"EXIF")]
    flags = (0x20 if meta.icc else 0) | (0x10 if alpha else 0) | (0x08 if meta.exif else 0)
    vp8x = bytes((flags, 0, 0, 0)) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = _riff_chunk(b"VP8X", vp8x)
    if meta.icc:
        body += _riff_chunk(b"ICCP", meta.icc)
    body += b"".join(_riff_chunk(k, b) for k, b in chunks)
    if meta.exif:
        body += _riff_chunk(b"EXIF", meta.exif)  # the TIFF structure itself, as libwebp and Pillow write it
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
