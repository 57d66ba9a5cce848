"""The installed TensorRT, as the artifact contract sees it: which profile target a version belongs to, the lazy
imports of ``tensorrt`` / ``pycuda.driver`` with install hints, and the process's one TensorRT logger.

Torch- and onnx-free: the TensorRT backend (on the device) and the engine builder (``export``) both use it. The logger
writes to :mod:`logging` (TensorRT's own ``trt.Logger`` prints to the console; a library must not); ``trt.ILogger``
subclassing follows the Python API page "tensorrt.ILogger" (TensorRT 8.5, 10.x, 11.x docs).
"""

from __future__ import annotations

import logging
import re
import threading

from ..errors import DependencyError

__all__ = ["SUPPORTED_TENSORRT", "TARGETS", "TRT_LOG_NAME", "require_pycuda", "require_tensorrt", "strongly_typed",
           "tensorrt_family", "tensorrt_major", "trt_logger", "version_numbers"]

TARGETS = ("8.5", "10")
"""TensorRT families a device profile can target (a profile's ``tensorrt``): ``"8.5"`` is TensorRT 8.5 (JetPack
5.1), ``"10"`` is TensorRT 10.x (JetPack 6.1+, desktop) and 11.x (desktop; strongly typed networks only)."""
SUPPORTED_TENSORRT = "8.5 (JetPack 5.1), 10.x (JetPack 6.1+, desktop) or 11.x (desktop)"
TENSORRT_INSTALL_HINT = (
    "on a Jetson, TensorRT and its Python bindings come with JetPack (JetPack 5.1 = TensorRT 8.5, JetPack 6.1+ = "
    "TensorRT 10.3; apt install python3-libnvinfer if the bindings are missing); on a desktop NVIDIA GPU: "
    "pip install tensorrt (11.x; or 'tensorrt>=10,<11' for 10.x)")
PYCUDA_INSTALL_HINT = "pip install pycuda (on a Jetson, with the JetPack CUDA toolkit on PATH: /usr/local/cuda/bin)"


def version_numbers(version: str) -> tuple[int, int]:
    """``"10.3.0.26"`` -> (10, 3)."""
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if not match:
        raise DependencyError(f"cannot read the TensorRT version {version!r}; expected 'major.minor...'")
    return int(match.group(1)), int(match.group(2))


def strongly_typed(version: str) -> bool:
    """TensorRT 11 removed weak typing (``BuilderFlag.FP16``, ``platform_has_fast_fp16``, ``EXPLICIT_BATCH``): an
    engine computes in the ONNX graph's own types (``include/NvInfer.h`` @ release/11.0)."""
    return version_numbers(version)[0] >= 11


def tensorrt_major(version: str) -> int:
    """``"8.5.2.2"`` -> 8: picks the API generation (8.x bindings vs 10.x named tensors)."""
    return version_numbers(version)[0]


def tensorrt_family(version: str) -> str | None:
    """The profile target a TensorRT version belongs to (``"8.5"``, ``"10"`` for 10.x and 11.x), ``None`` for one we
    do not target (8.6, 9.x, and majors newer than this release knows, whose API it cannot promise)."""
    major, minor = version_numbers(version)
    if (major, minor) == (8, 5):
        return "8.5"
    if major in (10, 11):
        return "10"
    return None


def require_tensorrt(trt=None):
    """``trt`` itself when given (tests pass a stand-in), else ``import tensorrt`` or say how to install it."""
    if trt is not None:
        return trt
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(f"this needs NVIDIA TensorRT's Python package `tensorrt`, which is not installed: "
                              f"{TENSORRT_INSTALL_HINT}") from exc
    return tensorrt


def require_pycuda(cuda=None):
    """``cuda`` itself when given, else ``import pycuda.driver`` (never ``pycuda.autoinit``: we manage the context)."""
    if cuda is not None:
        return cuda
    try:
        import pycuda.driver
    except ImportError as exc:
        raise DependencyError(f"the TensorRT backend needs PyCUDA for device buffers, which is not installed: "
                              f"{PYCUDA_INSTALL_HINT}") from exc
    return pycuda.driver


#: The logger every TensorRT message goes to (builder and runtime alike: TensorRT has one logger per process).
TRT_LOG_NAME = "mambaesr_runtime.tensorrt"
_TRT_LOGGERS: dict = {}  # id(trt module) -> (module, logger); never emptied, see trt_logger
_TRT_LOGGERS_LOCK = threading.Lock()


def trt_logger(trt):
    """The process's one ``trt.ILogger``, created on first use and never freed; pass it to every ``trt.Builder`` and
    ``trt.Runtime``.

    TensorRT keeps a single logger pointer while any builder, runtime or refitter exists and logs through it ("The
    logger passed into createInferRuntime differs from one already provided ... TensorRT maintains only a single logger
    pointer at any given time", NVIDIA/TensorRT#1475). A logger per builder/runtime lives only as long as its owner, so
    closing the first of several engines (``Upscaler``'s LRU) would leave TensorRT logging through a freed object.
    """
    with _TRT_LOGGERS_LOCK:
        entry = _TRT_LOGGERS.get(id(trt))
        if entry is None or entry[0] is not trt:
            entry = (trt, _logging_logger(trt, TRT_LOG_NAME))
            _TRT_LOGGERS[id(trt)] = entry  # the module is kept too, so its id cannot be reused
        return entry[1]


def _logging_logger(trt, name: str):
    """A ``trt.ILogger`` that forwards TensorRT's messages to the Python logger ``name`` (TensorRT's ``Logger``
    would print them)."""
    target = logging.getLogger(name)
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.INFO, severity.VERBOSE: logging.DEBUG}

    class _LoggingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)  # pybind11 trampolines need the base initialiser called explicitly

        def log(self, level, msg):
            target.log(levels.get(level, logging.INFO), "TensorRT: %s", msg)

    return _LoggingLogger()
