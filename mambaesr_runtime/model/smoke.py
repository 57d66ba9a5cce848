"""A smoke run of a model variant: build, export to ONNX, run both, compare. Used by ``mambaesr-demo``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import require_torch
from .config import variant as get_variant


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A (1, 3, size, size) float32 test card in [0, 1]: gradients, a checkerboard and mild noise."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    checker = ((np.arange(size)[:, None] // 4 + np.arange(size)[None, :] // 4) % 2).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, 0.02, (size, size))
    rgb = np.stack([xx, yy, 0.5 * checker + 0.25 * (xx + yy)]) + noise
    return np.clip(rgb, 0, 1).astype(np.float32)[None]


def smoke_run(variant: str = "student", size: int = 64, threads: int = 2, seed: int = 0) -> dict:
    """Build ``variant`` (random weights), export it for a ``size`` x ``size`` input, and compare ORT with torch."""
    torch = require_torch()
    from ..export.onnx_export import export_onnx
    from ..export.parity import compare_with_torch
    from .net import build_model, count_parameters

    torch.manual_seed(seed)
    cfg = get_variant(variant)
    model = build_model(cfg).eval()
    image = synthetic_image(size, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / f"{variant}.onnx", size, size)
        result = compare_with_torch(model, path, image, threads)
    result.update(variant=variant, params=count_parameters(model), input_shape=image.shape)
    return result
