"""TensorRT backend: runs a serialized engine (plan) built by ``export.tensorrt_build`` for this device.

``tensorrt`` and ``pycuda.driver`` are imported only when a backend is opened (pass ``trt=`` / ``cuda=`` to use other
modules, as the tests do with recording stand-ins). The API generation follows ``trt.__version__``:

- TensorRT 8.x: the bindings API, ``engine.num_bindings`` / ``get_binding_name`` / ``binding_is_input`` /
  ``get_binding_shape`` / ``get_binding_dtype`` and ``context.execute_async_v2(bindings, stream_handle)``
  (https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-853/api/c_api/classnvinfer1_1_1_i_cuda_engine.html,
  NVIDIA/TensorRT ``python/src/infer/pyCore.cpp``). 8.5 already has the named-tensor API too, with bindings marked
  deprecated, but bindings are what every 8.x has;
- TensorRT 10.x and 11.x, where bindings are removed: ``engine.num_io_tensors`` / ``get_tensor_name`` /
  ``get_tensor_mode`` == ``TensorIOMode.INPUT`` / ``get_tensor_shape`` / ``get_tensor_dtype``,
  ``context.set_tensor_address(name, ptr)`` and ``context.execute_async_v3(stream_handle)``
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-8x-to-10x-c-api-patterns.html;
  unchanged in ``python/src/infer/pyCore.cpp`` @ release/11.0).

Every runtime gets the process's one TensorRT logger (:func:`~..artifacts.tensorrt.trt_logger`): TensorRT keeps the
first logger it was given while any runtime lives, so a logger per backend would be freed with the first backend
closed while the others still log through it. ``trt.nptype`` raises ``TypeError`` for a tensor type without a numpy
equivalent (bf16, fp8...); that is reported as a :class:`BackendError` naming the tensor.

CUDA through PyCUDA with an explicit context, never ``pycuda.autoinit`` (which makes a process-wide context at import
and pops it at exit: wrong for a library): ``cuda.init()``, ``Device(i).make_context()`` (pushes it), ``ctx.push()`` /
``ctx.pop()`` around every use, ``pagelocked_empty`` host buffers, ``mem_alloc`` device buffers, one ``Stream`` with
``memcpy_htod_async`` / ``memcpy_dtoh_async`` / ``synchronize()`` (https://documen.tician.de/pycuda/driver.html).
``detach()`` of the current context pops and releases it, from any thread (inducer/pycuda ``src/cpp/cuda.hpp``,
``context::detach``), so :meth:`TrtBackend.close` pushes the context and detaches it.

Thread safety: one execution context and one set of buffers are not thread-safe, so :meth:`TrtBackend.infer` holds a
lock; it pushes the CUDA context onto the calling thread's stack and pops it again, so any thread may call it. Run
several backends (one per thread) for parallel inference.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..artifacts.manifest import EngineManifest, check_plan_compatible, read_manifest
from ..artifacts.tensorrt import (
    SUPPORTED_TENSORRT,
    TRT_LOG_NAME,
    require_pycuda,
    require_tensorrt,
    tensorrt_family,
    tensorrt_major,
    trt_logger,
)
from ..errors import BackendError, ConfigError
from .base import Backend, verify_artifact

__all__ = ["TrtBackend"]

log = logging.getLogger(__name__)


class TrtBackend(Backend):
    """Runs one TensorRT plan. ``input_shape`` (N, 3, h, w) and ``scale`` come from the engine itself.

    Opening reads the plan's manifest and refuses a plan built by another TensorRT version or on another GPU (with the
    command that rebuilds it), then deserializes the engine and allocates pinned host and device buffers once.
    ``manifest``: use this manifest instead of the file beside the plan (the export checks a plan before it writes
    the manifest).
    """

    name = "tensorrt"

    def __init__(self, plan_path: str | os.PathLike, device_index: int = 0, trt=None, cuda=None,
                 manifest: EngineManifest | None = None):
        self.path = Path(plan_path)
        self._lock = threading.Lock()
        self._closed = False
        self._ctx = self._runtime = self._engine = self._context = self._stream = None
        self._h_in = self._h_out = self._d_in = self._d_out = None
        if not self.path.is_file():
            raise BackendError(f"TensorRT plan {self.path} not found; build it on this device with mambaesr-export")
        if manifest is None:
            try:
                manifest = read_manifest(self.path)
            except ConfigError as exc:
                raise BackendError(str(exc)) from exc
            verify_artifact(self.path, manifest)  # a plan swapped under a built name is refused, not run
        trt = require_tensorrt(trt)
        cuda = require_pycuda(cuda)
        if tensorrt_family(trt.__version__) is None:
            raise BackendError(f"TensorRT {trt.__version__} is not a version MambaESR runs on; it supports "
                               f"{SUPPORTED_TENSORRT}")
        cuda.init()
        count = cuda.Device.count()
        if not 0 <= device_index < count:
            raise BackendError(f"CUDA device {device_index} does not exist; this system has {count} "
                               f"(valid: {list(range(count))})")
        device = cuda.Device(device_index)
        self.device_name = str(device.name())
        check_plan_compatible(manifest, str(trt.__version__), self.device_name)  # before touching the GPU

        self._trt, self._cuda, self.manifest = trt, cuda, manifest
        self.pad_value = manifest.pad_value
        self._legacy = tensorrt_major(trt.__version__) < 10
        plan = self.path.read_bytes()
        self._ctx = device.make_context()  # now current on this thread
        try:
            self._open(plan, manifest)
        except BaseException:
            self._teardown()  # the context is current here, as _teardown expects
            self._closed = True
            raise
        self._ctx.pop()  # leave the caller's thread as we found it; infer/close push it when needed

    def _open(self, plan: bytes, manifest: EngineManifest) -> None:
        trt, cuda = self._trt, self._cuda
        self._runtime = trt.Runtime(trt_logger(trt))
        if manifest.dla_core is not None:
            self._runtime.DLA_core = manifest.dla_core  # a DLA plan runs on the core it was built for
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendError(f"TensorRT could not deserialize {self.path.name} (the reason is in the log of "
                               f"{TRT_LOG_NAME!r}); rebuild it on this device: mambaesr-export --device "
                               f"{manifest.profile}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT could not create an execution context for {self.path.name} (out of GPU "
                               f"memory?)")
        (in_name, in_shape), (out_name, out_shape) = self._io_legacy() if self._legacy else self._io_tensors()
        if in_shape != tuple(manifest.input_shape):
            raise BackendError(f"{self.path.name} takes {in_shape} but its manifest says {manifest.input_shape}; the "
                               f"manifest belongs to another plan: rebuild with mambaesr-export --device "
                               f"{manifest.profile}")
        self.input_shape, self.output_shape = in_shape, out_shape
        self.scale = out_shape[2] // in_shape[2]
        # Buffers are allocated once and reused by every infer call.
        self._h_in = cuda.pagelocked_empty(in_shape, np.float32)
        self._h_out = cuda.pagelocked_empty(out_shape, np.float32)
        self._d_in = cuda.mem_alloc(self._h_in.nbytes)
        self._d_out = cuda.mem_alloc(self._h_out.nbytes)
        self._stream = cuda.Stream()
        if self._legacy:
            self._bindings = [0] * self._num_bindings
            self._bindings[self._in_index], self._bindings[self._out_index] = int(self._d_in), int(self._d_out)
        else:
            self._context.set_tensor_address(in_name, int(self._d_in))
            self._context.set_tensor_address(out_name, int(self._d_out))

    def _check_io(self, entries: list[tuple[str, bool, tuple, object]]) -> tuple:
        """``entries``: (name, is_input, shape, trt dtype). One float32 static input and output, or an error."""
        inputs = [e for e in entries if e[1]]
        outputs = [e for e in entries if not e[1]]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{self.path.name} has {len(inputs)} inputs and {len(outputs)} outputs; a MambaESR "
                               f"engine has one of each")
        for name, _, shape, dtype in entries:
            try:
                numpy_type = np.dtype(self._trt.nptype(dtype))
            except TypeError:  # trt.nptype: "Could not resolve TensorRT datatype to an equivalent numpy datatype"
                numpy_type = getattr(dtype, "name", str(dtype))
            if numpy_type != np.float32:
                raise BackendError(f"{self.path.name} tensor {name!r} is {numpy_type}; MambaESR engines take and "
                                   f"return float32 (rebuild with mambaesr-export --device {self.manifest.profile})")
            if len(shape) != 4 or any(d <= 0 for d in shape):
                raise BackendError(f"{self.path.name} tensor {name!r} has shape {shape}; MambaESR engines are "
                                   f"static 4-D (rebuild with mambaesr-export)")
        return (inputs[0][0], inputs[0][2]), (outputs[0][0], outputs[0][2])

    def _io_legacy(self) -> tuple:
        engine = self._engine
        entries = []
        self._num_bindings = engine.num_bindings
        for i in range(self._num_bindings):
            entries.append((engine.get_binding_name(i), bool(engine.binding_is_input(i)),
                            tuple(engine.get_binding_shape(i)), engine.get_binding_dtype(i)))
        result = self._check_io(entries)
        names = [e[0] for e in entries]
        self._in_index, self._out_index = names.index(result[0][0]), names.index(result[1][0])
        return result

    def _io_tensors(self) -> tuple:
        engine, trt = self._engine, self._trt
        entries = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            entries.append((name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                            tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name)))
        return self._check_io(entries)

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, 3, h, w) in [0, 1] -> float32 (N, 3, s*h, s*w); a new array each call."""
        cuda = self._cuda
        with self._lock:
            if self._ctx is None:  # closed by another thread since infer() checked
                raise BackendError(f"the tensorrt backend for {self.path.name} is closed; open a new one")
            self._ctx.push()
            try:
                np.copyto(self._h_in, x)
                cuda.memcpy_htod_async(self._d_in, self._h_in, self._stream)
                if self._legacy:
                    ok = self._context.execute_async_v2(bindings=self._bindings, stream_handle=self._stream.handle)
                else:
                    ok = self._context.execute_async_v3(stream_handle=self._stream.handle)
                if ok:
                    cuda.memcpy_dtoh_async(self._h_out, self._d_out, self._stream)
                self._stream.synchronize()  # also on failure: nothing may still write our buffers
                if not ok:
                    raise BackendError(f"TensorRT failed to run {self.path.name} (the reason is in the log of "
                                       f"{TRT_LOG_NAME!r})")
                return self._h_out.copy()
            finally:
                self._ctx.pop()

    def describe(self) -> str:
        api = "bindings" if self._legacy else "tensor addresses"
        return (f"tensorrt {self._trt.__version__} {self.path.name} {self.input_shape} x{self.scale} "
                f"{self.manifest.precision} on {self.device_name} ({api}); {parity_summary(self.manifest)}")

    def _teardown(self) -> None:
        """Free in dependency order with the CUDA context current: buffers, then TensorRT objects (the execution
        context before its engine before the runtime), then the CUDA context itself (detach pops it)."""
        for name in ("_d_in", "_d_out"):
            alloc = getattr(self, name)
            if alloc is not None:
                alloc.free()
                setattr(self, name, None)
        for name in ("_h_in", "_h_out"):
            host = getattr(self, name)
            if host is not None and hasattr(host.base, "free"):  # pagelocked_empty's base is its HostAllocation
                host.base.free()
            setattr(self, name, None)
        self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None
        if self._ctx is not None:
            self._ctx.detach()
            self._ctx = None

    def close_impl(self) -> None:
        """Release the GPU memory and the CUDA context (after a running ``infer``: same lock)."""
        with self._lock:
            if self._ctx is not None:
                self._ctx.push()
                self._teardown()


def parity_summary(manifest: EngineManifest) -> str:
    """What the build-time parity check measured for a plan, in one phrase (``mambaesr-run -v`` shows it)."""
    v = manifest.verification
    if "plan_vs_ort_psnr_db" not in v:
        return "no parity check recorded (built before MambaESR checked plans; rebuild with mambaesr-export)"
    return (f"parity vs ONNX Runtime fp32: {v['plan_vs_ort_psnr_db']} dB PSNR (worst tile "
            f"{v['plan_vs_ort_min_tile_psnr_db']} dB), max abs error {v['plan_vs_ort_max_abs_err']:.2g} on "
            f"{v['parity_tiles']} real tiles incl. a saturated one")
