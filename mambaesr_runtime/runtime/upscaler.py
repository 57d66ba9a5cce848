"""The embeddable upscaler: image in, image out, through an engine on overlapped tiles.

    from mambaesr_runtime import Upscaler
    with Upscaler() as up:                      # the shipped student on ONNX Runtime CPU
        big = up.upscale(cv2.imread("in.png", cv2.IMREAD_UNCHANGED))

Thread safety: an ``Upscaler`` keeps no per-call state (tiles and accumulators live in the call), and ONNX Runtime
sessions may be run from several threads, so one instance can serve concurrent calls; each call holds its own output
accumulators (see ``max_output_megapixels``).
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np

from ..backends.onnxruntime import OrtBackend
from ..errors import MambaESRError
from .imageio import decode, encode, read_image, write_image
from .tiling import upscale_tiled

log = logging.getLogger(__name__)

#: The default engine: the shipped student, exported for the CPU tier (64x64 LR tiles, batch 4).
DEFAULT_MODEL = "student_x4_t64_b4.onnx"


def shipped_model(name: str = DEFAULT_MODEL) -> Path:
    path = Path(str(resources.files("mambaesr_runtime").joinpath("weights", name)))
    if not path.is_file():
        raise MambaESRError(f"shipped model {name} is missing from {path.parent}; reinstall the package, or pass "
                            f"--model with an exported ONNX file")
    return path


class Upscaler:
    """Upscales images through one ONNX engine (static tile shape) with overlapped, feathered tiles.

    ``overlap``: LR pixels shared with each neighbour tile, per side. ``max_output_megapixels``: larger outputs are
    refused up front (the blend accumulators need 16 bytes per output pixel).
    """

    def __init__(self, model: str | os.PathLike | None = None, overlap: int = 8, threads: int = 2,
                 max_output_megapixels: float = 100.0):
        self.backend = OrtBackend(model if model is not None else shipped_model(), threads)
        n, _, th, tw = self.backend.input_shape
        if 2 * overlap >= min(th, tw):
            raise MambaESRError(f"overlap {overlap} must be less than half the engine's {th}x{tw} tile")
        self.scale, self.tile, self.batch, self.overlap = self.backend.scale, (th, tw), n, overlap
        self.max_output_megapixels = max_output_megapixels
        log.info("upscaler: %s", self.describe())

    def describe(self) -> str:
        return f"{self.backend.describe()}, overlap {self.overlap}"

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return h * self.scale, w * self.scale

    def check_size(self, h: int, w: int) -> None:
        oh, ow = self.output_size(h, w)
        mp = oh * ow / 1e6
        if mp > self.max_output_megapixels:
            raise MambaESRError(f"a {w}x{h} input makes a {ow}x{oh} output ({mp:.0f} MP), above the "
                                f"{self.max_output_megapixels:.0f} MP limit; blending it needs about "
                                f"{oh * ow * 16 / 2**30:.1f} GiB. Raise the limit (--max-megapixels) or crop")

    def upscale(self, img: np.ndarray, progress=None) -> np.ndarray:
        """An image as OpenCV reads it (gray, BGR or BGRA; uint8 or uint16) -> the same kind, ``scale`` x larger."""
        decoded = decode(img)
        self.check_size(*decoded.rgb.shape[:2])
        sr = upscale_tiled(self.backend.infer, decoded.rgb, self.scale, self.tile, self.overlap, self.batch,
                           progress)
        return encode(sr, decoded, self.scale)

    def upscale_file(self, src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
                     progress=None) -> Path:
        """Read, upscale, write atomically. The input is never modified; the output appears only when complete."""
        src, dst = Path(src), Path(dst)
        # Checked before the (slow) upscale, so a refusal costs nothing; write_image checks again at write time.
        if dst.exists() and not overwrite:
            raise MambaESRError(f"{dst} exists; pass --overwrite to replace it, or choose another output")
        if dst.resolve() == src.resolve():
            raise MambaESRError(f"{dst} is the input itself; choose another output (inputs are never overwritten)")
        return write_image(dst, self.upscale(read_image(src), progress), overwrite=overwrite)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
