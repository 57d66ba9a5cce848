"""Recording stand-ins for ``tensorrt`` (8.5, 10.x and 11.x APIs) and ``pycuda.driver``, strict where the real ones are.

Each fake exposes the members of its version's documented API and nothing else, so a call the real version lacks
fails here as on the device (``AttributeError``):

- 8.5: the bindings API; the named-tensor API that 8.5 introduced (``execute_async_v3``, ``set_tensor_address``) is
  left out, so a test proves the 8.x path never needs it. A network created without ``EXPLICIT_BATCH`` is refused by
  the ONNX parser (onnx-tensorrt ``ModelImporter.cpp`` @ 8.5-GA: "This version of the ONNX parser only supports
  TensorRT INetworkDefinitions with an explicit batch dimension").
- 10.x: no bindings API (removed in 10.0); ``EXPLICIT_BATCH`` deprecated and ignored.
- 11.x: strongly typed only: no ``BuilderFlag.FP16`` / ``INT8`` / ``BF16`` / ``FP8``, no
  ``Builder.platform_has_fast_fp16``, no ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (``STRONGLY_TYPED`` kept,
  deprecated and ignored); the network computes in the ONNX graph's own types.

Enum values are the real ones (``include/NvInfer.h`` / ``NvInferRuntimeBase.h`` of NVIDIA/TensorRT @ release/8.5,
release/10.3, release/11.0; Python names from ``python/src/infer/pyCore.cpp`` / ``pyFoundationalTypes.cpp``).

Behaviours that make code fail here the way it would fail on a device:

- **One logger per process.** TensorRT keeps a single logger pointer while any builder or runtime exists and logs
  everything through it: a builder/runtime created with another logger gets the warning NVIDIA/TensorRT#1475 quotes
  and the kept one is used. Python keeps each builder's/runtime's own logger alive only as long as that object
  (``py::keep_alive<1, 2>`` in ``pyCore.cpp``), so closing the first engine frees the kept logger while the others
  still log through it. The fake logs through a weak reference to the kept logger and raises when it is gone (a
  crash on a device).
- ``IBuilderConfig.create_timing_cache`` can return ``None`` (a cache from another version; trtexec checks for
  it: ``samples/utils/timingCache.cpp``), and ``set_timing_cache(None, ...)`` is a ``TypeError`` as in pybind11.
- ``Runtime.deserialize_cuda_engine`` and ``ICudaEngine.create_execution_context`` need a current CUDA context.
- ``build_serialized_network`` and ``ITimingCache.serialize`` return an ``IHostMemory``-like object: the buffer
  protocol, ``nbytes`` and ``dtype``, but no ``len()`` and no slicing (``pyFoundationalTypes.cpp``).
- ``nptype`` raises ``TypeError`` for types without a numpy equivalent (``python/packaging/.../__init__.py``).
- **Q/DQ as the ONNX parser takes them** (onnx-tensorrt ``QuantDequantLinearHelper``, 8.5 GA and 10.6 GA): a
  QuantizeLinear/DequantizeLinear needs constant scales > 0 and a zero point of all zeros (a UINT8 zero point is read
  as INT8 with a warning from 10.x on, so 128 fails too); 8.5 needs all three inputs. A DequantizeLinear of an int32
  constant (ONNX Runtime's quantized bias) parses but fails the build ("only activation types allowed as input to
  this layer"). Weakly typed builds (8.5, 10.x) of a network with Q/DQ layers fail without ``BuilderFlag.INT8``
  ("Int8 precision has been set for a layer or layer output, but int8 is not configured in the builder").

The fake builder stores the parsed ONNX graph in the plan; the fake engine computes it with ONNX Runtime (CPU), so
an engine gives what its network computes (``write_static_sr_onnx`` makes a nearest-neighbour x4 graph, so outputs
can be checked exactly). ``Recorder.output_fault`` makes an engine return something else, for parity tests.

Every call is appended to ``Recorder.calls`` as ``(name, args)``: methods, constructors, property writes and the
capability reads the builder decides on. Device memory lives in ``Recorder.memory``; every CUDA call that needs a
current context checks ``Recorder.ctx_stack``, like the driver does.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
import weakref
from dataclasses import dataclass, field

import numpy as np

TRT85_VERSION = "8.5.2.2"  # JetPack 5.1.x
TRT10_VERSION = "10.3.0.30"  # JetPack 6.1 / 6.2
TRT11_VERSION = "11.1.0.106"  # include/NvInferVersion.h @ release/11.1 (desktop; JetPack does not ship 11)
_PLAN_MAGIC = b"FAKEPLAN\n"


@dataclass
class Recorder:
    """The shared call log and the knobs and state of one set of fakes."""

    calls: list = field(default_factory=list)
    parse_errors: list = field(default_factory=list)
    """(desc, node index, node name, op) per error; the parse fails when this is non-empty."""
    build_fails: bool = False
    fast_fp16: bool = True
    dla_cores: int = 0
    timing_cache_mismatch: bool = False
    """``set_timing_cache(cache, ignore_mismatch=False)`` refuses a loaded cache (returns False)."""
    timing_cache_unreadable: bool = False
    """``create_timing_cache`` returns ``None`` for a non-empty blob (a cache file of another TensorRT version)."""
    execute_ok: bool = True
    network_input: tuple | None = None
    """Override of what the fake parser reports as the input (name, shape; -1 = dynamic); default: the ONNX's."""
    scale: int = 4
    output_fault: object = None
    """``fault(x, y) -> y'``: what the engine returns instead of the network's output ``y`` for input ``x``."""
    device_name: str = "Orin (nvgpu)"
    device_count: int = 1
    memory: dict = field(default_factory=dict)
    ctx_stack: list = field(default_factory=list)
    next_address: int = 0x10000
    loggers: list = field(default_factory=list)
    """``id()`` of the logger passed to each Builder/Runtime, in order (ids, so the log keeps no logger alive)."""
    logged: list = field(default_factory=list)
    """(severity name, message) of everything TensorRT logged, through whichever logger it kept."""

    def record(self, name: str, *args) -> None:
        self.calls.append((name, args))

    def names(self, prefix: str = "") -> list[str]:
        return [name for name, _ in self.calls if name.startswith(prefix)]

    def args(self, name: str) -> list[tuple]:
        return [args for n, args in self.calls if n == name]

    def require_context(self, what: str) -> None:
        if not self.ctx_stack:
            raise RuntimeError(f"fake CUDA: {what} without a current context (cuCtx* error 201 on a device)")


# --- tensorrt ---------------------------------------------------------------------------------------------------------

class _Severity(enum.IntEnum):
    """tensorrt.ILogger.Severity (the same in 8.5, 10.x, 11.x)."""
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


def _enum(name: str, members: dict):
    return enum.IntEnum(name, members)


def _data_type(major: int):
    """tensorrt.DataType: kFLOAT..kUINT8 in 8.5; + FP8, BF16, INT64, INT4 in 10.x; + FP4, E8M0 in 11.x."""
    members = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5}
    if major >= 10:
        members.update(FP8=6, BF16=7, INT64=8, INT4=9)
    if major >= 11:
        members.update(FP4=10, E8M0=11)
    return _enum("DataType", members)


def _builder_flag(major: int):
    """tensorrt.BuilderFlag with the values of ``enum class BuilderFlag`` in NvInfer.h of each release."""
    if major == 8:
        return _enum("BuilderFlag", {
            "FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "STRICT_TYPES": 4, "REFIT": 5,
            "DISABLE_TIMING_CACHE": 6, "TF32": 7, "SPARSE_WEIGHTS": 8, "SAFETY_SCOPE": 9,
            "OBEY_PRECISION_CONSTRAINTS": 10, "PREFER_PRECISION_CONSTRAINTS": 11, "DIRECT_IO": 12,
            "REJECT_EMPTY_ALGORITHMS": 13, "ENABLE_TACTIC_HEURISTIC": 14})
    if major == 10:
        return _enum("BuilderFlag", {
            "FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
            "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9,
            "PREFER_PRECISION_CONSTRAINTS": 10, "DIRECT_IO": 11, "REJECT_EMPTY_ALGORITHMS": 12,
            "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14, "FP8": 15, "ERROR_ON_TIMING_CACHE_MISS": 16,
            "BF16": 17, "DISABLE_COMPILATION_CACHE": 18, "STRIP_PLAN": 19, "REFIT_IDENTICAL": 20})
    return _enum("BuilderFlag", {  # 11.x: every precision-enabling (weak typing) flag is gone
        "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6, "SPARSE_WEIGHTS": 7,
        "SAFETY_SCOPE": 8, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13,
        "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17, "STRIP_PLAN": 18, "REFIT_IDENTICAL": 19,
        "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22, "STRICT_NANS": 23, "MONITOR_MEMORY": 24,
        "EDITABLE_TIMING_CACHE": 26, "DISTRIBUTIVE_INDEPENDENCE": 27})


def _network_flag(major: int):
    """tensorrt.NetworkDefinitionCreationFlag of each release."""
    if major == 8:
        return _enum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1})
    if major == 10:
        return _enum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    return _enum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1,
                                                   "PREFER_AOT_PYTHON_PLUGINS": 2})


def _host_memory(data: bytes, dtype):
    """An IHostMemory-like object: buffer protocol, ``nbytes``, ``dtype``; no ``len()``, no indexing or slicing."""

    class IHostMemory(ctypes.Structure):
        _fields_ = [("_bytes", ctypes.c_ubyte * len(data))]

        @property
        def nbytes(self):
            return ctypes.sizeof(self)

        @property
        def dtype(self):
            return dtype

    return IHostMemory.from_buffer_copy(data)


_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 9: "BOOL", 2: "UINT8", 7: "INT64", 16: "BF16"}


def _onnx_io(model_bytes: bytes) -> tuple:
    """(input name, shape, onnx elem type), (output name, shape, elem type), "fp16"/"fp32" (the float type the graph's
    initializers compute in) from a serialized ONNX model."""
    import onnx

    model = onnx.load_model_from_string(bytes(model_bytes))
    graph = model.graph
    inits = {t.name for t in graph.initializer}

    def info(value):
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
        return value.name, dims, value.type.tensor_type.elem_type

    inputs = [info(v) for v in graph.input if v.name not in inits]
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    return inputs[0], info(graph.output[0]), "fp16" if half else "fp32"


def _qdq_parse_errors(model_bytes: bytes, legacy: bool) -> tuple[list, bool, bool]:
    """(parser errors as (desc, node index, name, op), whether the graph has Q/DQ nodes, whether one dequantizes an
    int32 constant) for the Q/DQ nodes of a serialized ONNX model, as onnx-tensorrt's QuantDequantLinearHelper."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(bytes(model_bytes)).graph
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = a.t
    errors, has_qdq, int32_dq = [], False, False
    for index, node in enumerate(graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        has_qdq = True
        where = (index, node.name, node.op_type)
        if legacy and len(node.input) != 3:
            errors.append(("This version of TensorRT requires 3 inputs for the DequantizeLinear operator.", *where))
            continue
        scale = consts.get(node.input[1])
        if scale is not None and not (numpy_helper.to_array(scale) > 0).all():
            errors.append(("Scale coefficients must all be positive", *where))
        if len(node.input) > 2 and node.input[2] in consts:
            zero = consts[node.input[2]]
            # 10.x reads a UINT8 zero point as INT8 (with a warning), 8.5 does not look at its type: both then need
            # every value zero
            if numpy_helper.to_array(zero).astype(np.float64).any():
                errors.append(("TensorRT only supports symmetric quantization. The zero point for the "
                               "QuantizeLinear/DequantizeLinear operator must be all zeros.", *where))
        x = consts.get(node.input[0])
        if node.op_type == "DequantizeLinear" and x is not None and x.data_type == onnx.TensorProto.INT32:
            int32_dq = True
    return errors, has_qdq, int32_dq


def make_tensorrt(version: str, rec: Recorder) -> types.ModuleType:
    """A fake ``tensorrt`` module of ``version`` ("8.5...", "10..." or "11...") that records into ``rec``."""
    major = int(version.split(".")[0])
    legacy, typed = major < 10, major >= 11
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    DataType = _data_type(major)
    mod.DataType = DataType
    numpy_types = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
                   "UINT8": np.uint8, "INT64": np.int64}

    def nptype(trt_type):
        """Mirrors tensorrt.nptype: the numpy type, or TypeError (bf16, fp8, int4... have none)."""
        if trt_type.name in numpy_types:
            return numpy_types[trt_type.name]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    mod.nptype = nptype

    class ILogger:
        """Mirrors tensorrt.ILogger: subclass it, call ILogger.__init__, implement log(severity, msg)."""
        Severity = _Severity

        def __init__(self):
            pass

    mod.ILogger = ILogger

    # TensorRT's one logger pointer for the process (see the module docstring).
    kept = {"logger": None, "users": 0}

    def trt_log(severity, message):
        logger = kept["logger"]() if kept["logger"] is not None else None
        if logger is None:
            raise RuntimeError("fake TensorRT: logging through a freed logger. TensorRT keeps the first logger it "
                               "was given while any builder/runtime lives; that logger object was freed (use after "
                               "free: a crash on a device). Pass one logger that lives as long as the process")
        rec.logged.append((severity.name, message))
        logger.log(severity, message)

    def attach(owner, logger, what):
        rec.loggers.append(id(logger))
        if kept["users"] == 0:
            kept["logger"] = weakref.ref(logger)
        kept["users"] += 1
        weakref.finalize(owner, detach)
        if kept["logger"]() is not logger:
            trt_log(_Severity.WARNING, f"The logger passed into {what} differs from one already provided for an "
                                       f"existing builder, runtime, or refitter. TensorRT maintains only a single "
                                       f"logger pointer at any given time, so the existing value, which can be "
                                       f"retrieved with getLogger(), will be used instead.")

    def detach():
        kept["users"] -= 1
        if kept["users"] == 0:
            kept["logger"] = None

    NetworkDefinitionCreationFlag = _network_flag(major)
    mod.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    pools = {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3}
    if not legacy:
        pools.update(TACTIC_DRAM=4, TACTIC_SHARED_MEMORY=5)
    MemoryPoolType = _enum("MemoryPoolType", pools)
    BuilderFlag = _builder_flag(major)
    DeviceType = _enum("DeviceType", {"GPU": 0, "DLA": 1})
    mod.MemoryPoolType, mod.BuilderFlag, mod.DeviceType = MemoryPoolType, BuilderFlag, DeviceType
    if not legacy:
        mod.TensorIOMode = _enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt_dtype = {onnx_type: getattr(DataType, name) for onnx_type, name in _ONNX_TO_TRT.items()
                 if name in DataType.__members__}

    class ITensor:
        """Mirrors tensorrt.ITensor's name / shape / dtype."""

        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class INetworkDefinition:
        """Mirrors tensorrt.INetworkDefinition's num_inputs / num_outputs / get_input / get_output."""

        def __init__(self, flags, builder):
            self.flags, self._inputs, self._outputs, self._model, self._typed_precision = flags, [], [], None, None
            self._has_qdq = self._int32_dq = False
            self._builder = builder  # py::keep_alive<0, 1> on create_network

        @property
        def num_inputs(self):
            return len(self._inputs)

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_input(self, index):
            return self._inputs[index]

        def get_output(self, index):
            return self._outputs[index]

    class _ParserError:
        """Mirrors nvonnxparser::IParserError as bound in Python: code(), desc(), node(), file(), line(), func()."""

        def __init__(self, desc, node, node_name, op):
            self._desc, self._node, self._node_name, self._op = desc, node, node_name, op

        def code(self):
            return "ErrorCode.UNSUPPORTED_NODE"

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def file(self):
            return "ModelImporter.cpp"

        def line(self):
            return 1

        def func(self):
            return "importModel"

    if legacy:
        ParserError = _ParserError
    else:
        class ParserError(_ParserError):
            """10.x adds node_name() and node_operator() (IParserError, TensorRT 9.1+)."""

            def node_name(self):
                return self._node_name

            def node_operator(self):
                return self._op

    class OnnxParser:
        """Mirrors tensorrt.OnnxParser(network, logger): parse(model, path=None) -> bool, num_errors, get_error(i)."""

        def __init__(self, network, logger):
            rec.record("trt.OnnxParser")
            self._network, self._errors = network, []

        def parse(self, model, path=None):
            rec.record("trt.OnnxParser.parse", path)
            data = bytes(memoryview(model))
            errors = list(rec.parse_errors)
            if legacy and not self._network.flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
                errors.append((("This version of the ONNX parser only supports TensorRT INetworkDefinitions with an "
                                "explicit batch dimension. Please ensure the network was created using the "
                                "EXPLICIT_BATCH NetworkDefinitionCreationFlag."), 0, "", ""))
            qdq = False, False
            if not errors:
                try:
                    (name, shape, in_type), (out_name, out_shape, out_type), precision = _onnx_io(data)
                    qdq_errors, *qdq = _qdq_parse_errors(data, legacy)
                    errors += qdq_errors
                except Exception as exc:  # noqa: BLE001 - the real parser reports any unreadable model this way
                    errors.append((f"Failed to parse ONNX model: {exc}", 0, "", ""))
            if errors:
                self._errors = [ParserError(*e) for e in errors]
                return False
            if rec.network_input is not None:
                name, shape = rec.network_input
                n, c, h, w = shape
                out_shape = (n, c, h * rec.scale if h > 0 else -1, w * rec.scale if w > 0 else -1)
            net = self._network
            net._inputs = [ITensor(name, shape, trt_dtype[in_type])]
            net._outputs = [ITensor(out_name, out_shape, trt_dtype[out_type])]
            net._model, net._typed_precision = data, precision
            net._has_qdq, net._int32_dq = qdq
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

    class IOptimizationProfile:
        """Mirrors tensorrt.IOptimizationProfile.set_shape(input, min, opt, max)."""

        def set_shape(self, name, min, opt, max):
            rec.record("trt.IOptimizationProfile.set_shape", name, tuple(min), tuple(opt), tuple(max))

    class ITimingCache:
        """Mirrors tensorrt.ITimingCache.serialize() -> IHostMemory. The fake counts the builds it has seen."""

        def __init__(self, blob):
            text = blob.decode() if blob else ""
            self.entries = int(text.split(":")[1]) if text.startswith("FAKECACHE:") else 0
            self.loaded = bool(blob)

        def serialize(self):
            rec.record("trt.ITimingCache.serialize")
            return _host_memory(f"FAKECACHE:{self.entries}".encode(), DataType.UINT8)

    class IBuilderConfig:
        """Mirrors tensorrt.IBuilderConfig: set_memory_pool_limit, set_flag, default_device_type, DLA_core,
        add_optimization_profile, create_timing_cache, set_timing_cache, get_timing_cache."""

        def __init__(self, builder):
            self.flags, self._device_type, self._dla_core, self._cache = set(), DeviceType.GPU, -1, None
            self.profiles, self.pools = [], {}
            self._builder = builder  # py::keep_alive<0, 1> on create_builder_config

        def set_memory_pool_limit(self, pool, pool_size):
            rec.record("trt.IBuilderConfig.set_memory_pool_limit", pool.name, pool_size)
            self.pools[pool] = pool_size

        def set_flag(self, flag):
            rec.record("trt.IBuilderConfig.set_flag", flag.name)
            self.flags.add(flag)

        @property
        def default_device_type(self):
            return self._device_type

        @default_device_type.setter
        def default_device_type(self, value):
            rec.record("trt.IBuilderConfig.default_device_type=", value.name)
            self._device_type = value

        @property
        def DLA_core(self):
            return self._dla_core

        @DLA_core.setter
        def DLA_core(self, value):
            rec.record("trt.IBuilderConfig.DLA_core=", value)
            self._dla_core = value

        def add_optimization_profile(self, profile):
            rec.record("trt.IBuilderConfig.add_optimization_profile")
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            blob = bytes(memoryview(serialized_timing_cache))
            rec.record("trt.IBuilderConfig.create_timing_cache", blob)
            if blob and rec.timing_cache_unreadable:
                trt_log(_Severity.ERROR, "fake builder: the timing cache was serialized by another TensorRT version")
                return None  # createTimingCache returns nullptr; the binding turns it into None
            return ITimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.record("trt.IBuilderConfig.set_timing_cache", ignore_mismatch)
            if not isinstance(cache, ITimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments. The following argument types "
                                "are supported: (self: tensorrt.IBuilderConfig, cache: tensorrt.ITimingCache, "
                                f"ignore_mismatch: bool) -> bool; invoked with: {cache!r}, {ignore_mismatch!r}")
            if rec.timing_cache_mismatch and cache.loaded and not ignore_mismatch:
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            rec.record("trt.IBuilderConfig.get_timing_cache")
            return self._cache

    class Builder:
        """Mirrors tensorrt.Builder(logger)."""

        def __init__(self, logger):
            rec.record("trt.Builder")
            self._logger = logger  # py::keep_alive<1, 2>: the builder keeps its own logger alive, nothing more
            attach(self, logger, "createInferBuilder")

        if not typed:
            @property
            def platform_has_fast_fp16(self):
                rec.record("trt.Builder.platform_has_fast_fp16")
                return rec.fast_fp16

        @property
        def num_DLA_cores(self):
            rec.record("trt.Builder.num_DLA_cores")
            return rec.dla_cores

        def create_network(self, flags=0):
            rec.record("trt.Builder.create_network", flags)
            return INetworkDefinition(flags, self)

        def create_builder_config(self):
            rec.record("trt.Builder.create_builder_config")
            return IBuilderConfig(self)

        def create_optimization_profile(self):
            rec.record("trt.Builder.create_optimization_profile")
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            """Returns IHostMemory, or None on failure (the reason goes to the logger), as documented."""
            rec.record("trt.Builder.build_serialized_network")
            trt_log(_Severity.WARNING, "fake builder: tactic timing is simulated")
            if rec.build_fails:
                trt_log(_Severity.ERROR, "fake builder: out of workspace memory")
                return None
            flag_names = {f.name for f in config.flags}
            if network._has_qdq and not typed and "INT8" not in flag_names:
                trt_log(_Severity.ERROR, "Error Code 4: Internal Error (Int8 precision has been set for a layer or "
                                         "layer output, but int8 is not configured in the builder)")
                return None
            if network._int32_dq:
                trt_log(_Severity.ERROR, "Error Code 4: Internal Error (DequantizeLinear: only activation types "
                                         "allowed as input to this layer)")
                return None
            if config._cache is not None:
                config._cache.entries += 1
            inp, out = network.get_input(0), network.get_output(0)
            in_shape = tuple(config.profiles and rec.args("trt.IOptimizationProfile.set_shape")[-1][2] or inp.shape)
            out_shape = (in_shape[0], in_shape[1], in_shape[2] * rec.scale, in_shape[3] * rec.scale)
            flags = sorted(f.name for f in config.flags)
            # Weakly typed (8.5, 10.x): FP16 lets TensorRT pick fp16 kernels. Strongly typed (11.x): the ONNX types.
            precision = network._typed_precision if typed else ("fp16" if "FP16" in flags else "fp32")
            if network._has_qdq:  # explicit quantization: the Q/DQ layers run int8, the rest as above
                precision = f"int8+{precision}"
            meta = {"version": version, "input": [inp.name, in_shape, inp.dtype.name],
                    "output": [out.name, out_shape, out.dtype.name], "flags": flags, "precision": precision,
                    "device_type": config.default_device_type.name, "dla_core": config.DLA_core}
            return _host_memory(_PLAN_MAGIC + json.dumps(meta).encode() + b"\n" + network._model, DataType.UINT8)

    class _Engine:
        def __init__(self, meta, model, runtime):
            self._io = [(meta["input"][0], True, tuple(meta["input"][1]), getattr(DataType, meta["input"][2])),
                        (meta["output"][0], False, tuple(meta["output"][1]), getattr(DataType, meta["output"][2]))]
            self.meta, self._model, self._session = meta, model, None
            self._runtime = runtime  # py::keep_alive<0, 1>: an engine keeps its runtime alive

        def create_execution_context(self):
            """Mirrors ICudaEngine.create_execution_context()."""
            rec.record("trt.ICudaEngine.create_execution_context")
            rec.require_context("createExecutionContext")
            return ExecutionContext(self)

        def run(self, x):
            """The network's output for ``x``: the stored ONNX graph through ONNX Runtime (CPU)."""
            if self._session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                self._session = ort.InferenceSession(self._model, options, providers=["CPUExecutionProvider"])
            return self._session.run(None, {self._session.get_inputs()[0].name: x})[0]

    def _run(engine, in_addr, out_addr):
        rec.require_context("kernel launch")
        trt_log(_Severity.VERBOSE, "fake engine: enqueue")
        (_, _, in_shape, in_type), (_, _, out_shape, out_type) = engine._io
        x = np.frombuffer(bytes(rec.memory[in_addr]), dtype=nptype(in_type)).reshape(in_shape)
        y = engine.run(x).astype(nptype(out_type))
        if rec.output_fault is not None:
            y = np.asarray(rec.output_fault(x, y), dtype=y.dtype)
        assert y.shape == out_shape, (y.shape, out_shape)
        rec.memory[out_addr][:] = y.tobytes()
        return rec.execute_ok

    if legacy:
        class ICudaEngine(_Engine):
            """Mirrors 8.5's bindings API: num_bindings, get_binding_name/-_is_input/-_shape/-_dtype."""

            @property
            def num_bindings(self):
                rec.record("trt.ICudaEngine.num_bindings")
                return len(self._io)

            def get_binding_name(self, index):
                return self._io[index][0]

            def binding_is_input(self, index):
                return self._io[index][1]

            def get_binding_shape(self, index):
                return self._io[index][2]

            def get_binding_dtype(self, index):
                return self._io[index][3]

        class ExecutionContext:
            """Mirrors 8.5's IExecutionContext.execute_async_v2(bindings, stream_handle, input_consumed=None)."""

            def __init__(self, engine):
                self._engine = engine

            def execute_async_v2(self, bindings, stream_handle, input_consumed=None):
                rec.record("trt.IExecutionContext.execute_async_v2", tuple(bindings), stream_handle)
                return _run(self._engine, bindings[0], bindings[1])
    else:
        class ICudaEngine(_Engine):
            """Mirrors the 10.x/11.x named-tensor API: num_io_tensors, get_tensor_name/-_mode/-_shape/-_dtype."""

            @property
            def num_io_tensors(self):
                rec.record("trt.ICudaEngine.num_io_tensors")
                return len(self._io)

            def get_tensor_name(self, index):
                return self._io[index][0]

            def _find(self, name):
                return next(e for e in self._io if e[0] == name)

            def get_tensor_mode(self, name):
                return mod.TensorIOMode.INPUT if self._find(name)[1] else mod.TensorIOMode.OUTPUT

            def get_tensor_shape(self, name):
                return self._find(name)[2]

            def get_tensor_dtype(self, name):
                return self._find(name)[3]

        class ExecutionContext:
            """Mirrors IExecutionContext: set_tensor_address(name, ptr), execute_async_v3(stream_handle)."""

            def __init__(self, engine):
                self._engine, self._addresses = engine, {}

            def set_tensor_address(self, name, memory):
                rec.record("trt.IExecutionContext.set_tensor_address", name, memory)
                self._addresses[name] = memory

            def execute_async_v3(self, stream_handle):
                rec.record("trt.IExecutionContext.execute_async_v3", stream_handle)
                (in_name, *_), (out_name, *_) = self._engine._io
                return _run(self._engine, self._addresses[in_name], self._addresses[out_name])

    class Runtime:
        """Mirrors tensorrt.Runtime(logger): DLA_core, deserialize_cuda_engine(buffer) -> ICudaEngine or None."""

        def __init__(self, logger):
            rec.record("trt.Runtime")
            self._logger, self._dla_core = logger, -1  # keep_alive<1, 2>, as the Builder
            attach(self, logger, "createInferRuntime")

        @property
        def DLA_core(self):
            return self._dla_core

        @DLA_core.setter
        def DLA_core(self, value):
            rec.record("trt.Runtime.DLA_core=", value)
            self._dla_core = value

        def deserialize_cuda_engine(self, serialized_engine):
            rec.record("trt.Runtime.deserialize_cuda_engine")
            rec.require_context("deserializeCudaEngine")
            data = bytes(memoryview(serialized_engine))
            if not data.startswith(_PLAN_MAGIC):
                trt_log(_Severity.ERROR, "fake runtime: not a serialized engine")
                return None
            header, model = data[len(_PLAN_MAGIC):].split(b"\n", 1)
            meta = json.loads(header)
            if meta["version"] != version:  # real TensorRT refuses plans of another version the same way
                trt_log(_Severity.ERROR, f"fake runtime: plan built by {meta['version']}")
                return None
            trt_log(_Severity.INFO, f"fake runtime: loaded engine of size {len(data)} bytes")
            return ICudaEngine(meta, model, self)

    for cls in (Builder, OnnxParser, Runtime, IBuilderConfig, INetworkDefinition, ITimingCache, IOptimizationProfile,
                ICudaEngine, ExecutionContext):
        setattr(mod, cls.__name__, cls)
    mod.IExecutionContext = ExecutionContext
    return mod


# --- pycuda.driver ----------------------------------------------------------------------------------------------------

def make_pycuda_driver(rec: Recorder) -> types.ModuleType:
    """A fake ``pycuda.driver`` module recording into ``rec`` (init, Device, Context, buffers, Stream, copies)."""
    mod = types.ModuleType("pycuda.driver")

    def init(flags=0):
        """Mirrors pycuda.driver.init()."""
        rec.record("cuda.init")

    class Context:
        """Mirrors pycuda.driver.Context: push(), pop() (static in PyCUDA; pops the current one), detach()."""

        def __init__(self):
            self.alive = True

        def push(self):
            rec.record("cuda.Context.push")
            assert self.alive, "push of a detached context"
            rec.ctx_stack.append(self)

        def pop(self):
            rec.record("cuda.Context.pop")
            assert rec.ctx_stack and rec.ctx_stack[-1] is self, "pop of a context that is not current"
            rec.ctx_stack.pop()

        def detach(self):
            """Like PyCUDA's context::detach: a current context is released and popped."""
            rec.record("cuda.Context.detach")
            assert rec.ctx_stack and rec.ctx_stack[-1] is self, "fake expects detach while current (push first)"
            rec.ctx_stack.pop()
            self.alive = False

    class Device:
        """Mirrors pycuda.driver.Device(ordinal): count() (static), name(), make_context() (pushes it)."""

        def __init__(self, ordinal):
            if not 0 <= ordinal < rec.device_count:
                raise RuntimeError(f"fake cuDeviceGet: invalid device ordinal {ordinal}")
            self.ordinal = ordinal

        @staticmethod
        def count():
            return rec.device_count

        def name(self):
            return rec.device_name

        def make_context(self, flags=0):
            rec.record("cuda.Device.make_context", self.ordinal)
            ctx = Context()
            rec.ctx_stack.append(ctx)
            return ctx

    class DeviceAllocation:
        """Mirrors pycuda.driver.DeviceAllocation: int() is the device pointer; free()."""

        def __init__(self, address, size):
            self.address, self.size = address, size

        def __int__(self):
            return self.address

        def __index__(self):
            return self.address

        def free(self):
            rec.record("cuda.DeviceAllocation.free", self.address)
            rec.require_context("cuMemFree")
            del rec.memory[self.address]

    def mem_alloc(nbytes):
        """Mirrors pycuda.driver.mem_alloc(bytes) -> DeviceAllocation."""
        rec.record("cuda.mem_alloc", nbytes)
        rec.require_context("cuMemAlloc")
        address = rec.next_address
        rec.next_address += (nbytes + 255) // 256 * 256 + 256
        rec.memory[address] = bytearray(nbytes)
        return DeviceAllocation(address, nbytes)

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        """Mirrors pycuda.driver.pagelocked_empty: an ndarray whose ``base`` is a HostAllocation with free()."""
        rec.record("cuda.pagelocked_empty", tuple(shape))
        rec.require_context("cuMemHostAlloc")
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize

        class HostAllocation(ctypes.c_byte * max(nbytes, 1)):
            def free(self):
                rec.record("cuda.HostAllocation.free")

        return np.ndarray(tuple(shape), dtype=dtype, buffer=HostAllocation(), order=order)

    class Stream:
        """Mirrors pycuda.driver.Stream: handle, synchronize()."""
        _next = 0x5000

        def __init__(self, flags=0):
            rec.record("cuda.Stream")
            rec.require_context("cuStreamCreate")
            Stream._next += 1
            self.handle = Stream._next

        def synchronize(self):
            rec.record("cuda.Stream.synchronize")

    def memcpy_htod_async(dest, src, stream=None):
        """Mirrors pycuda.driver.memcpy_htod_async(dest, src, stream)."""
        rec.record("cuda.memcpy_htod_async", int(dest))
        rec.require_context("cuMemcpyHtoDAsync")
        rec.memory[int(dest)][:] = np.ascontiguousarray(src).tobytes()

    def memcpy_dtoh_async(dest, src, stream=None):
        """Mirrors pycuda.driver.memcpy_dtoh_async(dest, src, stream)."""
        rec.record("cuda.memcpy_dtoh_async", int(src))
        rec.require_context("cuMemcpyDtoHAsync")
        dest[...] = np.frombuffer(bytes(rec.memory[int(src)]), dtype=dest.dtype).reshape(dest.shape)

    for obj in (init, Context, Device, DeviceAllocation, mem_alloc, pagelocked_empty, Stream, memcpy_htod_async,
                memcpy_dtoh_async):
        setattr(mod, obj.__name__, obj)
    return mod


def make_standins(version: str, rec: Recorder | None = None):
    """``(fake tensorrt, fake pycuda.driver, recorder)`` sharing one recorder."""
    rec = rec or Recorder()
    return make_tensorrt(version, rec), make_pycuda_driver(rec), rec


def write_static_sr_onnx(path, shape=(1, 3, 16, 16), scale: int = 4, output_type=None):
    """A small valid static x``scale`` ONNX graph that upscales by nearest neighbour: a 1x1 Conv copying each channel
    to its ``scale**2`` sub-pixel channels, then DepthToSpace (CRD). ``output_type`` (an ONNX TensorProto type) adds a
    Cast of the output, to make engines whose output is not float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n, c, h, w = shape
    weight = np.zeros((c * scale * scale, c, 1, 1), np.float32)
    for channel in range(c):
        weight[channel * scale * scale:(channel + 1) * scale * scale, channel] = 1.0
    nodes = [helper.make_node("Conv", ["lr", "w"], ["feat"], name="head/conv"),
             helper.make_node("DepthToSpace", ["feat"], ["up"], name="head/shuffle", blocksize=scale, mode="CRD")]
    out_type = TensorProto.FLOAT
    if output_type is not None:
        nodes.append(helper.make_node("Cast", ["up"], ["sr"], name="out/cast", to=output_type))
        out_type = output_type
    else:
        nodes[-1].output[0] = "sr"
    graph = helper.make_graph(
        nodes, "static_sr", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("sr", out_type, [n, c, h * scale, w * scale])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
