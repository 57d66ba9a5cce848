"""The TensorRT backend against recording stand-ins of TensorRT 8.5 / 10.x / 11.x and PyCUDA (no GPU here).

Plans come from ``build_engine`` with the same stand-ins, plus a manifest, as on a device. The fake engine upscales by
nearest neighbour, so ``infer`` output is checked exactly; the fake CUDA driver checks that every call that needs a
current context has one, and that contexts are pushed and popped in balance.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import threading

import numpy as np
import pytest
from onnx import TensorProto

from mambaesr_runtime.artifacts.manifest import EngineManifest, manifest_path, read_manifest, write_manifest
from mambaesr_runtime.backends.tensorrt import TrtBackend
from mambaesr_runtime.errors import BackendError, DependencyError
from mambaesr_runtime.export.tensorrt_build import build_engine
from mambaesr_runtime.fileio import sha256_file
from standins.tensorrt_standin import TRT10_VERSION, TRT11_VERSION, TRT85_VERSION, make_standins, write_static_sr_onnx

VERSIONS = {"8.5": TRT85_VERSION, "10": TRT10_VERSION}


def _plan(tmp_path, target, dla_core=None, version=None, output_type=None, **manifest_changes):
    """Build a plan with the stand-ins and write its manifest; return (plan path, fake trt, fake cuda, recorder)."""
    trt, cuda, rec = make_standins(version or VERSIONS[target])
    rec.dla_cores = 1
    onnx_file = write_static_sr_onnx(tmp_path / "tiny.onnx", output_type=output_type)
    plan = tmp_path / "tiny.plan"
    info = build_engine(onnx_file, plan, target=target, input_shape=(1, 3, 16, 16), precision="fp16",
                        workspace_mb=256, dla_core=dla_core, trt=trt, cuda=cuda)
    manifest = EngineManifest(
        kind="plan", artifact=plan.name, artifact_sha256=info["plan_sha256"], variant="tiny", scale=4,
        input_shape=info["input_shape"], output_shape=info["output_shape"], precision="fp16", opset=17,
        onnx_sha256="0" * 64, weights_sha256="0" * 64, profile="orin", tier="balanced", tensorrt_target=target,
        versions={"tensorrt": info["tensorrt"]}, device=info["device"], dla_core=dla_core,
        build_time="2025-01-01T00:00:00Z")
    write_manifest(dataclasses.replace(manifest, **manifest_changes), tmp_path)
    rec.calls.clear()
    return plan, trt, cuda, rec


def _expected(x):
    return x.repeat(4, axis=2).repeat(4, axis=3)


def _x(seed=0):
    return np.random.default_rng(seed).random((1, 3, 16, 16), dtype=np.float32)


OPEN_COMMON = ["cuda.init", "cuda.Device.make_context", "trt.Runtime", "trt.Runtime.deserialize_cuda_engine",
               "trt.ICudaEngine.create_execution_context"]
BUFFERS = ["cuda.pagelocked_empty", "cuda.pagelocked_empty", "cuda.mem_alloc", "cuda.mem_alloc", "cuda.Stream"]
INFER_HEAD = ["cuda.Context.push", "cuda.memcpy_htod_async"]
INFER_TAIL = ["cuda.memcpy_dtoh_async", "cuda.Stream.synchronize", "cuda.Context.pop"]
CLOSE = ["cuda.Context.push", "cuda.DeviceAllocation.free", "cuda.DeviceAllocation.free", "cuda.HostAllocation.free",
         "cuda.HostAllocation.free", "cuda.Context.detach"]


def test_bindings_execution_path_trt85_standin(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "8.5")
    backend = TrtBackend(plan, trt=trt, cuda=cuda)
    assert rec.names() == OPEN_COMMON + ["trt.ICudaEngine.num_bindings"] + BUFFERS + ["cuda.Context.pop"]
    rec.calls.clear()
    x = _x()
    y = backend.infer(x)
    assert rec.names() == INFER_HEAD + ["trt.IExecutionContext.execute_async_v2"] + INFER_TAIL
    (bindings, stream), = rec.args("trt.IExecutionContext.execute_async_v2")
    d_in, d_out = (args[0] for args in rec.args("cuda.memcpy_htod_async") + rec.args("cuda.memcpy_dtoh_async"))
    assert bindings == (d_in, d_out) and stream == backend._stream.handle
    np.testing.assert_array_equal(y, _expected(x))
    assert not hasattr(trt.IExecutionContext, "execute_async_v3")  # the 8.x path cannot have used it
    backend.close()
    assert rec.ctx_stack == [] and rec.memory == {}


def test_tensor_address_execution_path_trt10_standin(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "10")
    backend = TrtBackend(plan, trt=trt, cuda=cuda)
    assert rec.names() == OPEN_COMMON + ["trt.ICudaEngine.num_io_tensors"] + BUFFERS + [
        "trt.IExecutionContext.set_tensor_address", "trt.IExecutionContext.set_tensor_address", "cuda.Context.pop"]
    (in_name, d_in), (out_name, d_out) = rec.args("trt.IExecutionContext.set_tensor_address")
    assert (in_name, out_name) == ("lr", "sr") and d_in != d_out
    rec.calls.clear()
    x = _x(1)
    y = backend.infer(x)
    assert rec.names() == INFER_HEAD + ["trt.IExecutionContext.execute_async_v3"] + INFER_TAIL
    assert rec.args("trt.IExecutionContext.execute_async_v3") == [(backend._stream.handle,)]
    np.testing.assert_array_equal(y, _expected(x))
    assert not hasattr(trt.ICudaEngine, "num_bindings") and not hasattr(trt.IExecutionContext, "execute_async_v2")
    backend.close()
    assert rec.ctx_stack == [] and rec.memory == {}


@pytest.mark.parametrize("target", VERSIONS)
def test_surface_matches_the_onnxruntime_backend(tmp_path, target):
    plan, trt, cuda, rec = _plan(tmp_path, target)
    with TrtBackend(plan, trt=trt, cuda=cuda) as backend:
        assert backend.input_shape == (1, 3, 16, 16) and backend.scale == 4
        text = backend.describe()
        assert VERSIONS[target] in text and "tiny.plan" in text and rec.device_name in text and "fp16" in text
        assert ("bindings" if target == "8.5" else "tensor addresses") in text
        first, second = backend.infer(_x(2)), backend.infer(_x(3))
        assert first.dtype == np.float32 and first.shape == (1, 3, 64, 64)
        np.testing.assert_array_equal(first, _expected(_x(2)))  # a new array each call, not the shared buffer
        np.testing.assert_array_equal(second, _expected(_x(3)))
    assert rec.ctx_stack == [] and rec.memory == {}  # the context manager closed it


@pytest.mark.parametrize("bad", [np.zeros((1, 3, 16, 16), np.float64), np.zeros((2, 3, 16, 16), np.float32),
                                 np.zeros((1, 3, 16, 16), np.float32).tolist()])
def test_input_of_wrong_shape_or_dtype_is_refused(tmp_path, bad):
    plan, trt, cuda, rec = _plan(tmp_path, "10")
    with TrtBackend(plan, trt=trt, cuda=cuda) as backend:
        rec.calls.clear()
        with pytest.raises(BackendError, match=r"takes float32 \(1, 3, 16, 16\)"):
            backend.infer(bad)
        assert rec.calls == []  # refused before any copy or launch


@pytest.mark.parametrize("target", VERSIONS)
def test_close_is_idempotent_and_frees_in_order(tmp_path, target):
    plan, trt, cuda, rec = _plan(tmp_path, target)
    backend = TrtBackend(plan, trt=trt, cuda=cuda)
    rec.calls.clear()
    backend.close()
    assert rec.names() == CLOSE
    backend.close()
    assert rec.names() == CLOSE  # the second close does nothing
    assert rec.ctx_stack == [] and rec.memory == {}
    with pytest.raises(BackendError, match="closed"):
        backend.infer(_x())


def test_plan_from_another_tensorrt_version_is_refused_with_the_rebuild_command(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "8.5", versions={"tensorrt": "8.5.1.7"})
    with pytest.raises(BackendError) as err:
        TrtBackend(plan, trt=trt, cuda=cuda)
    message = str(err.value)
    assert "8.5.1.7" in message and TRT85_VERSION in message
    assert "mambaesr-export --device orin" in message
    assert "cuda.Device.make_context" not in rec.names()  # refused before any GPU work


def test_plan_from_another_gpu_is_refused_with_the_rebuild_command(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "10", device="Xavier (gv11b)")
    with pytest.raises(BackendError) as err:
        TrtBackend(plan, trt=trt, cuda=cuda)
    message = str(err.value)
    assert "Xavier (gv11b)" in message and rec.device_name in message
    assert "mambaesr-export --device orin" in message
    assert "cuda.Device.make_context" not in rec.names()


def test_missing_manifest_is_a_backend_error(tmp_path):
    plan, trt, cuda, _ = _plan(tmp_path, "10")
    manifest_path(plan).unlink()
    with pytest.raises(BackendError, match="needs its manifest beside it"):
        TrtBackend(plan, trt=trt, cuda=cuda)


@pytest.mark.parametrize("target", VERSIONS)
def test_undeserializable_plan_fails_cleanly(tmp_path, target):
    plan, trt, cuda, rec = _plan(tmp_path, target)
    plan.write_bytes(b"not an engine")
    write_manifest(dataclasses.replace(read_manifest(plan), artifact_sha256=sha256_file(plan)), tmp_path)
    with pytest.raises(BackendError, match="could not deserialize .* mambaesr-export --device orin"):
        TrtBackend(plan, trt=trt, cuda=cuda)
    assert rec.names()[-1] == "cuda.Context.detach"  # the context made for it is released again
    assert rec.ctx_stack == [] and rec.memory == {}


def test_a_plan_swapped_under_its_name_is_refused_before_the_gpu_is_touched(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "10")
    plan.write_bytes(plan.read_bytes() + b"\0")  # another engine, a damaged copy: not what the manifest describes
    with pytest.raises(BackendError, match="sha256 .* was replaced or damaged"):
        TrtBackend(plan, trt=trt, cuda=cuda)
    assert rec.names() == []


def test_failed_execution_raises_and_leaves_the_context_balanced(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "8.5")
    with TrtBackend(plan, trt=trt, cuda=cuda) as backend:
        rec.execute_ok = False
        with pytest.raises(BackendError, match="failed to run"):
            backend.infer(_x())
        assert rec.ctx_stack == []
        rec.execute_ok = True
        np.testing.assert_array_equal(backend.infer(_x()), _expected(_x()))


def test_infer_from_other_threads(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "10")
    results = {}
    with TrtBackend(plan, trt=trt, cuda=cuda) as backend:
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, backend.infer(_x(i)))) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], _expected(_x(i)))
    assert rec.ctx_stack == []


def test_dla_plan_runs_on_its_dla_core(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "8.5", dla_core=0)
    with TrtBackend(plan, trt=trt, cuda=cuda):
        assert rec.args("trt.Runtime.DLA_core=") == [(0,)]
        names = rec.names()
        assert names.index("trt.Runtime.DLA_core=") < names.index("trt.Runtime.deserialize_cuda_engine")


def test_missing_plan_and_bad_device_index(tmp_path):
    with pytest.raises(BackendError, match="not found"):
        TrtBackend(tmp_path / "absent.plan")
    plan, trt, cuda, _ = _plan(tmp_path, "10")
    with pytest.raises(BackendError, match=r"CUDA device 3 does not exist; this system has 1 \(valid: \[0\]\)"):
        TrtBackend(plan, device_index=3, trt=trt, cuda=cuda)


def test_without_tensorrt_the_backend_says_how_to_get_it(tmp_path, monkeypatch):
    plan, trt, cuda, _ = _plan(tmp_path, "10")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(DependencyError, match="JetPack.*pip install tensorrt"):
        TrtBackend(plan, cuda=cuda)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    with pytest.raises(DependencyError, match="pip install pycuda"):
        TrtBackend(plan, trt=trt)


def test_one_logger_serves_every_runtime_when_the_first_engine_closes_first(tmp_path):
    """Upscaler's LRU closes its oldest engine first. TensorRT keeps the first logger it is given while any runtime
    lives; a logger per backend was freed with the first backend while the others still logged through it (the
    stand-in raises where a device would crash)."""
    plan, trt, cuda, rec = _plan(tmp_path, "10")
    first = TrtBackend(plan, trt=trt, cuda=cuda)
    second = TrtBackend(plan, trt=trt, cuda=cuda)
    first.close()
    del first
    gc.collect()
    np.testing.assert_array_equal(second.infer(_x(5)), _expected(_x(5)))  # the engine logs on every enqueue
    with TrtBackend(plan, trt=trt, cuda=cuda) as third:
        np.testing.assert_array_equal(third.infer(_x(6)), _expected(_x(6)))
    second.close()
    assert len(rec.loggers) == 4 and len(set(rec.loggers)) == 1  # builder + 3 runtimes
    assert not [m for _, m in rec.logged if "differs from one already provided" in m]


def test_standin_logger_is_process_wide_like_tensorrt(tmp_path):
    """The stand-in's behaviour the test above relies on: a second logger is ignored with TensorRT's warning, and
    once the kept one is freed, logging through it fails."""
    plan, trt, cuda, _ = _plan(tmp_path, "10")

    class OwnLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages = []

        def log(self, severity, msg):
            self.messages.append(msg)

    ctx = cuda.Device(0).make_context()
    first_logger = OwnLogger()
    first = trt.Runtime(first_logger)
    second = trt.Runtime(OwnLogger())
    assert "differs from one already provided" in first_logger.messages[-1]  # reported through the kept logger
    assert second.deserialize_cuda_engine(plan.read_bytes()) is not None
    del first, first_logger
    gc.collect()
    with pytest.raises(RuntimeError, match="freed logger"):
        second.deserialize_cuda_engine(plan.read_bytes())
    ctx.pop()


def test_standin_deserialize_and_execution_context_need_a_current_cuda_context(tmp_path):
    from mambaesr_runtime.artifacts.tensorrt import trt_logger

    plan, trt, cuda, _ = _plan(tmp_path, "8.5")
    runtime = trt.Runtime(trt_logger(trt))
    with pytest.raises(RuntimeError, match="without a current context"):
        runtime.deserialize_cuda_engine(plan.read_bytes())
    ctx = cuda.Device(0).make_context()
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    ctx.pop()
    with pytest.raises(RuntimeError, match="without a current context"):
        engine.create_execution_context()


def test_engine_with_a_tensor_type_numpy_lacks_is_a_backend_error(tmp_path):
    """trt.nptype raises TypeError for bf16 (and fp8, int4...): the backend names the tensor instead of crashing."""
    plan, trt, cuda, rec = _plan(tmp_path, "10", output_type=TensorProto.BFLOAT16)
    with pytest.raises(BackendError, match=r"tensor 'sr' is BF16; MambaESR engines take and return float32"):
        TrtBackend(plan, trt=trt, cuda=cuda)
    assert rec.ctx_stack == [] and rec.memory == {}


def test_trt11_engine_runs_on_the_tensor_address_path(tmp_path):
    plan, trt, cuda, rec = _plan(tmp_path, "10", version=TRT11_VERSION)
    with TrtBackend(plan, trt=trt, cuda=cuda) as backend:
        assert "tensor addresses" in backend.describe() and TRT11_VERSION in backend.describe()
        np.testing.assert_allclose(backend.infer(_x()), _expected(_x()), atol=5e-4)  # fp16 inside (11: typed)
    assert rec.ctx_stack == []


def test_manifest_can_be_given_instead_of_read_and_describe_shows_the_parity(tmp_path):
    plan, trt, cuda, _ = _plan(tmp_path, "10")
    from mambaesr_runtime.artifacts.manifest import read_manifest

    manifest = read_manifest(plan)
    manifest_path(plan).unlink()
    checked = dataclasses.replace(manifest, verification={
        "plan_vs_ort_psnr_db": 57.31, "plan_vs_ort_min_tile_psnr_db": 51.2, "plan_vs_ort_max_abs_err": 0.0021,
        "parity_tiles": 4})
    with TrtBackend(plan, trt=trt, cuda=cuda, manifest=checked) as backend:
        text = backend.describe()
    assert "parity vs ONNX Runtime fp32: 57.31 dB PSNR (worst tile 51.2 dB), max abs error 0.0021 on 4" in text
    with TrtBackend(plan, trt=trt, cuda=cuda, manifest=manifest) as backend:
        assert "no parity check recorded" in backend.describe()
