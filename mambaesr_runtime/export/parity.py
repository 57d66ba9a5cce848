"""Run an exported ONNX file in ONNX Runtime next to the torch model it came from, and compare."""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import require_torch
from .onnx_export import INPUT_NAME


def ort_session(path: str | os.PathLike, threads: int = 2):
    """A CPU ONNX Runtime session with a fixed thread count (intra-op), as the runtime and benchmarks use it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_with_torch(model, onnx_path: str | os.PathLike, inputs: np.ndarray, threads: int = 2) -> dict:
    """Max abs difference between ``model(inputs)`` and the ONNX file's output, and both wall times in ms."""
    torch = require_torch()
    session = ort_session(onnx_path, threads)
    start = time.perf_counter()
    ort_out = session.run(None, {INPUT_NAME: inputs})[0]
    ort_ms = 1000 * (time.perf_counter() - start)
    with torch.no_grad():
        start = time.perf_counter()
        ref = model.eval()(torch.from_numpy(inputs)).numpy()
        torch_ms = 1000 * (time.perf_counter() - start)
    return {"max_abs_err": float(np.abs(ort_out - ref).max()), "ort_ms": ort_ms, "torch_ms": torch_ms,
            "output_shape": tuple(ort_out.shape)}
