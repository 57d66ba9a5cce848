"""Image I/O at the runtime's edge: decode and validate, split colour and alpha, encode atomically.

Inside the runtime an image is float32 RGB in [0, 1], (H, W, 3). At the edge we keep what the user gave us: gray,
RGB or RGBA, 8- or 16-bit. Gray is upscaled as RGB and converted back; alpha is upscaled separately (bicubic) and
reattached; the output keeps the input's bit depth. Every failure is an :class:`ImageError` that names the file, the
problem and the fix; nothing is written unless the whole image is ready (temporary file, then rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MambaESRError
from ..fileio import atomic_write
from .opencv import cv2

WRITE_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
SIXTEEN_BIT_FORMATS = (".png", ".tif", ".tiff")


class ImageError(MambaESRError):
    """An input image is missing, unreadable or of an unsupported kind, or an output cannot be written."""


@dataclass(frozen=True)
class Decoded:
    """A decoded image ready for the model: ``rgb`` float32 (H, W, 3) in [0, 1], plus how to restore the original
    kind on output (``mode`` 'gray' | 'rgb' | 'rgba', ``dtype`` uint8 | uint16) and the alpha plane, if any."""

    rgb: np.ndarray
    mode: str
    dtype: np.dtype
    alpha: np.ndarray | None = None


def decode(img: np.ndarray, source: str = "image") -> Decoded:
    """Validate an array as OpenCV returns it (BGR/BGRA order, gray 2D) and convert it for the model."""
    if not isinstance(img, np.ndarray) or img.size == 0:
        raise ImageError(f"{source}: empty image")
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{source}: unsupported sample type {img.dtype}; give 8- or 16-bit images")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        mode, bgr, alpha = "gray", np.repeat(img[:, :, None], 3, axis=2), None
    elif img.ndim == 3 and img.shape[2] == 3:
        mode, bgr, alpha = "rgb", img, None
    elif img.ndim == 3 and img.shape[2] == 4:
        mode, bgr, alpha = "rgba", img[:, :, :3], img[:, :, 3]
    else:
        channels = img.shape[2] if img.ndim == 3 else f"{img.ndim}-D"
        raise ImageError(f"{source}: {channels} channels are not supported; give gray, RGB or RGBA images")
    peak = float(np.iinfo(img.dtype).max)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.float32) / peak
    return Decoded(rgb, mode, img.dtype, None if alpha is None else alpha.astype(np.float32) / peak)


def output_array(decoded: Decoded, scale: int) -> np.ndarray:
    """An empty output of the input's kind and depth, ``scale`` x larger (OpenCV layout: gray 2-D, BGR, BGRA)."""
    h, w = decoded.rgb.shape[:2]
    channels = {"gray": (), "rgb": (3,), "rgba": (4,)}[decoded.mode]
    return np.empty((h * scale, w * scale, *channels), decoded.dtype)


def encode_rows(out: np.ndarray, y0: int, rows_rgb: np.ndarray, decoded: Decoded) -> None:
    """Write float RGB output rows (k, W*s, 3) into ``out`` (from :func:`output_array`) at row ``y0``."""
    peak = float(np.iinfo(decoded.dtype).max)
    k = rows_rgb.shape[0]
    if decoded.mode == "gray":
        # Gray in, gray out: the mean of the three channels the net produced from three equal ones.
        values = rows_rgb.mean(axis=2)
        target = out[y0:y0 + k]
    else:
        values = rows_rgb[:, :, ::-1]
        target = out[y0:y0 + k, :, :3]
    target[...] = np.clip(np.round(values * peak), 0, peak)


def encode_alpha(out: np.ndarray, decoded: Decoded) -> None:
    """Fill the alpha plane of an RGBA output: the input's alpha upscaled bicubic (the net sees colour only)."""
    if decoded.mode != "rgba":
        return
    peak = float(np.iinfo(decoded.dtype).max)
    h, w = out.shape[:2]
    alpha = cv2.resize(decoded.alpha, (w, h), interpolation=cv2.INTER_CUBIC)
    out[:, :, 3] = np.clip(np.round(alpha * peak), 0, peak)


def encode(sr_rgb: np.ndarray, decoded: Decoded, scale: int) -> np.ndarray:
    """The upscaled float RGB back to the input's kind and depth (OpenCV channel order), alpha upscaled bicubic."""
    out = output_array(decoded, scale)
    encode_rows(out, 0, sr_rgb, decoded)
    encode_alpha(out, decoded)
    return out


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The file as OpenCV decodes it with ``IMREAD_UNCHANGED`` (no conversion), or an :class:`ImageError`."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path} is a folder; give an image file (or use a folder as input to process all in it)")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes)")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{path}: not a readable image (truncated, corrupt or not an image format OpenCV knows: "
                         f"PNG, JPEG, WebP, TIFF, BMP)")
    if _truncated_png(data):
        raise ImageError(f"{path}: the PNG is truncated (no IEND chunk); re-export or re-download it")
    return img


def _truncated_png(data: np.ndarray) -> bool:
    """libpng decodes a PNG that lost its tail with a warning only; we refuse it rather than upscale half an image."""
    head = data[:8].tobytes()
    return head == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:].tobytes()


def write_image(path: str | os.PathLike, img: np.ndarray, overwrite: bool = False, quality: int = 95) -> Path:
    """Encode ``img`` (OpenCV order) to ``path`` atomically; refuses an existing file unless ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise ImageError(f"{path}: cannot write {suffix or 'files without an extension'}; use one of {WRITE_FORMATS}")
    if img.dtype == np.uint16 and suffix not in SIXTEEN_BIT_FORMATS:
        raise ImageError(f"{path}: {suffix} cannot hold 16-bit samples; write .png or .tif (or convert to 8-bit)")
    if path.exists() and not overwrite:
        raise ImageError(f"{path} exists; pass --overwrite to replace it, or choose another output")
    if not path.parent.exists():
        raise ImageError(f"{path.parent}: output folder does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ImageError(f"{path.parent}: output folder is not writable")
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, quality], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality],
              ".webp": [cv2.IMWRITE_WEBP_QUALITY, quality]}.get(suffix, [])

    def write(tmp):
        ok, buf = cv2.imencode(suffix, img, params)
        if not ok:
            raise ImageError(f"{path}: OpenCV could not encode a {img.shape} {img.dtype} image as {suffix}")
        buf.tofile(tmp)

    try:
        return atomic_write(path, write, suffix=suffix)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from exc
