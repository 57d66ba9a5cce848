"""Build a TensorRT engine (plan) from a static ONNX graph, with TensorRT 8.5 (JetPack 5), 10.x (JetPack 6, desktop)
or 11.x (desktop).

``tensorrt`` is imported lazily (pass ``trt=`` to use another module, as the tests do with a recording stand-in). The
API generation is chosen from ``trt.__version__`` (8.x, 10.x, 11.x), never from the profile; the profile's target must
name the same family (``"10"`` covers 10.x and 11.x) or the build is refused. The calls follow the documented Python
API of each version:

- ``Builder.create_network(1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH))`` on 8.5 (implicit batch is the
  default there); ``create_network(0)`` on 10.x, where the flag is deprecated and ignored (TensorRT 10 migration
  guide, docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/);
- ``OnnxParser(network, logger).parse(bytes, path)`` and on failure ``num_errors`` / ``get_error(i)`` with
  ``desc()``, ``code()``, ``node()`` and, from 9.1, ``node_name()`` / ``node_operator()``
  (https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-843/api/c_api/classnvonnxparser_1_1_i_parser_error-members.html
  and the same page of 10.x; onnx-tensorrt ``docs/Changelog.md``, 9.1 GA);
- ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`` (8.4+; ``max_workspace_size`` is gone in
  10), ``set_flag(BuilderFlag.FP16 / GPU_FALLBACK)``, ``default_device_type = DeviceType.DLA``, ``DLA_core``;
- ``create_optimization_profile()`` + ``set_shape(name, min, opt, max)`` + ``add_optimization_profile`` only when the
  network has dynamic dims, as trtexec does (``samples/common/sampleEngines.cpp``: "Static model does not take
  explicit shapes");
- ``create_timing_cache(bytes)`` / ``set_timing_cache(cache, ignore_mismatch)`` / ``get_timing_cache().serialize()``
  (Python bindings ``python/src/infer/pyCore.cpp`` in NVIDIA/TensorRT);
  ``create_timing_cache`` returns ``None`` for a blob it cannot read (a cache file of another TensorRT version), as
  trtexec checks (``samples/utils/timingCache.cpp``, "TimingCache creation failed"): then the build warns and starts
  a fresh cache;
- ``build_serialized_network(network, config)``, which returns an ``IHostMemory`` (a buffer: ``nbytes``, no
  ``len()``) or ``None`` on failure; ``platform_has_fast_fp16`` and ``num_DLA_cores``
  (https://docs.nvidia.com/deeplearning/tensorrt/api/c_api/classnvinfer1_1_1_i_builder.html;
  ``platformHasFastFp16`` is marked deprecated from 10.5 but still answers);
- TensorRT 11 removed weak typing: no ``BuilderFlag.FP16``, no ``platform_has_fast_fp16``, no ``EXPLICIT_BATCH``
  (``include/NvInfer.h`` and ``python/src/infer/pyCore.cpp`` @ release/11.0; "Migrating from TensorRT 10.x to
  11.x"). Every network is strongly typed and computes in the ONNX graph's types, so an fp16 engine is built from the
  verified fp32 graph converted to fp16 with float32 I/O (:func:`.fp16_onnx.convert_to_fp16`), and an fp32 engine
  from the graph as it is.

Every builder and runtime gets the process's one TensorRT logger (:func:`.trt_compat.trt_logger`).

The trtexec flags of :func:`trtexec_command` are from trtexec's ``--help`` text in NVIDIA/TensorRT
``samples/common/sampleOptions.cpp``: 8.5 reads ``--memPoolSize=workspace:<size in MiB>`` (a bare number), 10.x
accepts unit suffixes (``1024M``); ``--useDLACore``, ``--allowGPUFallback``, ``--timingCacheFile``, ``--fp16``.
TensorRT 11's trtexec has no ``--fp16`` (``samples/common/sampleOptions.cpp`` @ release/11.0): with 11, build the fp16
plans with ``mambaesr-export --plans-only`` instead.

INT8 is explicit quantization only: the engine is built from the tier's int8 QDQ graph (``QuantizeLinear`` /
``DequantizeLinear`` with int8 zero points of 0 and constant positive scales: :mod:`.int8_onnx`'s ``tensorrt``
scheme), whose scales TensorRT takes as they are; no calibrator is ever attached (implicit INT8 calibration is
deprecated from TensorRT 10.1 and removed in 11: ``IBuilderConfig.int8_calibrator``, ``BuilderFlag.INT8`` gone, "Removed
Python APIs and Replacements", TensorRT 11.x migration guide). What each release needs: 8.5 and 10.x build weakly typed
networks, where Q/DQ layers only take effect with ``BuilderFlag.INT8`` set ("Explicit Quantization", TensorRT
developer guide: "To enable any quantized operations, the INT8 flag must be set"), plus ``FP16`` where the platform has
fast fp16 so the layers between Q/DQ pairs (the scan) may run in fp16; trtexec ``--int8 --fp16``. 11.x builds the QDQ
graph strongly typed with no flag: the quantized layers run int8, the rest in the graph's float32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import time
from pathlib import Path

from ..artifacts.tensorrt import (
    SUPPORTED_TENSORRT,
    TARGETS,
    TRT_LOG_NAME,
    require_tensorrt,
    strongly_typed,
    tensorrt_family,
    tensorrt_major,
    trt_logger,
)
from ..errors import ConfigError, ExportError
from ..fileio import atomic_write
from ..profiles import PRECISIONS

__all__ = ["PRECISIONS", "build_engine", "trtexec_command"]

log = logging.getLogger(__name__)




def _check_request(target: str, input_shape, precision: str, workspace_mb: int, dla_core: int | None) -> tuple:
    """Validate what both the builder and the trtexec command take; return the input shape as a tuple."""
    if str(target) not in TARGETS:
        raise ConfigError(f"TensorRT target {target!r} is unknown; valid targets are {list(TARGETS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown; valid values are {list(PRECISIONS)}")
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be 4 positive integers (N, 3, h, w), got {input_shape!r}")
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb <= 0:
        raise ConfigError(f"workspace_mb must be a positive integer (MiB), got {workspace_mb!r}")
    if dla_core is not None:
        if isinstance(dla_core, bool) or not isinstance(dla_core, int) or dla_core < 0:
            raise ConfigError(f"dla_core must be a non-negative integer or None, got {dla_core!r}")
        if precision == "fp32":
            # DLA runs fp16/int8 only: with GPU fallback every layer would quietly land on the GPU.
            raise ExportError("DLA runs only fp16 and int8 layers; an fp32 build would put every layer back on the "
                              "GPU. Use precision fp16 with a DLA core, or set dla_core: null")
    return shape


def trtexec_command(onnx_path, plan_path, *, target: str, input_shape, precision: str, workspace_mb: int,
                    dla_core: int | None = None, timing_cache=None, input_name: str | None = None) -> str:
    """The trtexec command line that builds the same engine as :func:`build_engine` with TensorRT 8.5 or 10.x (run it
    on the device, then ``mambaesr-export --adopt-plan`` writes the plan's manifest after the parity check).

    ``input_name``: give it only for an ONNX file whose input has dynamic dims, to pin them with ``--shapes``;
    trtexec refuses ``--shapes`` for static graphs, which is what ``export_onnx`` writes.
    """
    shape = _check_request(target, input_shape, precision, workspace_mb, dla_core)
    # 8.5 reads the pool size as a bare MiB number; 10.x also takes unit suffixes, so say MiB explicitly there.
    workspace = f"{workspace_mb}" if str(target) == "8.5" else f"{workspace_mb}M"
    args = ["trtexec", f"--onnx={os.fspath(onnx_path)}", f"--saveEngine={os.fspath(plan_path)}",
            f"--memPoolSize=workspace:{workspace}"]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":  # explicit quantization: the QDQ graph's scales; fp16 allowed between Q/DQ pairs
        args += ["--int8", "--fp16"]
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        args.append(f"--timingCacheFile={os.fspath(timing_cache)}")
    if input_name is not None:
        args.append(f"--shapes={input_name}:{'x'.join(str(d) for d in shape)}")
    return shlex.join(args)


def gpu_name(cuda, index: int = 0) -> str | None:
    """The GPU's name via PyCUDA when available (recorded in the manifest; a plan is tied to its GPU)."""
    if cuda is None:
        try:
            import pycuda.driver as cuda
        except ImportError:
            return None
    try:
        cuda.init()
        return str(cuda.Device(index).name())
    except Exception as exc:  # noqa: BLE001 - a driver error must not discard a finished build; the manifest
        # then just lacks the device name
        log.warning("could not read the GPU name through PyCUDA (%s); the manifest will not record the device", exc)
        return None


def _parser_errors(parser) -> list[str]:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()}"
        if hasattr(err, "node_name"):  # IParserError::nodeName/nodeOperator exist from TensorRT 9.1
            where += f" {err.node_name()!r} ({err.node_operator()})"
        lines.append(f"{where}: {err.desc()} [{err.code()}]")
    return lines


def _attach_timing_cache(config, cache_path: Path, version: str) -> bool:
    """Load ``cache_path`` (if it exists) into ``config``. A cache TensorRT cannot read, or one that does not match
    this GPU/TensorRT, is replaced by a fresh one with a warning. False when TensorRT could create no cache at all."""
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, False):
        return True
    if cache is None and blob:
        # createTimingCache returns nullptr (None in Python) for a blob it cannot deserialize, e.g. another version's.
        log.warning("timing cache %s could not be read by TensorRT %s (written by another version?); starting a "
                    "fresh one, which replaces it after the build", cache_path, version)
    elif cache is not None:
        log.warning("timing cache %s does not match this GPU/TensorRT; building with an empty one", cache_path)
    cache = config.create_timing_cache(b"") if blob or cache is not None else None
    if cache is None:
        log.warning("TensorRT could not create a timing cache; building without one (%s is left as it is)",
                    cache_path)
        return False
    config.set_timing_cache(cache, False)
    return True


def build_engine(onnx_path, plan_path, *, target: str, input_shape, precision: str, workspace_mb: int,
                 dla_core: int | None = None, timing_cache=None, trt=None, cuda=None, precheck: bool = True) -> dict:
    """Build ``onnx_path`` into a serialized TensorRT engine at ``plan_path`` (written atomically); return build info.

    ``target``: the profile's TensorRT family (``"8.5"`` / ``"10"``), which must match the installed TensorRT.
    ``input_shape``: the static (N, 3, h, w) the engine runs. ``precision``: ``fp32``, ``fp16`` (never silently
    downgraded: fp16 on a GPU without fast fp16 is an error) or ``int8``, which needs an int8 QDQ graph (explicit
    quantization, see the module docstring; a graph without Q/DQ nodes is refused, never calibrated here). With
    TensorRT 11 an fp16 engine is built from the graph converted to fp16 (needs the onnx package).
    ``workspace_mb``: the builder's workspace pool. ``dla_core``: run on that DLA core with GPU fallback.
    ``timing_cache``: a file read if it exists and written back after the build, so rebuilds reuse kernel timings.
    ``trt`` / ``cuda``: the ``tensorrt`` and ``pycuda.driver`` modules (imported when ``None``; PyCUDA is optional
    here and only names the GPU). ``precheck``: run :func:`trt_compat.check_graph` first when onnx is installed.

    Returns ``tensorrt`` (version), ``target``, ``device`` (GPU name or ``None``), ``build_seconds``, ``plan``,
    ``plan_sha256``, ``plan_bytes``, ``input_name``, ``input_shape``, ``output_name``, ``output_shape``,
    ``precision``, ``strongly_typed``, ``workspace_mb``, ``dla_core``, ``timing_cache`` (``None`` also when TensorRT
    could create no cache at all).
    """
    shape = _check_request(target, input_shape, precision, workspace_mb, dla_core)
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise ExportError(f"ONNX file {onnx_path} not found; export it first (mambaesr-export or export_onnx)")
    trt = require_tensorrt(trt)
    family = tensorrt_family(trt.__version__)
    if family is None:
        raise ExportError(f"TensorRT {trt.__version__} is not a version MambaESR builds with; it supports "
                          f"{SUPPORTED_TENSORRT}. Install one of those (JetPack 5.1 or 6.1+ on a Jetson; "
                          f"pip install tensorrt on a desktop)")
    if family != str(target):
        raise ExportError(f"TensorRT {trt.__version__} is installed but the profile targets TensorRT {target}; "
                          f"build on the device the profile describes (JetPack 5.1 = TensorRT 8.5, JetPack 6.1+ or "
                          f"pip tensorrt = TensorRT 10/11) or choose the profile whose tensorrt target is {family!r}")
    report = None
    if precheck:
        try:
            from .trt_compat import check_graph

            report = check_graph(onnx_path, str(target), require_static=False, tensorrt_version=str(trt.__version__))
        except ImportError:  # DependencyError is an ImportError: onnx is missing on this device
            log.warning("onnx is not installed, so the TensorRT op check is skipped; the TensorRT parser will "
                        "report unsupported ops itself")
    if precision == "int8" and report is None:
        from .fp16_onnx import load_onnx  # a DependencyError naming the install when onnx is missing
        from .trt_compat import check_graph

        # the Q/DQ check below is what keeps an int8 build explicit: it is not skipped
        report = check_graph(load_onnx(onnx_path), str(target), require_static=False,
                             tensorrt_version=str(trt.__version__))
    if precision == "int8" and not {"QuantizeLinear", "DequantizeLinear"} <= set(report["ops"]):
        raise ExportError(f"{onnx_path.name} has no QuantizeLinear/DequantizeLinear nodes: an int8 engine is built "
                          f"from the tier's int8 QDQ graph (mambaesr-export --precision int8 writes it), never by "
                          f"TensorRT's implicit calibration (deprecated in 10.1, removed in 11)")

    legacy = tensorrt_major(trt.__version__) < 10
    typed = strongly_typed(trt.__version__)
    model_bytes = onnx_path.read_bytes()
    if typed and precision == "fp16":
        # Strongly typed: the engine computes in the graph's types, so an fp16 engine needs an fp16 graph.
        from .fp16_onnx import convert_to_fp16, load_onnx

        model_bytes = convert_to_fp16(load_onnx(onnx_path)).SerializeToString()
        log.info("TensorRT %s builds strongly typed networks: building %s from its fp16 conversion (float32 I/O)",
                 trt.__version__, onnx_path.name)
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    # Explicit batch is mandatory for ONNX on 8.x and the only mode on 10.x (flag deprecated) and 11.x (flag removed).
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if legacy else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes, str(onnx_path)):
        errors = _parser_errors(parser) or ["(the parser reported failure without an error message)"]
        raise ExportError(f"TensorRT {trt.__version__} could not parse {onnx_path.name} ({len(errors)} error(s)):\n- "
                          + "\n- ".join(errors) + "\nSee trt_compat.check_graph for the ops each target supports")

    if network.num_inputs != 1 or network.num_outputs != 1:
        raise ExportError(f"{onnx_path.name} has {network.num_inputs} inputs and {network.num_outputs} outputs; a "
                          f"MambaESR engine has one of each (export with export_onnx)")
    inp, out = network.get_input(0), network.get_output(0)
    net_shape = tuple(inp.shape)
    config = builder.create_builder_config()
    if any(d < 0 for d in net_shape):
        if len(net_shape) != 4 or any(d >= 0 and d != s for d, s in zip(net_shape, shape)):
            raise ExportError(f"{onnx_path.name} input {inp.name!r} has shape {net_shape}, which cannot take "
                              f"{shape}; export it at the tier's tile size")
        # Pin the dynamic dims to the one shape we run: min = opt = max.
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    elif net_shape != shape:
        raise ExportError(f"{onnx_path.name} is static at {net_shape} but the engine should take {shape}; export the "
                          f"ONNX at the tier's tile and batch (export_onnx(model, path, h, w, batch))")

    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp16" and not typed:
        if not builder.platform_has_fast_fp16:
            raise ExportError("this GPU has no fast fp16, and a profile's precision is never downgraded silently; "
                              "use a profile with precision fp32 on this device")
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8" and not typed:
        # Weakly typed (8.5, 10.x): Q/DQ layers take effect only with INT8 set; no calibrator (explicit scales).
        config.set_flag(trt.BuilderFlag.INT8)
        if builder.platform_has_fast_fp16:  # the layers between Q/DQ pairs may then run in fp16
            config.set_flag(trt.BuilderFlag.FP16)
    if dla_core is not None:
        cores = builder.num_DLA_cores
        if dla_core >= cores:
            raise ExportError(f"DLA core {dla_core} was asked for but this device has {cores} DLA core(s) (valid: "
                              f"{list(range(cores))}); set dla_core to one of them or to null in the profile")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run (the scan's MatMul/CumSum) go to the GPU

    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None and not _attach_timing_cache(config, cache_path, trt.__version__):
        cache_path = None  # TensorRT could create no cache at all: build without one, write none back

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise ExportError(f"TensorRT {trt.__version__} failed to build {onnx_path.name} (build_serialized_network "
                          f"returned None); the reason is in the log of {TRT_LOG_NAME!r}. Common causes: "
                          f"workspace_mb ({workspace_mb}) too small, a layer the chosen device cannot run")
    data = memoryview(plan)
    atomic_write(plan_path, lambda tmp: Path(tmp).write_bytes(data), suffix=".plan")
    if cache_path is not None:
        serialized = memoryview(config.get_timing_cache().serialize())
        atomic_write(cache_path, lambda tmp: Path(tmp).write_bytes(serialized), suffix=".cache")

    info = {
        "tensorrt": str(trt.__version__), "target": str(target), "device": gpu_name(cuda),
        "build_seconds": round(seconds, 3), "plan": str(plan_path), "plan_sha256": hashlib.sha256(data).hexdigest(),
        "plan_bytes": data.nbytes, "input_name": inp.name, "input_shape": shape, "output_name": out.name,
        "output_shape": tuple(out.shape), "precision": precision, "strongly_typed": typed,
        "workspace_mb": workspace_mb, "dla_core": dla_core,
        "timing_cache": str(cache_path) if cache_path is not None else None,
    }
    log.info("built %s (%d bytes, %s) with TensorRT %s in %.1f s", plan_path, data.nbytes, precision,
             trt.__version__, seconds)
    return info
