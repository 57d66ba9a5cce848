"""What an image file declares before any pixel is decoded: format, size, sample type, alpha, pages or frames.

A decoder allocates what the header asks for: a 62 KB PNG can declare 8000x8000 pixels (1.9 GB once decoded to
float), 69 bytes can declare 65535x65535. So every size decision is made here, from the header alone, by reading a
few hundred bytes with seeks (never the whole file, never the pixel data). Parsers follow the format specs: PNG
(IHDR, acTL, tRNS before the first IDAT), JPEG (the SOFn segment), WebP (VP8, VP8L, VP8X), TIFF and BigTIFF (the
IFD chain: tags 254, 256-258, 262, 277, 338, 339), BMP (BITMAPCOREHEADER and later), GIF (logical screen and image
descriptors). Anything else is not an image this runtime reads. Torch-free; runs on Python 3.8.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import MambaESRError

__all__ = ["FORMATS", "ImageError", "ImageHeader", "header_of_bytes", "read_header"]

#: What the runtime reads (GIF only as a still: an animation is refused, see ``ImageHeader.frames``).
FORMATS = ("png", "jpeg", "webp", "tiff", "bmp", "gif")
_MAX_CHUNKS = 4096  # JPEG segments / GIF blocks / TIFF IFDs walked before giving up
#: PNG chunks walked before the first IDAT. The walk must reach IDAT (a tRNS after 5,000 text chunks still makes an
#: alpha plane), so the bound is far above any real file; past it the file is refused, never half-read.
_MAX_PNG_CHUNKS = 1 << 20


class ImageError(MambaESRError):
    """An input image is missing, unreadable or of an unsupported kind, or an output cannot be written."""


@dataclass(frozen=True)
class ImageHeader:
    """The declared properties of an image file."""

    format: str
    """One of :data:`FORMATS`."""
    width: int
    height: int
    bits: int
    """Bits per sample as stored (1, 2, 4, 8, 16, 32...); OpenCV widens 1-4 bit samples to 8."""
    channels: int
    """Samples per pixel as stored (a palette counts as 3)."""
    alpha: bool
    """The decoded image has an alpha plane."""
    gray_alpha: bool
    """Gray with alpha (OpenCV decodes it as BGRA with B = G = R)."""
    float_samples: bool
    """Floating-point samples (TIFF SampleFormat 3)."""
    frames: int
    """Pages (TIFF, reduced-resolution subfiles not counted) or animation frames (GIF, APNG); an animated WebP
    reports 2 (its frame count is not in the header)."""
    transparent_gray: int | None = None
    """The gray level a gray PNG's tRNS chunk makes transparent, scaled as the decoder widens the samples (1-4 bit
    to 8): OpenCV ignores it, so the runtime builds that alpha plane itself."""
    cmyk: bool = False
    """CMYK (or YCCK) samples, which OpenCV converts to BGR: no alpha (a CMYK TIFF decodes with a filler plane)."""

    @property
    def sixteen_bit(self) -> bool:
        return self.bits == 16

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def decoded_bytes(self) -> int:
        """Bytes of the array OpenCV will return (8- or 16-bit, as many channels as stored, alpha kept)."""
        return self.pixels * max(self.channels, 4 if self.alpha else 1) * (2 if self.bits == 16 else 1)

    def describe(self) -> str:
        kind = "CMYK" if self.cmyk else "gray+alpha" if self.gray_alpha else {
            1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}.get(self.channels, f"{self.channels}-channel")
        return f"{self.width}x{self.height} {self.bits}-bit {kind} {self.format.upper()}"


class _Reader:
    """Bounded reads at offsets of an open binary file; a short read is a truncated header."""

    def __init__(self, fh, path: Path | str, size: int):
        self.fh, self.path, self.size = fh, path, size

    def at(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise ImageError(f"{self.path}: the header is truncated or points past the end of the file "
                             f"({self.size} bytes); re-export or re-download the image")
        self.fh.seek(offset)
        data = self.fh.read(n)
        if len(data) != n:
            raise ImageError(f"{self.path}: the file ended inside its header; re-export or re-download it")
        return data


def _open_regular(path: Path):
    """Open ``path`` for reading if it is a regular file; every other case is a specific :class:`ImageError`."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{path}: a loop of symbolic links; point the link at a real image file") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            what = "a symbolic link to a missing file" if os.path.islink(path) else "no such file"
            raise ImageError(f"{path}: {what}") from exc
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path} is a folder; give an image file (or use a folder as input to process all in it)")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO would block forever, /dev/zero never ends: only regular files are images.
        raise ImageError(f"{path}: not a regular file (a device, pipe or socket); give an image file")
    if st.st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes)")
    try:
        return open(path, "rb"), st.st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def read_header(path: str | os.PathLike) -> ImageHeader:
    """The header of the image file ``path``, read without decoding any pixel data.

    Raises :class:`ImageError` naming the file for: missing files, links to nowhere or in a loop, folders, devices and
    pipes, empty files, truncated or implausible headers, and formats other than :data:`FORMATS`.
    """
    path = Path(path)
    fh, size = _open_regular(path)
    with fh:
        return _parse(_Reader(fh, path, size))


def header_of_bytes(data: bytes, source: str | os.PathLike = "image") -> ImageHeader:
    """The header of an encoded image held in memory (``source`` names it in errors)."""
    if not data:
        raise ImageError(f"{source}: the file is empty (0 bytes)")
    return _parse(_Reader(io.BytesIO(data), source, len(data)))  # source as given: a URI keeps its "//"


def _parse(r: _Reader) -> ImageHeader:
    head = r.at(0, min(r.size, 32))
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        header = _png(r)
    elif head.startswith(b"\xff\xd8"):
        header = _jpeg(r)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        header = _webp(r)
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        header = _tiff(r)
    elif head[:2] == b"BM":
        header = _bmp(r)
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        header = _gif(r)
    else:
        raise ImageError(f"{r.path}: not a readable image (not PNG, JPEG, WebP, TIFF or BMP by its first bytes; "
                         f"a text file, a truncated download or another format)")
    if header.width < 1 or header.height < 1:
        raise ImageError(f"{r.path}: the {header.format.upper()} header declares a {header.width}x{header.height} "
                         f"image; the file is corrupt")
    return header


# -- PNG ---------------------------------------------------------------------------------------------------------
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _png(r: _Reader) -> ImageHeader:
    length, kind = struct.unpack(">I4s", r.at(8, 8))
    if kind != b"IHDR" or length != 13:
        raise ImageError(f"{r.path}: the PNG does not start with its IHDR chunk; the file is corrupt")
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", r.at(16, 13))
    if color not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise ImageError(f"{r.path}: the PNG header has colour type {color} / bit depth {depth}, which the PNG "
                         f"standard does not define; the file is corrupt")
    frames, transparency, gray_key = 1, False, None
    offset = 33
    for _ in range(_MAX_PNG_CHUNKS):  # ancillary chunks before the first IDAT: animation control, transparency
        if offset + 8 > r.size:
            break
        length, kind = struct.unpack(">I4s", r.at(offset, 8))
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"acTL" and length >= 8:
            frames = max(1, struct.unpack(">I", r.at(offset + 8, 4))[0])
        elif kind == b"tRNS":
            transparency = True
            if color == 0 and length >= 2:  # the one gray level that is transparent, in the file's bit depth
                key = struct.unpack(">H", r.at(offset + 8, 2))[0] & ((1 << depth) - 1)
                gray_key = key if depth >= 8 else key * (255 // ((1 << depth) - 1))
        offset += 12 + length
    else:
        raise ImageError(f"{r.path}: the PNG has more than {_MAX_PNG_CHUNKS:,} chunks before its image data; the "
                         f"file is damaged or made to stall readers: re-save it (e.g. with ImageMagick or GIMP)")
    alpha = color in (4, 6) or transparency
    return ImageHeader("png", width, height, 16 if depth == 16 else 8, _PNG_CHANNELS[color], alpha,
                       color == 4 or (color == 0 and transparency), False, frames, gray_key)


# -- JPEG --------------------------------------------------------------------------------------------------------
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(r: _Reader) -> ImageHeader:
    offset = 2
    for _ in range(_MAX_CHUNKS):
        marker = r.at(offset, 2)
        if marker[0] != 0xFF:
            raise ImageError(f"{r.path}: the JPEG has no valid marker at byte {offset}; the file is corrupt")
        code = marker[1]
        if code == 0xFF:  # fill byte
            offset += 1
            continue
        if code in (0x01, 0xD8) or 0xD0 <= code <= 0xD7:  # markers without a length
            offset += 2
            continue
        if code in (0xD9, 0xDA):
            break  # end of image or start of scan before any frame header
        length = struct.unpack(">H", r.at(offset + 2, 2))[0]
        if length < 2:
            raise ImageError(f"{r.path}: the JPEG has a segment of length {length}; the file is corrupt")
        if code in _SOF:
            precision, height, width, components = struct.unpack(">BHHB", r.at(offset + 4, 6))
            if height == 0:
                raise ImageError(f"{r.path}: the JPEG leaves its height to a DNL marker, which is not supported; "
                                 f"re-save it with a standard encoder")
            # OpenCV decodes a 4-component (CMYK / YCCK) JPEG to BGR: three channels, no alpha
            return ImageHeader("jpeg", width, height, 16 if precision > 8 else 8, 3 if components == 4 else components,
                               False, False, False, 1, cmyk=components == 4)
        offset += 2 + length
    raise ImageError(f"{r.path}: the JPEG has no frame header (SOF) before its image data; the file is corrupt")


# -- WebP --------------------------------------------------------------------------------------------------------
def _webp(r: _Reader) -> ImageHeader:
    kind = r.at(12, 4)
    if kind == b"VP8 ":
        data = r.at(20, 10)
        if data[3:6] != b"\x9d\x01\x2a":
            raise ImageError(f"{r.path}: the WebP (VP8) frame has no start code; the file is corrupt")
        width, height = struct.unpack("<HH", data[6:10])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, 8, 3, False, False, False, 1)
    if kind == b"VP8L":
        data = r.at(20, 5)
        if data[0] != 0x2F:
            raise ImageError(f"{r.path}: the WebP (VP8L) stream has no signature; the file is corrupt")
        bits = struct.unpack("<I", data[1:5])[0]
        alpha = bool(bits >> 28 & 1)
        return ImageHeader("webp", (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1, 8, 4 if alpha else 3, alpha,
                           False, False, 1)
    if kind == b"VP8X":
        data = r.at(20, 10)
        flags = data[0]
        width = int.from_bytes(data[4:7], "little") + 1
        height = int.from_bytes(data[7:10], "little") + 1
        alpha = bool(flags & 0x10)
        return ImageHeader("webp", width, height, 8, 4 if alpha else 3, alpha, False, False,
                           2 if flags & 0x02 else 1)
    raise ImageError(f"{r.path}: the WebP starts with an unknown chunk {kind!r}; the file is corrupt")


# -- TIFF --------------------------------------------------------------------------------------------------------
_TIFF_TYPES = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8: the integer types the tags we read use


def _tiff(r: _Reader) -> ImageHeader:
    order = "<" if r.at(0, 2) == b"II" else ">"
    big = struct.unpack(order + "H", r.at(2, 2))[0] == 43
    if big:
        first = struct.unpack(order + "Q", r.at(8, 8))[0]
        count_fmt, entry_size, offset_fmt, inline = "Q", 20, "Q", 8
    else:
        first = struct.unpack(order + "I", r.at(4, 4))[0]
        count_fmt, entry_size, offset_fmt, inline = "H", 12, "I", 4
    count_size = struct.calcsize(count_fmt)
    offset_size = struct.calcsize(offset_fmt)

    def ifd(at: int) -> tuple[dict, int]:
        n = struct.unpack(order + count_fmt, r.at(at, count_size))[0]
        if n > _MAX_CHUNKS:
            raise ImageError(f"{r.path}: a TIFF directory claims {n} entries; the file is corrupt")
        table = r.at(at + count_size, n * entry_size + offset_size)
        tags = {}
        for i in range(n):
            entry = table[i * entry_size:(i + 1) * entry_size]
            tag, typ = struct.unpack(order + "HH", entry[:4])
            if tag not in (254, 256, 257, 258, 262, 277, 338, 339) or typ not in _TIFF_TYPES:
                continue
            value = entry[4 + (8 if big else 4):]
            fmt = {1: "B", 3: "H", 4: "I", 16: "Q"}[typ]
            size = _TIFF_TYPES[typ]
            count = struct.unpack(order + ("Q" if big else "I"), entry[4:4 + (8 if big else 4)])[0]
            if count * size > inline:  # the values live elsewhere: we need only the first
                where = struct.unpack(order + offset_fmt, value[:offset_size])[0]
                value = r.at(where, size)
            tags[tag] = struct.unpack(order + fmt, value[:size])[0]
        return tags, struct.unpack(order + offset_fmt, table[n * entry_size:])[0]

    tags, nxt = ifd(first)
    pages, seen = 1, {first}
    while nxt and len(seen) < _MAX_CHUNKS:
        if nxt in seen:
            raise ImageError(f"{r.path}: the TIFF's directory chain loops back on itself; the file is corrupt")
        seen.add(nxt)
        more, nxt = ifd(nxt)
        if not more.get(254, 0) & 1:  # reduced-resolution copies (thumbnails) are not pages
            pages += 1
    if 256 not in tags or 257 not in tags:
        raise ImageError(f"{r.path}: the TIFF's first directory has no image width/length; the file is corrupt")
    spp, bits, photometric = tags.get(277, 1), tags.get(258, 1), tags.get(262, 1)
    gray_alpha = photometric in (0, 1) and spp == 2
    alpha = gray_alpha or (photometric == 2 and spp >= 4)
    cmyk = photometric == 5  # separated (CMYK): OpenCV converts it to BGR (plus a filler plane), never alpha
    channels = 3 if photometric in (2, 3, 5, 6) and spp < 3 or cmyk else spp  # a palette decodes to 3 channels
    return ImageHeader("tiff", tags[256], tags[257], bits, channels, alpha, gray_alpha, tags.get(339, 1) == 3, pages,
                       cmyk=cmyk)


# -- BMP ---------------------------------------------------------------------------------------------------------
def _bmp(r: _Reader) -> ImageHeader:
    dib = struct.unpack("<I", r.at(14, 4))[0]
    if dib == 12:
        width, height, _, bpp = struct.unpack("<HHHH", r.at(18, 8))
    elif dib >= 40:
        width, height, _, bpp = struct.unpack("<iiHH", r.at(18, 12))
    else:
        raise ImageError(f"{r.path}: the BMP has an unknown {dib}-byte info header; the file is corrupt")
    return ImageHeader("bmp", width, abs(height), 8, 4 if bpp == 32 else 3, bpp == 32, False, False, 1)


# -- GIF ---------------------------------------------------------------------------------------------------------
def _gif(r: _Reader) -> ImageHeader:
    width, height, packed = struct.unpack("<HHB", r.at(6, 5))
    offset = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    frames = 0

    def skip_sub_blocks(at: int) -> int:
        for _ in range(1 << 20):
            n = r.at(at, 1)[0]
            at += 1 + n
            if n == 0:
                return at
        raise ImageError(f"{r.path}: a GIF data block does not end; the file is corrupt")

    for _ in range(_MAX_CHUNKS):
        if offset >= r.size:
            break
        block = r.at(offset, 1)[0]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            offset = skip_sub_blocks(offset + 2)
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW code size, data sub-blocks
            frames += 1
            if frames > 1:
                break  # enough to know it is animated
            local = r.at(offset + 9, 1)[0]
            offset += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            offset = skip_sub_blocks(offset + 1)
        else:
            raise ImageError(f"{r.path}: the GIF has an unknown block 0x{block:02x}; the file is corrupt")
    return ImageHeader("gif", width, height, 8, 3, False, False, False, max(frames, 1))
