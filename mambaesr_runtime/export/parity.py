"""Verification of an export: run the ONNX file in ONNX Runtime next to the torch model it came from, on random
and real image tiles, and the model in half precision next to fp32. ``plan_parity`` (on the device) uses the same
real tiles. Importing this module needs no torch; the checks that compare with the model load it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..backends.onnxruntime import OrtBackend
from ..errors import ExportError, require_torch
from ..fileio import package_dir

#: ONNX Runtime vs PyTorch, fp32: the largest absolute difference on outputs in [0, 1] that passes.
FP32_TOLERANCE = 1e-4
#: The model run in fp16 must stay within this PSNR of its fp32 output on real tiles (and finite).
FP16_MIN_PSNR = 40.0


def compare_with_torch(model, onnx_path: str | os.PathLike, inputs: np.ndarray, threads: int = 2) -> dict:
    """Max abs difference between ``model(inputs)`` and the ONNX file's output, and both wall times in ms."""
    torch = require_torch()
    backend = OrtBackend(onnx_path, threads)
    start = time.perf_counter()
    ort_out = backend.infer(inputs)
    ort_ms = 1000 * (time.perf_counter() - start)
    with torch.no_grad():
        start = time.perf_counter()
        ref = model.eval()(torch.from_numpy(inputs)).numpy()
        torch_ms = 1000 * (time.perf_counter() - start)
    return {"max_abs_err": float(np.abs(ort_out - ref).max()), "ort_ms": ort_ms, "torch_ms": torch_ms,
            "output_shape": tuple(ort_out.shape)}


def real_tiles(tile: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` tiles of real image content (the shipped sample, reflected up to ``tile`` if smaller), with flips
    and transposes so they differ: float32 (count, 3, tile, tile) in [0, 1]."""
    import cv2  # the torch extra brings OpenCV; a Jetson has JetPack's

    bgr = cv2.imread(str(package_dir("mambaesr_runtime") / "data" / "sample.png"), cv2.IMREAD_COLOR)
    img = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.float32) / 255
    if min(img.shape[:2]) < tile:
        pad = max(0, tile - img.shape[0]), max(0, tile - img.shape[1])
        img = np.pad(img, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="reflect" if max(pad) < min(img.shape[:2])
                     else "symmetric")
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, tile, tile), np.float32)
    for i in range(count):
        y = rng.integers(0, img.shape[0] - tile + 1)
        x = rng.integers(0, img.shape[1] - tile + 1)
        crop = img[y:y + tile, x:x + tile]
        crop = np.rot90(crop, i % 4)
        out[i] = (crop[:, ::-1] if (i // 4) % 2 else crop).transpose(2, 0, 1)
    return out


def padded_tiles(tiles: np.ndarray, pad_value: float) -> tuple[np.ndarray, int]:
    """``tiles`` with their bottom and right thirds set to ``pad_value``: an image smaller than the tile, as the
    runtime pads it for a pad-aware engine. Returns the tiles and the side of their image part (LR pixels); only
    that part of an output is compared (what lies over the padding is discarded by the runtime)."""
    keep = 2 * tiles.shape[-1] // 3
    out = tiles.copy()
    out[..., keep:, :] = pad_value
    out[..., keep:] = pad_value
    return out, keep


def verify_fp32(model, onnx_path: Path, inputs: list[np.ndarray], threads: int = 2) -> dict:
    """Max abs error between ONNX Runtime and PyTorch over batches ``inputs``; raises above ``FP32_TOLERANCE``."""
    errors = [compare_with_torch(model, onnx_path, x, threads)["max_abs_err"] for x in inputs]
    worst = max(errors)
    if not np.isfinite(worst) or worst > FP32_TOLERANCE:
        raise ExportError(f"{onnx_path.name}: ONNX Runtime and PyTorch disagree by {worst:.3g} (max abs, fp32), "
                          f"above {FP32_TOLERANCE:g}; the export or simplification changed the model. Re-export "
                          f"with simplify_graph=False to tell which, and report it")
    return {"ort_vs_torch_max_abs_err": worst, "ort_vs_torch_batches": len(inputs)}


def verify_fp16(model, tiles: np.ndarray, device: str = "cpu", keep: int | None = None) -> dict:
    """Run the model in half precision on ``tiles``: it must stay finite and within ``FP16_MIN_PSNR`` of fp32
    (on the top-left ``keep`` x ``keep`` LR pixels only, for :func:`padded_tiles`)."""
    torch = require_torch()
    import copy

    x = torch.from_numpy(tiles).to(device)
    with torch.no_grad():
        ref = model.to(device).float()(x).clamp(0, 1)
        half = copy.deepcopy(model).half()
        out = half(x.half()).float()
    if not torch.isfinite(out).all():
        raise ExportError("the model produces inf/NaN in fp16; build this profile's engines with precision fp32 "
                          "(a profile with precision: fp32) or retrain")
    if keep is not None:
        side = keep * out.shape[-1] // tiles.shape[-1]
        out, ref = out[..., :side, :side], ref[..., :side, :side]
    mse = float(((out.clamp(0, 1) - ref) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
    if psnr < FP16_MIN_PSNR:
        raise ExportError(f"in fp16 the model's output is only {psnr:.1f} dB PSNR from fp32 (need >= "
                          f"{FP16_MIN_PSNR:g}); build with precision fp32 or retrain")
    return {"fp16_psnr_vs_fp32_db": round(psnr, 2), "fp16_tiles": int(tiles.shape[0]), "fp16_device": device}
