"""ONNX Runtime backend: one session over an exported MambaESR graph with a static input shape."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError
from .base import Backend

__all__ = ["BackendError", "OrtBackend"]

log = logging.getLogger(__name__)


class OrtBackend(Backend):
    """Runs an ONNX file. ``input_shape`` (N, 3, h, w) and ``scale`` come from the graph itself.

    ``providers``: execution providers in order of preference (a profile's ``ort_providers``); those this ONNX
    Runtime build lacks are skipped with a logged reason, and ``CPUExecutionProvider`` always closes the list.
    If a manifest sits beside the file, the graph's shapes must match it (a stale or swapped file is refused).
    ONNX Runtime sessions may be run from several threads at once.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 2, providers: list[str] | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise BackendError(f"ONNX file {path} not found; export one with mambaesr-export or pass another path")
        available = ort.get_available_providers()
        wanted = list(providers or ["CPUExecutionProvider"])
        chosen = [p for p in wanted if p in available]
        for p in wanted:
            if p not in available:
                log.info("ONNX Runtime provider %s is not in this build (available: %s); skipped", p, available)
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise BackendError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        inp, out = self._session.get_inputs()[0], self._session.get_outputs()[0]
        self.path, self._input, self._output = path, inp.name, out.name
        if not all(isinstance(d, int) for d in inp.shape) or not all(isinstance(d, int) for d in out.shape):
            raise BackendError(f"{path} has dynamic shapes {inp.shape} -> {out.shape}; MambaESR engines are static "
                               f"(export with a fixed tile size)")
        self.input_shape = tuple(inp.shape)
        self.scale = out.shape[2] // inp.shape[2]
        self.manifest = _matching_manifest(path, self.input_shape, tuple(out.shape))

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.check_input(x)
        return self._session.run([self._output], {self._input: x})[0]

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def describe(self) -> str:
        return f"onnxruntime {self.path.name} {self.input_shape} x{self.scale} {self.providers[0]}"

    def close(self) -> None:
        self._session = None


def _matching_manifest(path: Path, input_shape: tuple, output_shape: tuple):
    """The manifest beside ``path`` if there is one; its shapes must be the graph's."""
    from ..export.manifest import manifest_path, read_manifest

    if not manifest_path(path).is_file():
        return None
    try:
        manifest = read_manifest(path)
    except ConfigError as exc:
        raise BackendError(str(exc)) from exc
    if (manifest.input_shape, manifest.output_shape) != (input_shape, output_shape):
        raise BackendError(f"{path.name}: its manifest says {manifest.input_shape} -> {manifest.output_shape} but "
                           f"the graph is {input_shape} -> {output_shape}; the file was replaced. Re-export it "
                           f"with mambaesr-export")
    return manifest
