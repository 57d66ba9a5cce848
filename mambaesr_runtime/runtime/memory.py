"""Working memory: what upscaling one image will hold at its peak, estimated from the header and the arguments
alone, so that an image (or a tile size) that would not fit is refused before anything is decoded or run, the way
``max_output_megapixels`` refuses a large output.

The estimate adds, in bytes: the process itself (Python, NumPy, OpenCV, ONNX Runtime), the engine (its weights and
working memory at its tile and batch: a table measured for the shipped models, a rule for other ONNX files), and
the largest of the steps an image goes through, each with what is alive during it: decoding (the file's bytes and
the decoded array), the upscale (the decoded array, its float32 copy, the output array, the open cells of the
blend, the tiles in flight), the alpha plane's bicubic upscale, the resize to ``outscale``, and encoding the
output (OpenCV's encoders hold 1-36 bytes per output pixel besides the array: measured below). It is meant to be
an upper bound with a modest margin, not a guess: ``benchmarks/bad_inputs.py`` checks it against the measured peak
RSS (cases "issue 24 memory").

The default limit (:func:`default_limit`): the smaller of 4096 MB (the memory of the smallest boards the runtime
targets, a Raspberry Pi 5 and a Jetson Nano with 4 GB: a run estimated above it cannot work there, and on a larger
machine it is the same deliberate bound ``max_output_megapixels`` is) and 90 % of the memory available when the
upscaler starts (psutil's ``available``), so a board already short of memory refuses instead of being killed.
Every 100 MP output (the default megapixel limit) fits under 4096 MB on the shipped engines.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tiling import peak_blend_bytes

MB = 1 << 20
#: The fixed cap of the default limit, in MB (see the module's note).
DEFAULT_LIMIT_MB = 4096
#: The share of the memory available at start that the default limit allows.
AVAILABLE_SHARE = 0.9
#: The process before any engine: Python, NumPy, OpenCV, ONNX Runtime, Pillow (measured 68-85 MB here, x86-64).
PROCESS_BYTES = 100 * MB
#: An engine's fixed part (graph, weights, session), besides what grows with the tile.
ENGINE_FIXED_BYTES = 24 * MB
#: Bytes an engine holds per LR pixel of its batch (weights, activations, input and output), ONNX Runtime on the
#: CPU, measured as the growth of the peak RSS over three runs of a 264x264 tile (2026-12-04, x86-64, ONNX Runtime
#: 1.32; ``benchmarks/bad_inputs.py`` checks the sum against whole runs): student fp32 295 MB, fast 205 MB, student
#: int8 175 MB; the figures here put the engine 3-5 % above those.
ENGINE_BYTES_PER_PIXEL = {("student", "fp32"): 4100, ("fast", "fp32"): 2800, ("student", "int8"): 2300,
                          ("fast", "int8"): 2300}
#: Any other engine (a user's ONNX, a variant not measured): 1 KB per LR pixel plus 16 float32 output-sized
#: planes, i.e. 4 KB per LR pixel at x4 (measured for the peers: SPAN x4 2.9 KB, RLFN x4 1.9 KB at 264x264).
OTHER_BYTES_PER_PIXEL, OTHER_OUTPUT_PLANES = 1024, 16
#: The torch backend (development): the torch import (~280 MB measured) besides its model's working memory.
TORCH_FIXED_BYTES = 320 * MB
#: What OpenCV's encoder holds besides the output array while encoding, per byte of the raw output (PNG, BMP:
#: 2.0-2.3x, the compressed buffer and its copy; TIFF 2.8x; JPEG 0.9x RGB, 2.4x gray), measured on 2048x2048 and
#: 4096x4096 random and smooth images (2026-12-04, OpenCV 4.x); WebP is per output pixel: 24-37 bytes.
ENCODE_PER_RAW_BYTE = {".png": 2.4, ".bmp": 2.4, ".tif": 3.0, ".tiff": 3.0, ".jpg": 2.5, ".jpeg": 2.5}
WEBP_BYTES_PER_PIXEL = 40
#: A gray+alpha PNG (our own encoder): the filtered rows, their bytes and the zlib output.
GRAY_ALPHA_PER_RAW_BYTE = 4.0


@dataclass(frozen=True)
class MemoryEstimate:
    """An image's estimated peak working memory: ``parts`` (what, bytes) of the step that holds the most,
    with the process and the engine."""

    parts: tuple

    @property
    def total(self) -> int:
        return sum(b for _, b in self.parts)

    @property
    def mb(self) -> float:
        return self.total / MB

    def describe(self) -> str:
        """``about 812 MB (engine 310 MB, output 48 MB, ...)``: the parts of at least 1 MB, largest first."""
        shown = sorted((p for p in self.parts if p[1] >= MB), key=lambda p: -p[1])
        return f"about {self.mb:.0f} MB ({', '.join(f'{what} {b / MB:.0f} MB' for what, b in shown)})"


def engine_bytes(backend, variant: str | None = None, precision: str | None = None) -> int:
    """The working memory of an open engine (``backend``): from the table for a shipped variant on ONNX Runtime
    (also used for TensorRT, which was not measured here), from the general rule otherwise."""
    n, _, th, tw = backend.input_shape
    pixels = n * th * tw
    manifest = getattr(backend, "manifest", None)
    variant = variant or getattr(manifest, "variant", None) or getattr(backend, "variant", None)
    precision = precision or getattr(manifest, "precision", None) or getattr(backend, "precision", None) or "fp32"
    per_pixel = ENGINE_BYTES_PER_PIXEL.get((variant, precision))
    if per_pixel is None:
        per_pixel = OTHER_BYTES_PER_PIXEL + OTHER_OUTPUT_PLANES * 3 * 4 * backend.scale ** 2
    fixed = TORCH_FIXED_BYTES if backend.name == "torch" else ENGINE_FIXED_BYTES
    return fixed + per_pixel * pixels


def _encode_bytes(suffix: str | None, pixels: int, raw: int, gray_alpha: bool) -> int:
    if suffix is None:
        return 0
    if gray_alpha:
        return int(GRAY_ALPHA_PER_RAW_BYTE * raw)
    if suffix == ".webp":
        return WEBP_BYTES_PER_PIXEL * pixels
    return int(ENCODE_PER_RAW_BYTE.get(suffix, 3.0) * raw)


def estimate_memory(h: int, w: int, *, scale: int, tile: tuple[int, int], overlap: int, batch: int,
                    engine: int, channels: int = 3, itemsize: int = 1, out_size: tuple[int, int] | None = None,
                    suffix: str | None = None, file_bytes: int = 0, oriented: bool = True,
                    blend: bool = True) -> MemoryEstimate:
    """The peak working memory of upscaling an ``h`` x ``w`` image of ``channels`` (1 gray, 2 gray+alpha, 3 RGB,
    4 RGBA) samples of ``itemsize`` bytes through an engine of ``tile`` (LR), ``overlap``, ``batch`` and ``scale``
    holding ``engine`` bytes (:func:`engine_bytes`). ``out_size``: the (h, w) written when it is not the engine's
    (``outscale``); ``suffix``: the format it is encoded to (``None``: not encoded, e.g. an array or a video frame);
    ``file_bytes``: the size of the file it is decoded from (0: an array); ``oriented``: an EXIF rotation may copy
    the decoded array (counted unless false); ``blend``: false leaves out the blend's cells (a lower bound, without
    the plan's walk, which takes seconds for a 65535x65535 header)."""
    lr = h * w
    H, W = h * scale, w * scale
    decoded = lr * channels * itemsize
    output = H * W * channels * itemsize
    final_h, final_w = out_size or (H, W)
    final = final_h * final_w * channels * itemsize if out_size is not None else 0
    alpha = channels in (2, 4)
    floats = lr * 3 * 4 + (lr * 4 if alpha else 0)  # Decoded.rgb (and .alpha), float32
    th, tw = tile
    tile_out = batch * 3 * th * scale * tw * scale * 4
    crop = min(th, h) * scale * min(tw, w) * scale
    in_flight = (tile_out  # the previous batch's output, alive while the next one runs (one is in ``engine``)
                 + tile_out // 4  # the finiteness check's booleans
                 + 2 * 3 * crop * 4)  # the rounding of a finished block into the output's type
    cells = peak_blend_bytes(h, w, scale, tile, overlap) if blend else 0
    steps = {
        "decoding": [("file", file_bytes), ("decoded", decoded * (2 if oriented and file_bytes else 1))],
        "upscale": [("decoded", decoded), ("float copy", floats), ("output", output), ("blend", cells),
                    ("tiles", in_flight)],
        "alpha": [("decoded", decoded), ("float copy", floats), ("output", output),
                  ("alpha upscale", H * W * 4 if alpha else 0)],
        "resize": [("decoded", decoded), ("float copy", floats), ("output", output), ("resized output", final)],
        "encoding": [("decoded", decoded), ("output", final or output),
                     ("encoding", _encode_bytes(suffix, final_h * final_w, final or output, channels == 2))],
    }
    peak = max(steps.values(), key=lambda parts: sum(b for _, b in parts))
    return MemoryEstimate((("process", PROCESS_BYTES), ("engine", engine), *((k, b) for k, b in peak if b)))


def available_bytes() -> int | None:
    """The memory available to a new allocation now (psutil's ``available``), or ``None`` if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unable to read this system: no available-memory bound
        return None


def default_limit() -> tuple[float, str]:
    """(limit in MB, how it was chosen): the smaller of :data:`DEFAULT_LIMIT_MB` and 90 % of what is available."""
    available = available_bytes()
    if available is not None and AVAILABLE_SHARE * available / MB < DEFAULT_LIMIT_MB:
        mb = AVAILABLE_SHARE * available / MB
        return mb, f"the default: 90 % of the {available / MB:.0f} MB available when the upscaler started"
    return float(DEFAULT_LIMIT_MB), "the default"
