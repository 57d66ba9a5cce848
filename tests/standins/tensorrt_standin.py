"""Recording stand-ins for ``tensorrt`` (an 8.5-like and a 10.x-like API) and ``pycuda.driver``.

Each fake exposes a subset of the members of the documented API of its version and nothing else, so a call that
the real version lacks fails here as it would on the device (``AttributeError``): the 10.x fake has no bindings API
(``num_bindings``, ``execute_async_v2``, removed in 10.0) and no ``EXPLICIT_BATCH`` requirement; the 8.5 fake has the
bindings API and leaves out the named-tensor API that 8.5 introduced (``execute_async_v3``, ``set_tensor_address``), so
a test proves the 8.x path never needs it. Sources: TensorRT Python API pages (Builder, IBuilderConfig, OnnxParser,
Runtime, ICudaEngine, IExecutionContext) for 8.5.3 and 10.x at docs.nvidia.com/deeplearning/tensorrt, the C++ pages
they wrap ("nvinfer1::ICudaEngine" 8.5.3, "nvonnxparser::IParserError" 8.4.3 / 10.x), NVIDIA/TensorRT
``python/src/infer/pyCore.cpp``; PyCUDA's "Device interface" documentation and ``src/cpp/cuda.hpp``.

Every call is appended to ``Recorder.calls`` as ``(name, args)``: methods, constructors, property writes and the
capability reads the builder decides on (``platform_has_fast_fp16``, ``num_DLA_cores``, ``num_bindings``,
``num_io_tensors``). Plain reads of tensor names/shapes are not recorded. Knobs on the recorder make the fakes fail
the way the real ones do (parser errors, ``None`` from the build, no fast fp16, a mismatched timing cache).

The fake engine "runs" by nearest-neighbour upscaling its input (``repeat`` by ``scale`` along H and W) between the
fake device buffers, so ``infer`` output can be checked exactly. Device memory lives in ``Recorder.memory``; every
CUDA call that needs a current context checks ``Recorder.ctx_stack``, like the driver does.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from dataclasses import dataclass, field

import numpy as np

TRT85_VERSION = "8.5.2.2"  # JetPack 5.1.x
TRT10_VERSION = "10.3.0.30"  # JetPack 6.1 / 6.2
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
    execute_ok: bool = True
    network_input: tuple = ("lr", (1, 3, 16, 16))
    """What the fake parser finds in any ONNX file: input name and shape (-1 for a dynamic dim)."""
    network_output: str = "sr"
    scale: int = 4
    device_name: str = "Orin (nvgpu)"
    device_count: int = 1
    memory: dict = field(default_factory=dict)
    ctx_stack: list = field(default_factory=list)
    next_address: int = 0x10000

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
    """Mirrors tensorrt.ILogger.Severity (8.5 and 10.x)."""
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class _DataType(enum.IntEnum):
    """Mirrors tensorrt.DataType (the members both versions share)."""
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4


_NP = {_DataType.FLOAT: np.float32, _DataType.HALF: np.float16, _DataType.INT8: np.int8, _DataType.INT32: np.int32,
       _DataType.BOOL: np.bool_}


def _nptype(dtype):
    """Mirrors tensorrt.nptype(DataType) -> numpy type."""
    return _NP[dtype]


class _HostMemory(bytes):
    """Mirrors tensorrt.IHostMemory: a buffer (build_serialized_network, ITimingCache.serialize)."""


def make_tensorrt(version: str, rec: Recorder) -> types.ModuleType:
    """A fake ``tensorrt`` module of ``version`` ("8.5..." or "10...") that records into ``rec``."""
    legacy = version.startswith("8.")
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.nptype = _nptype
    mod.DataType = _DataType

    class ILogger:
        """Mirrors tensorrt.ILogger: subclass it, call ILogger.__init__, implement log(severity, msg)."""
        Severity = _Severity

        def __init__(self):
            pass

    mod.ILogger = ILogger

    if legacy:
        class NetworkDefinitionCreationFlag(enum.IntEnum):
            """Mirrors 8.5's flags: EXPLICIT_BATCH is required for ONNX."""
            EXPLICIT_BATCH = 0
            EXPLICIT_PRECISION = 1
    else:
        class NetworkDefinitionCreationFlag(enum.IntEnum):
            """Mirrors 10.x's flags: EXPLICIT_BATCH deprecated and ignored, STRONGLY_TYPED new."""
            EXPLICIT_BATCH = 0
            STRONGLY_TYPED = 1
    mod.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag

    class MemoryPoolType(enum.IntEnum):
        """Mirrors tensorrt.MemoryPoolType (8.4+)."""
        WORKSPACE = 0
        DLA_MANAGED_SRAM = 1
        DLA_LOCAL_DRAM = 2
        DLA_GLOBAL_DRAM = 3

    class BuilderFlag(enum.IntEnum):
        """Mirrors tensorrt.BuilderFlag (the members both versions share)."""
        FP16 = 0
        INT8 = 1
        DEBUG = 2
        GPU_FALLBACK = 3
        REFIT = 5

    class DeviceType(enum.IntEnum):
        """Mirrors tensorrt.DeviceType."""
        GPU = 0
        DLA = 1

    mod.MemoryPoolType, mod.BuilderFlag, mod.DeviceType = MemoryPoolType, BuilderFlag, DeviceType
    if not legacy:
        class TensorIOMode(enum.IntEnum):
            """Mirrors tensorrt.TensorIOMode (the 8.5 fake leaves the named-tensor API out)."""
            NONE = 0
            INPUT = 1
            OUTPUT = 2
        mod.TensorIOMode = TensorIOMode

    class ITensor:
        """Mirrors tensorrt.ITensor's name / shape / dtype."""

        def __init__(self, name, shape):
            self.name, self.shape, self.dtype = name, tuple(shape), _DataType.FLOAT

    class INetworkDefinition:
        """Mirrors tensorrt.INetworkDefinition's num_inputs / num_outputs / get_input / get_output."""

        def __init__(self, flags):
            self.flags, self._inputs, self._outputs = flags, [], []

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
            assert isinstance(model, bytes | bytearray | memoryview), "parse takes the serialized model"
            if rec.parse_errors:
                self._errors = [ParserError(*e) for e in rec.parse_errors]
                return False
            name, shape = rec.network_input
            n, c, h, w = shape
            out = (n, c, h * rec.scale if h > 0 else -1, w * rec.scale if w > 0 else -1)
            self._network._inputs = [ITensor(name, shape)]
            self._network._outputs = [ITensor(rec.network_output, out)]
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
            text = bytes(blob).decode() if blob else ""
            self.entries = int(text.split(":")[1]) if text.startswith("FAKECACHE:") else 0
            self.loaded = bool(blob)

        def serialize(self):
            rec.record("trt.ITimingCache.serialize")
            return _HostMemory(f"FAKECACHE:{self.entries}".encode())

    class IBuilderConfig:
        """Mirrors tensorrt.IBuilderConfig: set_memory_pool_limit, set_flag, default_device_type, DLA_core,
        add_optimization_profile, create_timing_cache, set_timing_cache, get_timing_cache."""

        def __init__(self):
            self.flags, self._device_type, self._dla_core, self._cache = set(), DeviceType.GPU, -1, None
            self.profiles, self.pools = [], {}

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
            rec.record("trt.IBuilderConfig.create_timing_cache", bytes(serialized_timing_cache))
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.record("trt.IBuilderConfig.set_timing_cache", ignore_mismatch)
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
            self._logger = logger

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
            return INetworkDefinition(flags)

        def create_builder_config(self):
            rec.record("trt.Builder.create_builder_config")
            return IBuilderConfig()

        def create_optimization_profile(self):
            rec.record("trt.Builder.create_optimization_profile")
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            """Returns IHostMemory, or None on failure (the reason goes to the logger), as documented."""
            rec.record("trt.Builder.build_serialized_network")
            self._logger.log(_Severity.WARNING, "fake builder: tactic timing is simulated")
            if rec.build_fails:
                self._logger.log(_Severity.ERROR, "fake builder: out of workspace memory")
                return None
            if config._cache is not None:
                config._cache.entries += 1
            inp, out = network.get_input(0), network.get_output(0)
            in_shape = tuple(config.profiles and rec.args("trt.IOptimizationProfile.set_shape")[-1][2] or inp.shape)
            out_shape = (in_shape[0], in_shape[1], in_shape[2] * rec.scale, in_shape[3] * rec.scale)
            meta = {"version": version, "input": [inp.name, in_shape], "output": [out.name, out_shape],
                    "scale": rec.scale, "flags": sorted(f.name for f in config.flags),
                    "device_type": config.default_device_type.name, "dla_core": config.DLA_core}
            return _HostMemory(_PLAN_MAGIC + json.dumps(meta).encode())

    class _Engine:
        def __init__(self, meta):
            self._io = [(meta["input"][0], True, tuple(meta["input"][1])),
                        (meta["output"][0], False, tuple(meta["output"][1]))]
            self.scale = meta["scale"]

        def create_execution_context(self):
            """Mirrors ICudaEngine.create_execution_context()."""
            rec.record("trt.ICudaEngine.create_execution_context")
            return ExecutionContext(self)

    def _run(engine, in_addr, out_addr):
        rec.require_context("kernel launch")
        (_, _, in_shape), (_, _, out_shape) = engine._io
        x = np.frombuffer(bytes(rec.memory[in_addr]), dtype=np.float32).reshape(in_shape)
        y = x.repeat(engine.scale, axis=2).repeat(engine.scale, axis=3)
        assert y.shape == out_shape
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
                return _DataType.FLOAT

        class ExecutionContext:
            """Mirrors 8.5's IExecutionContext.execute_async_v2(bindings, stream_handle, input_consumed=None)."""

            def __init__(self, engine):
                self._engine = engine

            def execute_async_v2(self, bindings, stream_handle, input_consumed=None):
                rec.record("trt.IExecutionContext.execute_async_v2", tuple(bindings), stream_handle)
                return _run(self._engine, bindings[0], bindings[1])
    else:
        class ICudaEngine(_Engine):
            """Mirrors 10.x's named-tensor API: num_io_tensors, get_tensor_name/-_mode/-_shape/-_dtype."""

            @property
            def num_io_tensors(self):
                rec.record("trt.ICudaEngine.num_io_tensors")
                return len(self._io)

            def get_tensor_name(self, index):
                return self._io[index][0]

            def _find(self, name):
                return next(e for e in self._io if e[0] == name)

            def get_tensor_mode(self, name):
                return TensorIOMode.INPUT if self._find(name)[1] else TensorIOMode.OUTPUT

            def get_tensor_shape(self, name):
                return self._find(name)[2]

            def get_tensor_dtype(self, name):
                return _DataType.FLOAT

        class ExecutionContext:
            """Mirrors 10.x's IExecutionContext: set_tensor_address(name, ptr), execute_async_v3(stream_handle)."""

            def __init__(self, engine):
                self._engine, self._addresses = engine, {}

            def set_tensor_address(self, name, memory):
                rec.record("trt.IExecutionContext.set_tensor_address", name, memory)
                self._addresses[name] = memory

            def execute_async_v3(self, stream_handle):
                rec.record("trt.IExecutionContext.execute_async_v3", stream_handle)
                (in_name, _, _), (out_name, _, _) = self._engine._io
                return _run(self._engine, self._addresses[in_name], self._addresses[out_name])

    class Runtime:
        """Mirrors tensorrt.Runtime(logger): DLA_core, deserialize_cuda_engine(buffer) -> ICudaEngine or None."""

        def __init__(self, logger):
            rec.record("trt.Runtime")
            self._logger, self._dla_core = logger, -1

        @property
        def DLA_core(self):
            return self._dla_core

        @DLA_core.setter
        def DLA_core(self, value):
            rec.record("trt.Runtime.DLA_core=", value)
            self._dla_core = value

        def deserialize_cuda_engine(self, serialized_engine):
            rec.record("trt.Runtime.deserialize_cuda_engine")
            data = bytes(serialized_engine)
            if not data.startswith(_PLAN_MAGIC):
                self._logger.log(_Severity.ERROR, "fake runtime: not a serialized engine")
                return None
            meta = json.loads(data[len(_PLAN_MAGIC):])
            if meta["version"] != version:  # real TensorRT refuses plans of another version the same way
                self._logger.log(_Severity.ERROR, f"fake runtime: plan built by {meta['version']}")
                return None
            return ICudaEngine(meta)

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


def write_static_sr_onnx(path, shape=(1, 3, 16, 16), scale: int = 4):
    """A small valid static x``scale`` ONNX graph (1x1 Conv to 3*scale^2 channels + DepthToSpace) for build tests;
    the fake parser ignores its content, the real op check (``check_graph``) reads it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n, c, h, w = shape
    weight = numpy_helper.from_array(np.zeros((c * scale * scale, c, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["lr", "w"], ["feat"], name="head/conv"),
         helper.make_node("DepthToSpace", ["feat"], ["sr"], name="head/shuffle", blocksize=scale, mode="CRD")],
        "static_sr", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [n, c, h * scale, w * scale])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
