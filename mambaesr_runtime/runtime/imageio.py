"""Image I/O at the runtime's edge: inspect the header, decode and validate, split colour and alpha, encode
atomically.

Inside the runtime an image is float32 RGB in [0, 1], (H, W, 3). At the edge we keep what the user gave us: gray,
gray+alpha, RGB or RGBA, 8- or 16-bit. Gray is upscaled as RGB and converted back; alpha is upscaled separately
(bicubic) and reattached; the output keeps the input's kind and bit depth. A file is judged by its header first
(:func:`inspect_image`: size, pages, sample type) and a destination by everything that can be known before any work
(:func:`check_output`), so a refusal costs milliseconds, not a decode or an upscale. Every failure is an
:class:`ImageError` that names the file, the problem and the fix; nothing is written unless the whole image is ready
(temporary file, then rename).
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, name_too_long, probe_writable
from .imageheader import ImageError, ImageHeader, header_of_bytes, read_header
from .imagemeta import NONE, PhotoMeta, orient, read_meta, with_metadata
from .opencv import cv2

__all__ = ["Decoded", "ImageError", "ImageHeader", "OutputExistsError", "Photo", "PhotoMeta", "check_format",
           "check_output", "decode", "encode", "encode_image", "inspect_bytes", "inspect_image", "output_name", "photo_of_bytes",
           "read_image", "read_photo", "resize_output", "write_image"]

WRITE_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
SIXTEEN_BIT_FORMATS = (".png", ".tif", ".tiff")
ALPHA_FORMATS = (".png", ".webp", ".tif", ".tiff", ".bmp")
GRAY_ALPHA_FORMATS = (".png",)  # written by our own encoder: OpenCV writes no 2-channel images
#: The largest side an output format holds: JPEG's 16-bit sizes as libjpeg caps them (JPEG_MAX_DIMENSION), WebP's
#: 14-bit ones. Decided from the header and the scale, before any decode: the encoder would refuse only at the end.
MAX_SIDE = {".jpg": 65500, ".jpeg": 65500, ".webp": 16383}
#: A file may carry metadata besides its pixels, but not this much more than its decoded size.
EXTRA_BYTES_ALLOWED = 64 << 20


@dataclass(frozen=True)
class Decoded:
    """A decoded image ready for the model: ``rgb`` float32 (H, W, 3) in [0, 1], plus how to restore the original
    kind on output (``mode`` 'gray' | 'graya' | 'rgb' | 'rgba', ``dtype`` uint8 | uint16) and the alpha plane."""

    rgb: np.ndarray
    mode: str
    dtype: np.dtype
    alpha: np.ndarray | None = None


def decode(img: np.ndarray, source: str = "image") -> Decoded:
    """Validate an array as OpenCV returns it (gray 2-D, gray+alpha (H, W, 2), BGR, BGRA) and convert it for the
    model. ``source`` names the image in errors (the file name, when there is one)."""
    if not isinstance(img, np.ndarray) or img.size == 0:
        raise ImageError(f"{source}: empty image")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{source}: unsupported sample type {img.dtype}; give 8- or 16-bit images")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        mode, bgr, alpha = "gray", np.repeat(img[:, :, None], 3, axis=2), None
    elif img.ndim == 3 and img.shape[2] == 2:
        mode, bgr, alpha = "graya", np.repeat(img[:, :, :1], 3, axis=2), img[:, :, 1]
    elif img.ndim == 3 and img.shape[2] == 3:
        mode, bgr, alpha = "rgb", img, None
    elif img.ndim == 3 and img.shape[2] == 4:
        mode, bgr, alpha = "rgba", img[:, :, :3], img[:, :, 3]
    else:
        channels = img.shape[2] if img.ndim == 3 else f"{img.ndim}-D"
        raise ImageError(f"{source}: {channels} channels are not supported; give gray, gray+alpha, RGB or RGBA "
                         f"images")
    peak = float(np.iinfo(img.dtype).max)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.float32)
    rgb /= peak  # in place: one float copy of the image, not two
    return Decoded(rgb, mode, img.dtype, None if alpha is None else alpha.astype(np.float32) / peak)


def output_array(decoded: Decoded, scale: int) -> np.ndarray:
    """An empty output of the input's kind and depth, ``scale`` x larger (OpenCV layout: gray 2-D, BGR, BGRA)."""
    h, w = decoded.rgb.shape[:2]
    channels = {"gray": (), "graya": (2,), "rgb": (3,), "rgba": (4,)}[decoded.mode]
    return np.empty((h * scale, w * scale, *channels), decoded.dtype)


def encode_rows(out: np.ndarray, y0: int, rows_rgb: np.ndarray, decoded: Decoded, x0: int = 0) -> None:
    """Write a float RGB block of output rows (k, n, 3) into ``out`` (from :func:`output_array`) at row ``y0``,
    column ``x0`` (the blend emits finished blocks, not only whole rows)."""
    peak = float(np.iinfo(decoded.dtype).max)
    k, n = rows_rgb.shape[:2]
    if decoded.mode in ("gray", "graya"):
        # Gray in, gray out: the mean of the three channels the net produced from three equal ones.
        values = rows_rgb.mean(axis=2)
        target = out[y0:y0 + k, x0:x0 + n] if decoded.mode == "gray" else out[y0:y0 + k, x0:x0 + n, 0]
    else:
        values = rows_rgb[:, :, ::-1]
        target = out[y0:y0 + k, x0:x0 + n, :3]
    target[...] = np.clip(np.round(values * peak), 0, peak)


def encode_alpha(out: np.ndarray, decoded: Decoded) -> None:
    """Fill the alpha plane of an RGBA or gray+alpha output: the input's alpha upscaled bicubic (the net sees colour
    only)."""
    if decoded.alpha is None:
        return
    peak = float(np.iinfo(decoded.dtype).max)
    h, w = out.shape[:2]
    alpha = cv2.resize(decoded.alpha, (w, h), interpolation=cv2.INTER_CUBIC)
    alpha *= peak  # in place: the output-sized float plane is the only one
    out[:, :, -1] = np.clip(np.round(alpha, out=alpha), 0, peak, out=alpha)


def encode(sr_rgb: np.ndarray, decoded: Decoded, scale: int) -> np.ndarray:
    """The upscaled float RGB back to the input's kind and depth (OpenCV channel order), alpha upscaled bicubic."""
    out = output_array(decoded, scale)
    encode_rows(out, 0, sr_rgb, decoded)
    encode_alpha(out, decoded)
    return out


def inspect_image(path: str | os.PathLike) -> ImageHeader:
    """The header of ``path`` (see :mod:`.imageheader`), refusing what this runtime would lose or cannot read:
    animations and multi-page files (only one picture would come out), float or >16-bit samples, and files far
    larger than the pixels they declare. Reads a few hundred bytes; decodes nothing."""
    path = Path(path)
    header = read_header(path)
    _refuse_unsupported(header, path, path.stat().st_size)
    return header


def inspect_bytes(data: bytes, source: str | os.PathLike = "image") -> ImageHeader:
    """:func:`inspect_image` for a file's bytes already in memory (read by someone else: Ray Data, a network
    store); ``source`` names the file in errors. The same header checks and messages."""
    header = header_of_bytes(data, source)
    _refuse_unsupported(header, source, len(data))
    return header


def _refuse_unsupported(header: ImageHeader, path, size: int) -> None:
    if header.frames > 1:
        if header.format == "tiff":
            raise ImageError(f"{path}: a multi-page TIFF ({header.frames} pages); only its first page would be "
                             f"upscaled. Split the pages into files first (e.g. tiffsplit, or ImageMagick)")
        count = "" if header.format == "webp" else f" ({header.frames} frames)"
        raise ImageError(f"{path}: an animated {header.format.upper()}{count}; only its first frame would be "
                         f"upscaled. Convert it to a video (e.g. ffmpeg -i in.{header.format} in.mp4) and upscale "
                         f"that, or save the frame you want as PNG")
    if header.format == "tiff" and header.gray_alpha:
        raise ImageError(f"{path}: a gray+alpha TIFF, whose alpha OpenCV drops when decoding; convert it to PNG "
                         f"(gray+alpha is kept) or to an RGBA TIFF")
    if header.float_samples or header.bits > 16:
        kind = "floating-point" if header.float_samples else "integer"
        raise ImageError(f"{path}: {header.bits}-bit {kind} samples ({header.describe()}) are not supported; give 8- "
                         f"or 16-bit images (convert, e.g. with ImageMagick: -depth 16)")
    if size > 4 * header.decoded_bytes() + EXTRA_BYTES_ALLOWED:
        raise ImageError(f"{path}: the file is {size / 2**20:.0f} MB but its header declares only "
                         f"{header.describe()}; it carries something besides the image. Re-export it")


@dataclass(frozen=True)
class Photo:
    """A decoded file: ``pixels`` upright (EXIF orientation applied), OpenCV layout, and the ``meta`` to write
    back (its ``orientation`` is the file's, already applied to ``pixels``)."""

    pixels: np.ndarray
    meta: PhotoMeta


def read_image(path: str | os.PathLike, header: ImageHeader | None = None) -> np.ndarray:
    """The file's pixels as stored, as OpenCV decodes them with ``IMREAD_UNCHANGED`` (gray+alpha as (H, W, 2);
    no EXIF orientation applied: :func:`read_photo` does that), or an :class:`ImageError`. The header is inspected
    first (``header``: one :func:`inspect_image` already returned); the caller decides about the size before
    calling this: decoding allocates what the header declares."""
    return _read(Path(path), header)[0]


def read_photo(path: str | os.PathLike, header: ImageHeader | None = None, metadata: bool = True) -> Photo:
    """:func:`read_image`, then the pixels turned upright by the file's EXIF orientation, with the file's metadata
    (EXIF, ICC profile, PNG text, density; see :mod:`.imagemeta`) unless ``metadata`` is false. The metadata is
    parsed from the very bytes that passed the header check and were decoded, after the decode."""
    path = Path(path)
    img, data, header = _read(path, header)
    return _photo(img, data, header, path, metadata)


def photo_of_bytes(data: bytes, header: ImageHeader, source: str | os.PathLike = "image",
                   metadata: bool = True) -> Photo:
    """:func:`read_photo` of a file's bytes already in memory, whose ``header`` :func:`inspect_bytes` returned."""
    return _photo(_decode_checked(data, header, source), data, header, source, metadata)


def _photo(img: np.ndarray, data: bytes, header: ImageHeader, source, metadata: bool) -> Photo:
    meta = read_meta(data, header.format, source)
    return Photo(orient(img, meta.orientation) if meta.orientation != 1 else img, meta if metadata else NONE)


def _read(path: Path, header: ImageHeader | None) -> tuple[np.ndarray, bytes, ImageHeader]:
    if header is None:
        header = inspect_image(path)
    # Decode the very bytes whose header is checked here: a file replaced since inspect_image (a bomb swapped in
    # under the same name) is refused, not decoded. inspect_image has bounded the file's size.
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if header_of_bytes(data, path) != header:
        raise ImageError(f"{path}: the file changed while it was being read; run again once it is complete")
    return _decode_checked(data, header, path), data, header


def _decode_checked(data: bytes, header: ImageHeader, path) -> np.ndarray:
    """OpenCV's decode of ``data``, checked against its ``header`` (size, completeness, gray+alpha kept)."""
    try:
        if header.format == "jpeg":
            img, missing = _imdecode_jpeg(data)
        else:
            img, missing = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), None
    except cv2.error as exc:  # OpenCV's own limits (CV_IO_MAX_IMAGE_PIXELS) and decoder assertions
        raise ImageError(f"{path}: OpenCV refused to decode the {header.describe()} ({_oneline(exc)})") from exc
    except MemoryError as exc:
        raise ImageError(f"{path}: not enough memory to decode the {header.describe()}; free memory or crop the "
                         f"image") from exc
    if img is None:
        raise ImageError(f"{path}: not a readable image (truncated, corrupt or not an image format OpenCV knows: "
                         f"PNG, JPEG, WebP, TIFF, BMP)")
    if img.shape[:2] != (header.height, header.width):
        raise ImageError(f"{path}: decoded as {img.shape[1]}x{img.shape[0]} but its header declares "
                         f"{header.width}x{header.height}; the file is corrupt")
    if header.format == "png" and b"IEND" not in data[-32:]:  # libpng only warns; half an image is no image
        raise ImageError(f"{path}: the PNG is truncated (no IEND chunk); re-export or re-download it")
    if missing is not None:  # libjpeg only warns, and fills the rows it never got with flat gray
        raise ImageError(f"{path}: the JPEG's image data ends before its last row (libjpeg: {missing!r}): the file "
                         f"is truncated or damaged, and the missing rows would come out as invented flat gray. "
                         f"Re-export or re-download it")
    if header.gray_alpha and img.ndim == 3 and img.shape[2] == 4:
        img = np.ascontiguousarray(img[:, :, (0, 3)])  # OpenCV expands gray+alpha to BGRA; keep the file's kind
    elif header.transparent_gray is not None and img.ndim == 2:
        # OpenCV drops a gray PNG's tRNS: the one transparent gray level becomes the alpha plane it stands for
        peak = np.iinfo(img.dtype).max
        alpha = np.where(img == header.transparent_gray, 0, peak).astype(img.dtype)
        img = np.dstack([img, alpha])
    elif header.format == "tiff" and not header.alpha and img.ndim == 3 and img.shape[2] == 4:
        img = np.ascontiguousarray(img[:, :, :3])  # a CMYK TIFF comes out BGR plus a filler plane: no alpha invented
    return img


#: What libjpeg prints (OpenCV lets it, on fd 2) when the entropy-coded data ends before the last row: it then
#: returns the image anyway, the rows it never got filled in flat.
_JPEG_DATA_MISSING = ("premature end of data segment", "premature end of jpeg file")
_STDERR_LOCK = threading.Lock()


def _imdecode_jpeg(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """``cv2.imdecode`` of JPEG bytes, and libjpeg's warning when rows are missing (``None`` when none is).

    OpenCV gives libjpeg's warnings no return path: libjpeg writes them to file descriptor 2. So for the length of
    the decode, fd 2 points at a temporary file (under a lock: one decode at a time is watched); what was written
    there other than those warnings (libjpeg's harmless ones, another thread's output) is passed on to the real fd 2.
    """
    try:
        capture = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the with below
    except OSError:  # no writable temporary folder (a read-only container): decoded unwatched, as before
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), None
    with _STDERR_LOCK, capture:
        try:
            os.fstat(2)
            closed = False
        except OSError:  # fd 2 closed (2>&-): watched all the same (through /dev/null's place), closed again after
            closed = True
            placeholder = os.open(os.devnull, os.O_WRONLY)
            if placeholder != 2:
                os.dup2(placeholder, 2)
                os.close(placeholder)
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            try:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            finally:
                os.dup2(saved, 2)
            capture.seek(0)
            text = capture.read()
        finally:
            os.close(saved)
            if closed:
                os.close(2)
    missing, rest = None, []
    for line in text.decode("utf-8", "replace").splitlines(keepends=True):
        if missing is None and any(words in line.lower() for words in _JPEG_DATA_MISSING):
            missing = line.strip()
        else:
            rest.append(line)
    if rest and not closed:
        try:
            os.write(2, "".join(rest).encode("utf-8", "replace"))
        except OSError:
            pass
    return img, missing


def resize_output(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` resized to ``size`` (h, w): area averaging when it shrinks (no aliasing), Lanczos (8x8) when it
    grows; same dtype and channels."""
    h, w = size
    if (h, w) == img.shape[:2]:
        return img
    shrink = h <= img.shape[0] and w <= img.shape[1]
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    return out.reshape((h, w) + img.shape[2:])  # OpenCV drops a trailing channel axis of one


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[-200:]


class OutputExistsError(ImageError):
    """The output file exists (and ``overwrite`` was not given), found up front or by an exclusive publish that
    lost a race: the existing file is left as it is."""


def check_output(path: str | os.PathLike, *, sixteen_bit: bool = False, alpha: bool = False,
                 gray_alpha: bool = False, overwrite: bool = False, size: tuple[int, int] | None = None) -> Path:
    """Refuse an output that could not be written, before anything is computed for it: an unknown or missing
    extension, a file name longer than the file system takes, an output ``size`` (h, w) the format cannot hold
    (:data:`MAX_SIDE`), a format that cannot hold the image's depth or alpha, an existing file (without
    ``overwrite``), a missing folder, a folder where no file can be created (tried, not guessed from permission
    bits)."""
    path = Path(path)
    check_format(path, sixteen_bit=sixteen_bit, alpha=alpha, gray_alpha=gray_alpha, size=size)
    too_long = name_too_long(path)
    if too_long:
        raise ImageError(f"{path}: {too_long}")
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it, or choose another output")
    if path.is_dir():
        raise ImageError(f"{path} is a folder; give an output file name")
    if not path.parent.is_dir():
        raise ImageError(f"{path}: the output folder {path.parent} does not exist; create it or choose another "
                         f"output")
    try:
        probe_writable(path.parent)
    except OSError as exc:
        raise ImageError(f"{path}: the output folder {path.parent} is not writable ({exc.strerror or exc})") \
            from exc
    return path


def check_format(path: str | os.PathLike, *, sixteen_bit: bool = False, alpha: bool = False,
                 gray_alpha: bool = False, size: tuple[int, int] | None = None) -> str:
    """The part of :func:`check_output` that needs the name only (the suffix, lower case, is returned): an output
    written somewhere else (a network store) is judged by it too. ``size``: the output's (h, w), against the
    format's side limit (:data:`MAX_SIDE`)."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in WRITE_FORMATS:
        raise ImageError(f"{path}: cannot write {suffix or 'files without an extension'}; use one of {WRITE_FORMATS}")
    if size is not None and suffix in MAX_SIDE and max(size) > MAX_SIDE[suffix]:
        h, w = size
        raise ImageError(f"{path}: the output would be {w}x{h}, and {suffix} holds at most {MAX_SIDE[suffix]} "
                         f"pixels a side; write .png or .tif (no such limit), or crop the input")
    if sixteen_bit and suffix not in SIXTEEN_BIT_FORMATS:
        raise ImageError(f"{path}: {suffix} cannot hold 16-bit samples; write .png or .tif (or convert to 8-bit)")
    if gray_alpha and suffix not in GRAY_ALPHA_FORMATS:
        raise ImageError(f"{path}: {suffix} cannot hold gray+alpha here (the image has transparency); write .png "
                         f"(or remove the alpha first)")
    if alpha and suffix not in ALPHA_FORMATS:
        raise ImageError(f"{path}: {suffix} has no alpha channel and the image has one; write .png, .webp or .tif "
                         f"(or remove the alpha first)")
    return suffix


def output_name(name: str, suffix: str | None = None) -> str:
    """The name the upscaled ``name`` gets in an output folder: the same, or its stem with ``suffix`` (``.png``: a
    folder run with a format). One rule for the CLI's folder run and the distributed run."""
    return name if suffix is None else os.path.splitext(name)[0] + suffix


def check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ImageError(f"quality must be an integer from 1 to 100 (JPEG and WebP; default 95), got {quality!r}")
    return quality


def write_image(path: str | os.PathLike, img: np.ndarray, overwrite: bool = False, quality: int = 95,
                metadata: PhotoMeta | None = None) -> Path:
    """Encode ``img`` (OpenCV order; gray+alpha as (H, W, 2)) to ``path`` atomically; refuses an existing file
    unless ``overwrite`` (up front, and again when publishing: a file that appeared meanwhile is never replaced).
    ``quality`` (1-100) applies to JPEG and WebP. ``metadata`` (from :func:`read_photo`) is written where the
    format can hold it (:mod:`.imagemeta`)."""
    path = Path(path)
    check_quality(quality)
    check_output(path, sixteen_bit=img.dtype == np.uint16, alpha=img.ndim == 3 and img.shape[2] in (2, 4),
                 gray_alpha=img.ndim == 3 and img.shape[2] == 2, overwrite=overwrite, size=img.shape[:2])

    def write(tmp):
        data = encode_image(img, path, quality, metadata)
        with open(tmp, "wb") as fh:
            fh.write(data)

    try:
        return atomic_write(path, write, suffix=path.suffix.lower(), overwrite=overwrite)
    except FileExistsError as exc:
        raise OutputExistsError(f"{path} appeared while this image was being upscaled (another run or program "
                                f"created it); it was left as it is and this result was not written: pass "
                                f"overwrite=True to replace it, or choose another output") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc}){_space_hint(exc, path)}") from exc


def _space_hint(exc: OSError, path: Path) -> str:
    """'; the disk is full ...' for the errors a full disk or a file-size limit gives, else ''."""
    if exc.errno not in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return ""
    return f"; nothing was written: free space in {path.parent} (or raise the quota / file-size limit) or write elsewhere"


def encode_image(img: np.ndarray, path: str | os.PathLike, quality: int = 95,
                 metadata: PhotoMeta | None = None) -> bytes:
    """The bytes of the file :func:`write_image` writes for ``img`` at ``path`` (its suffix picks the format;
    nothing is written), for writers that publish the bytes themselves."""
    suffix = check_format(path, sixteen_bit=img.dtype == np.uint16, alpha=img.ndim == 3 and img.shape[2] in (2, 4),
                          gray_alpha=img.ndim == 3 and img.shape[2] == 2)
    check_quality(quality)
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, quality], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality],
              ".webp": [cv2.IMWRITE_WEBP_QUALITY, quality]}.get(suffix, [])
    if img.ndim == 3 and img.shape[2] == 2:
        data = _png_gray_alpha(img)
    else:
        ok, buf = cv2.imencode(suffix, img, params)
        if not ok:
            raise ImageError(f"{path}: OpenCV could not encode a {img.shape} {img.dtype} image as {suffix}")
        data = buf.tobytes()
        del buf  # one encoded copy at a time
    if metadata is not None:
        data = with_metadata(data, suffix, metadata, img.shape, path)
    return data


def _png_gray_alpha(img: np.ndarray) -> bytes:
    """A gray+alpha PNG (colour type 4, 8 or 16 bit) of an (H, W, 2) array: OpenCV writes 1, 3 or 4 channels only."""
    h, w, _ = img.shape
    depth = 16 if img.dtype == np.uint16 else 8
    samples = img.astype(">u2") if depth == 16 else img
    rows = np.ascontiguousarray(samples).view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 4, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))
