"""Run an exported ONNX file in ONNX Runtime next to the torch model it came from, and compare."""

from __future__ import annotations

import os
import time

import numpy as np

from ..backends.onnxruntime import OrtBackend
from ..errors import require_torch


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
