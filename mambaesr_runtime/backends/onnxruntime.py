"""ONNX Runtime backend: one session over an exported MambaESR graph with a static input shape."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MambaESRError


class BackendError(MambaESRError):
    """An engine could not be opened or was given input it cannot take."""


class OrtBackend:
    """Runs an ONNX file. ``input_shape`` (N, 3, h, w) and ``scale`` come from the graph itself."""

    def __init__(self, path: str | os.PathLike, threads: int = 2, providers: list[str] | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise BackendError(f"ONNX file {path} not found; export one with mambaesr-export or pass another path")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise BackendError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        inp, out = self._session.get_inputs()[0], self._session.get_outputs()[0]
        self.path, self._input, self._output = path, inp.name, out.name
        if not all(isinstance(d, int) for d in inp.shape) or not all(isinstance(d, int) for d in out.shape):
            raise BackendError(f"{path} has dynamic shapes {inp.shape} -> {out.shape}; MambaESR engines are static "
                               f"(export with a fixed tile size)")
        self.input_shape = tuple(inp.shape)
        self.scale = out.shape[2] // inp.shape[2]

    def infer(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self.input_shape or x.dtype != np.float32:
            raise BackendError(f"{self.path.name} takes float32 {self.input_shape}, got {x.dtype} {x.shape}")
        return self._session.run([self._output], {self._input: x})[0]

    def describe(self) -> str:
        return f"onnxruntime {self.path.name} {self.input_shape} x{self.scale} {self._session.get_providers()[0]}"

    def close(self) -> None:
        self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
