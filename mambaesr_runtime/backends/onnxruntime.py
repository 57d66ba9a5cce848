"""ONNX Runtime backend: one session over an ONNX graph: an exported MambaESR engine (static tile shape, fp32 or int8,
pad-aware where its manifest says so) or any super-resolution ONNX with dynamic height and width."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..artifacts.manifest import manifest_path, read_manifest
from ..errors import BackendError, ConfigError
from ..profiles import check_threads
from .base import Backend, verify_artifact

__all__ = ["BackendError", "OrtBackend"]

log = logging.getLogger(__name__)


class OrtBackend(Backend):
    """Runs an ONNX file. ``input_shape`` (N, 3, h, w) and ``scale`` come from the graph itself.

    A graph with dynamic height and width (any super-resolution ONNX a user brings, e.g. ``(n, 3, h, w) -> (n, 3,
    sh, sw)``) runs on ``tile`` x ``tile`` inputs, ``batch`` at a time where the batch is dynamic too; its scale is
    measured by one probe run at that shape (``dynamic`` is then true and ``describe`` says so).

    ``providers``: execution providers in order of preference (a profile's ``ort_providers``); those this ONNX
    Runtime build lacks are skipped with a logged reason, and ``CPUExecutionProvider`` always closes the list.
    If a manifest sits beside the file, the graph's shapes must match it (a stale or swapped file is refused).
    ONNX Runtime sessions may be run from several threads at once.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int = 2, providers: list[str] | None = None,
                 tile: int | None = None, batch: int = 1):
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
        self._providers = self._session.get_providers()
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        if _is_dynamic(self._session):
            if manifest is not None:
                raise BackendError(f"{path.name} has dynamic shapes but a MambaESR manifest; the file was replaced. "
                                   f"Re-export it with mambaesr-export")
            self.input_shape, self.scale = self._probe(tile, batch)
            self.dynamic = True
        else:
            self.input_shape, self.scale = _engine_shapes(path, self._session)
        out_shape = (self.input_shape[0], 3, self.scale * self.input_shape[2], self.scale * self.input_shape[3])
        if manifest is not None and (manifest.input_shape, manifest.output_shape) != (self.input_shape, out_shape):
            raise BackendError(f"{path.name}: its manifest says {manifest.input_shape} -> {manifest.output_shape} "
                               f"but the graph is {self.input_shape} -> {out_shape}; the file was replaced. "
                               f"Re-export it with mambaesr-export")
        self.manifest = manifest
        self.pad_value = None if manifest is None else manifest.pad_value  # an ONNX file without one: reflection

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        y = self._session.run([self._output], {self._input: x})[0]
        if self._unchecked:  # a dynamic graph probed on a smaller tile: its first real run is checked too
            self._check_probe(x.shape, y, self.scale)
            self._unchecked = False
        return y

    _unchecked = False
    #: A dynamic graph is probed on a tile of at most this size (then checked on its first real run): a probe at
    #: the tile asked for would allocate its whole working memory before anyone could weigh it (a 4000x4000 tile
    #: of an x4 model: gigabytes). 64 is a multiple of the window and patch sizes SR models require.
    PROBE_TILE = 64

    def _probe(self, tile: int | None, batch: int) -> tuple[tuple, int]:
        """(input shape, scale) of a graph with dynamic height and width: one run on a small batch (``tile`` x
        ``tile`` up to twice :data:`PROBE_TILE`, else :data:`PROBE_TILE` square) measures the scale."""
        inp = self._session.get_inputs()[0]
        if tile is None:
            raise BackendError(f"{self.path.name} takes any image size (dynamic height and width); give the tile "
                               f"size to run it at")
        n = inp.shape[0] if isinstance(inp.shape[0], int) else batch
        shape = (n, 3, tile, tile)
        small = tile if tile <= 2 * self.PROBE_TILE else self.PROBE_TILE
        try:
            y = self._session.run([self._output], {self._input: np.full((n, 3, small, small), 0.5, np.float32)})[0]
        except Exception as exc:  # ORT's own exception types
            raise BackendError(f"{self.path.name} failed a probe run on a {(n, 3, small, small)} input: {exc}") \
                from exc
        scale = y.shape[2] // small if y.ndim == 4 else 0
        self._check_probe((n, 3, small, small), y, scale)
        self._unchecked = small != tile
        return shape, scale

    def _check_probe(self, shape: tuple, y: np.ndarray, scale: int) -> None:
        n, _, h, w = shape
        if y.dtype != np.float32 or y.ndim != 4 or y.shape[:2] != (n, 3) or scale < 1 \
                or y.shape[2:] != (scale * h, scale * w):
            raise BackendError(f"{self.path.name} maps a {shape} input to {y.dtype} {y.shape}; a super-resolution "
                               f"model maps (N, 3, h, w) float32 to (N, 3, s*h, s*w)")

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    def describe(self) -> str:
        how = " (dynamic height/width: tiles of this shape, scale found by a probe run)" if self.dynamic else ""
        return f"onnxruntime {self.path.name} {self.input_shape} x{self.scale}{how} {self._providers[0]}"

    def close_impl(self) -> None:
        self._session = None


def _is_dynamic(session) -> bool:
    """One float input and output of rank 4 with 3 channels whose height and width are not fixed numbers."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4 or len(outputs[0].shape) != 4:
        return False
    inp = inputs[0]
    return inp.shape[1] == 3 and not all(isinstance(d, int) for d in inp.shape[2:]) \
        and inp.type == outputs[0].type == "tensor(float)"


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
    if not manifest_path(path).is_file():
        return None
    try:
        return read_manifest(path)
    except ConfigError as exc:
        raise BackendError(str(exc)) from exc
