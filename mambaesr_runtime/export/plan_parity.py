"""Build-time parity of a TensorRT plan: the plan and ONNX Runtime (fp32, CPU) on the same real tiles.

A plan is installed (moved into place with its manifest) only after it has computed what its ONNX graph computes. The
tiles are real image content (the shipped sample, :func:`.parity.real_tiles`) plus one high-contrast, saturated
tile (:func:`saturated_tile`): flat black and white and hard edges between saturated colours are where reduced
precision fails first (the largest activations, outputs at the clipping limits). The plan's output is compared with
ONNX Runtime's fp32 output of the verified ONNX file it was built from: the largest absolute difference, the PSNR over
all tiles and the worst single tile's PSNR (outputs clipped to [0, 1], as the runtime writes them). A plan whose worst
tile is below :data:`PLAN_MIN_PSNR` (or that produces inf/NaN) is refused with :class:`ExportError`; nothing is
written. The same bar holds for fp32 plans: TensorRT builds them with TF32 allowed, so they are not bit-exact either,
but 40 dB apart means the plan computes something else. An int8 plan is compared with the fp32 graph its QDQ graph
was made from, on the real and padded tiles; its saturated tile is recorded but not part of the bar, as for the int8
ONNX (:func:`.int8_onnx.check_int8_parity`: static int8 ranges calibrated on real images clip it by construction).

Torch-free: runs on the device with TensorRT, PyCUDA and ONNX Runtime.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from ..artifacts.manifest import EngineManifest
from ..errors import ExportError

__all__ = ["PARITY_MIN_TILES", "PLAN_MIN_PSNR", "check_plan_parity", "parity_tiles", "saturated_tile"]

log = logging.getLogger(__name__)

#: A plan's worst tile must be at least this close to ONNX Runtime fp32 (PSNR, dB, outputs in [0, 1]).
PLAN_MIN_PSNR = 40.0
#: At least this many tiles are compared (whole batches of the plan's static batch size).
PARITY_MIN_TILES = 4
_PSNR_CAP = 100.0  # identical outputs: recorded as 100 dB (JSON has no infinity)
_COLOURS = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
                    np.float32)


def saturated_tile(tile: int) -> np.ndarray:
    """float32 (3, tile, tile): a white band, a black band, and between them a checkerboard of the eight saturated
    colours with 1-, 2- and 4-pixel cells (every edge as steep as an image can have)."""
    y, x = np.mgrid[0:tile, 0:tile]
    cell = np.where(x < tile // 3, 1, np.where(x < 2 * tile // 3, 2, 4))
    index = ((y // cell) + 3 * (x // cell)) % len(_COLOURS)
    img = _COLOURS[index]
    band = max(1, tile // 5)
    img[:band] = 1.0
    img[-band:] = 0.0
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def parity_tiles(tile: int, batch: int) -> np.ndarray:
    """float32 (k * batch, 3, tile, tile): real tiles, the saturated tile last; at least :data:`PARITY_MIN_TILES`."""
    from .parity import real_tiles

    total = batch * math.ceil(PARITY_MIN_TILES / batch)
    return np.concatenate([real_tiles(tile, total - 1), saturated_tile(tile)[None]])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2, dtype=np.float64))
    return _PSNR_CAP if mse == 0 else min(_PSNR_CAP, 10 * math.log10(1.0 / mse))


def check_plan_parity(plan: Path, manifest: EngineManifest, onnx_path: Path, *, trt=None, cuda=None,
                      threads: int = 2) -> dict:
    """Run ``plan`` (described by ``manifest``, which need not be written yet) and ``onnx_path`` in ONNX Runtime fp32
    on :func:`parity_tiles`; return the numbers for the manifest's ``verification``, or raise :class:`ExportError`
    when the plan is too far from fp32 (nothing is written either way).

    Returned keys: ``parity_reference``, ``parity_tiles``, ``plan_vs_ort_max_abs_err``, ``plan_vs_ort_psnr_db``,
    ``plan_vs_ort_min_tile_psnr_db``, ``plan_vs_ort_saturated_tile_psnr_db``, ``parity_min_psnr_db``, ``infer_ms``
    (one batch through the plan, after a warm-up call); for a pad-aware plan (manifest ``pad_value``) also
    ``plan_vs_ort_padded_tile_psnr_db``, the worst image part of one batch of padded tiles, which must pass too.
    """
    from ..backends.onnxruntime import OrtBackend
    from ..backends.tensorrt import TrtBackend

    plan, onnx_path = Path(plan), Path(onnx_path)
    n, _, h, w = manifest.input_shape
    if h != w:
        raise ExportError(f"{plan.name}: tiles are square, but the manifest says {manifest.input_shape}")
    tiles = parity_tiles(h, n)
    plain, keep = len(tiles), h
    if manifest.pad_value is not None:  # a pad-aware plan: one batch of padded tiles too, compared on their image part
        from .parity import padded_tiles, real_tiles

        padded, keep = padded_tiles(real_tiles(h, n, seed=1), manifest.pad_value)
        tiles = np.concatenate([tiles, padded])
    outputs, references = [], []
    with OrtBackend(onnx_path, threads, ["CPUExecutionProvider"]) as reference, \
            TrtBackend(plan, trt=trt, cuda=cuda, manifest=manifest) as engine:
        for start in range(0, len(tiles), n):
            batch = np.ascontiguousarray(tiles[start:start + n])
            outputs.append(engine.infer(batch))
            references.append(reference.infer(batch))
        started = time.perf_counter()
        engine.infer(np.ascontiguousarray(tiles[:n]))  # warmed up by the calls above
        infer_ms = 1000 * (time.perf_counter() - started)
    out, ref = np.concatenate(outputs), np.concatenate(references)
    precision = manifest.precision
    if not np.isfinite(out).all():
        raise ExportError(f"{plan.name}: the {precision} plan produces inf/NaN on real tiles where ONNX Runtime fp32 "
                          f"does not; it was not installed (nothing was written). "
                          + _fix(precision, manifest.profile))
    side = keep * out.shape[-1] // w
    per_tile = [_psnr(o, r) if i < plain else _psnr(o[..., :side, :side], r[..., :side, :side])
                for i, (o, r) in enumerate(zip(out, ref))]
    result = {
        "parity_reference": "onnxruntime fp32 CPU", "parity_tiles": len(tiles),
        "plan_vs_ort_max_abs_err": float(np.abs(out[:plain] - ref[:plain]).max()),
        "plan_vs_ort_psnr_db": round(_psnr(out[:plain], ref[:plain]), 2),
        "plan_vs_ort_min_tile_psnr_db": round(min(per_tile), 2),
        "plan_vs_ort_saturated_tile_psnr_db": round(per_tile[plain - 1], 2), "parity_min_psnr_db": PLAN_MIN_PSNR,
        "infer_ms": round(infer_ms, 2),
    }
    if plain < len(tiles):
        result["plan_vs_ort_padded_tile_psnr_db"] = round(min(per_tile[plain:]), 2)
    bar = [i for i in range(len(tiles)) if not (precision == "int8" and i == plain - 1)]
    if precision == "int8":
        result["parity_rule"] = "every real and padded tile >= parity_min_psnr_db; the saturated tile is recorded only"
        result["plan_vs_ort_min_tile_psnr_db"] = round(min(per_tile[i] for i in bar), 2)
    worst = min(bar, key=per_tile.__getitem__)
    if per_tile[worst] < PLAN_MIN_PSNR:
        which = ("the saturated tile" if worst == plain - 1 else f"real tile {worst}" if worst < plain
                 else f"padded tile {worst - plain} (its image part)")
        raise ExportError(f"{plan.name}: the {precision} plan is only {per_tile[worst]:.1f} dB PSNR from ONNX Runtime "
                          f"fp32 on {which} (all tiles: {result['plan_vs_ort_psnr_db']} dB, max abs error "
                          f"{result['plan_vs_ort_max_abs_err']:.3g}); a plan must reach {PLAN_MIN_PSNR:g} dB on every "
                          f"tile. It was not installed (nothing was written). " + _fix(precision, manifest.profile))
    log.info("%s: %.2f dB PSNR vs ONNX Runtime fp32 (worst tile %.2f dB, max abs error %.3g) on %d tiles", plan.name,
             result["plan_vs_ort_psnr_db"], result["plan_vs_ort_min_tile_psnr_db"],
             result["plan_vs_ort_max_abs_err"], len(tiles))
    return result


def _fix(precision: str, profile: str) -> str:
    if precision == "fp16":
        return ("Its activations leave fp16's range or precision: build this device's engines with precision fp32 "
                "(a profile YAML with precision: fp32: mambaesr-export --profile that.yaml), or use weights that stay "
                "within fp16")
    return (f"The plan computes something other than its ONNX graph: rebuild it (mambaesr-export --device {profile} "
            f"--force) and report it if it persists")
