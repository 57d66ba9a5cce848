"""ONNX Runtime backend: one session over an exported MambaESR graph with a static input shape."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError
from ..profiles import check_threads
from .base import Backend, verify_artifact

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
        check_threads(threads)  # ONNX Runtime crashes the process on absurd thread counts instead of raising
        manifest = _read_manifest(path)
        if manifest is not None:
            verify_artifact(path, manifest)  # before loading: a swapped file is refused, not run under its name
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
        self.path = path
        self.input_shape, self.scale = _engine_shapes(path, self._session)
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        out_shape = (self.input_shape[0], 3, self.scale * self.input_shape[2], self.scale * self.input_shape[3])
        if manifest is not None and (manifest.input_shape, manifest.output_shape) != (self.input_shape, out_shape):
            raise BackendError(f"{path.name}: its manifest says {manifest.input_shape} -> {manifest.output_shape} "
                               f"but the graph is {self.input_shape} -> {out_shape}; the file was replaced. "
                               f"Re-export it with mambaesr-export")
        self.manifest = manifest
        self.pad_value = None if manifest is None else manifest.pad_value  # an ONNX file without one: reflection

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


def _engine_shapes(path: Path, session) -> tuple[tuple, int]:
    """(input shape, scale) of a graph that maps float32 (N, 3, h, w) to (N, 3, s*h, s*w), s >= 1; anything else
    (more inputs or outputs, another rank, dynamic or mismatched sizes) is not a MambaESR engine."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise BackendError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; a MambaESR engine has one "
                           f"of each (export it with mambaesr-export)")
    inp, out = inputs[0], outputs[0]
    if not all(isinstance(d, int) for d in inp.shape) or not all(isinstance(d, int) for d in out.shape):
        raise BackendError(f"{path} has dynamic shapes {inp.shape} -> {out.shape}; MambaESR engines are static "
                           f"(export with a fixed tile size)")
    if inp.type != "tensor(float)" or out.type != "tensor(float)":
        raise BackendError(f"{path} maps {inp.type} to {out.type}; a MambaESR engine maps float32 images to float32 "
                           f"images (export it with mambaesr-export)")
    if len(inp.shape) != 4 or len(out.shape) != 4 or inp.shape[1] != 3 or out.shape[1] != 3 \
            or min(inp.shape) < 1 or out.shape[0] != inp.shape[0]:
        raise BackendError(f"{path} maps {list(inp.shape)} to {list(out.shape)}; a MambaESR engine maps an "
                           f"(N, 3, h, w) batch of RGB tiles to (N, 3, s*h, s*w) (export it with mambaesr-export)")
    scale = out.shape[2] // inp.shape[2]
    if scale < 1 or tuple(out.shape[2:]) != (scale * inp.shape[2], scale * inp.shape[3]):
        raise BackendError(f"{path} maps {inp.shape[2]}x{inp.shape[3]} tiles to {out.shape[2]}x{out.shape[3]}, "
                           f"not an integer upscale of both sides; it is not a MambaESR engine")
    return tuple(inp.shape), scale


def _read_manifest(path: Path):
    """The manifest beside ``path`` if there is one (malformed: an error), else ``None``."""
    from ..export.manifest import manifest_path, read_manifest

    if not manifest_path(path).is_file():
        return None
    try:
        return read_manifest(path)
    except ConfigError as exc:
        raise BackendError(str(exc)) from exc
