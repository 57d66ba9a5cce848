"""TensorRT engine building against recording stand-ins of the TensorRT 8.5, 10.x and 11.x Python APIs (no GPU here).

The stand-ins (tests/standins/tensorrt_standin.py) expose only members the real version documents, so these tests
pin the exact calls each version gets; the device check is to run the same build on a Jetson (and a desktop GPU for
11.x).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest

from mambaesr_runtime.errors import DependencyError, ExportError
from mambaesr_runtime.export.tensorrt_build import build_engine, trtexec_command
from standins.tensorrt_standin import (
    _PLAN_MAGIC,
    TRT10_VERSION,
    TRT11_VERSION,
    TRT85_VERSION,
    make_standins,
    write_static_sr_onnx,
)

VERSIONS = {"8.5": TRT85_VERSION, "10": TRT10_VERSION}


@pytest.fixture
def onnx_file(tmp_path):
    return write_static_sr_onnx(tmp_path / "tiny.onnx")


def _build(target, onnx_file, plan, rec=None, trt_version=None, **kw):
    trt, cuda, rec = make_standins(trt_version or VERSIONS[target], rec)
    args = {"target": target, "input_shape": (1, 3, 16, 16), "precision": "fp16", "workspace_mb": 256, "trt": trt,
            "cuda": cuda, **kw}
    return build_engine(onnx_file, plan, **args), rec


def _plan_meta(path):
    """The fake plan's header (what the fake builder saw) and the ONNX graph it stored."""
    header, model = path.read_bytes()[len(_PLAN_MAGIC):].split(b"\n", 1)
    return json.loads(header), onnx.load_model_from_string(model)


BUILD_SEQUENCE = [
    "trt.Builder", "trt.Builder.create_network", "trt.OnnxParser", "trt.OnnxParser.parse",
    "trt.Builder.create_builder_config", "trt.IBuilderConfig.set_memory_pool_limit",
    "trt.Builder.platform_has_fast_fp16", "trt.IBuilderConfig.set_flag", "trt.IBuilderConfig.create_timing_cache",
    "trt.IBuilderConfig.set_timing_cache", "trt.Builder.build_serialized_network",
    "trt.IBuilderConfig.get_timing_cache", "trt.ITimingCache.serialize"]


def test_build_call_sequence_trt85_standin(tmp_path, onnx_file):
    info, rec = _build("8.5", onnx_file, tmp_path / "e.plan", timing_cache=tmp_path / "t.cache")
    assert rec.names("trt.") == BUILD_SEQUENCE
    assert rec.args("trt.Builder.create_network") == [(1,)]  # 1 << EXPLICIT_BATCH: required for ONNX on 8.x
    assert rec.args("trt.OnnxParser.parse") == [(str(onnx_file),)]
    assert rec.args("trt.IBuilderConfig.set_memory_pool_limit") == [("WORKSPACE", 256 << 20)]
    assert rec.args("trt.IBuilderConfig.set_flag") == [("FP16",)]
    assert rec.args("trt.IBuilderConfig.set_timing_cache") == [(False,)]
    assert info["tensorrt"] == TRT85_VERSION and info["target"] == "8.5"


def test_build_call_sequence_trt10_standin(tmp_path, onnx_file):
    info, rec = _build("10", onnx_file, tmp_path / "e.plan", timing_cache=tmp_path / "t.cache")
    assert rec.names("trt.") == BUILD_SEQUENCE
    assert rec.args("trt.Builder.create_network") == [(0,)]  # EXPLICIT_BATCH is deprecated and ignored in 10.x
    assert info["tensorrt"] == TRT10_VERSION and info["target"] == "10"


@pytest.mark.parametrize("target", VERSIONS)
def test_build_info_describes_the_written_plan(tmp_path, onnx_file, target):
    plan = tmp_path / "engines" / "tiny.plan"
    info, rec = _build(target, onnx_file, plan)
    data = plan.read_bytes()
    assert info["plan_sha256"] == hashlib.sha256(data).hexdigest() and info["plan_bytes"] == len(data)
    assert info["device"] == rec.device_name  # read through the (fake) PyCUDA
    assert (info["input_name"], info["input_shape"]) == ("lr", (1, 3, 16, 16))
    assert (info["output_name"], info["output_shape"]) == ("sr", (1, 3, 64, 64))
    assert info["precision"] == "fp16" and info["build_seconds"] >= 0 and info["timing_cache"] is None
    assert sorted(p.name for p in plan.parent.iterdir()) == ["tiny.plan"]  # no temporary file left behind


@pytest.mark.parametrize("target", VERSIONS)
def test_parser_errors_surface_every_message(tmp_path, onnx_file, target):
    trt, cuda, rec = make_standins(VERSIONS[target])
    rec.parse_errors = [("No importer registered for op: Frobnicate", 3, "blocks.0/frob", "Frobnicate"),
                        ("Invalid Node - blocks.0/pad", 7, "blocks.0/pad", "Pad")]
    with pytest.raises(ExportError) as err:
        build_engine(onnx_file, tmp_path / "e.plan", target=target, input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=256, trt=trt, cuda=cuda)
    message = str(err.value)
    assert "2 error(s)" in message
    assert "No importer registered for op: Frobnicate" in message and "Invalid Node - blocks.0/pad" in message
    assert "node 3" in message and "node 7" in message
    if target == "10":  # IParserError.node_name()/node_operator() exist from TensorRT 9.1 on
        assert "'blocks.0/frob' (Frobnicate)" in message
    assert "trt.Builder.build_serialized_network" not in rec.names()
    assert not (tmp_path / "e.plan").exists()


@pytest.mark.parametrize("target", VERSIONS)
def test_failed_build_writes_no_plan_and_keeps_the_old_one(tmp_path, onnx_file, target, caplog):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"previous engine")
    trt, cuda, rec = make_standins(VERSIONS[target])
    rec.build_fails = True
    with caplog.at_level(logging.ERROR, logger="mambaesr_runtime.tensorrt"), \
            pytest.raises(ExportError, match="build_serialized_network returned None"):
        build_engine(onnx_file, plan, target=target, input_shape=(1, 3, 16, 16), precision="fp16", workspace_mb=256,
                     trt=trt, cuda=cuda, timing_cache=tmp_path / "t.cache")
    assert plan.read_bytes() == b"previous engine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.plan", "tiny.onnx"]  # no partial plan, no cache
    assert "out of workspace memory" in caplog.text  # TensorRT's reason reaches the log


def test_fp16_without_fast_fp16_is_an_error_not_a_downgrade(tmp_path, onnx_file):
    trt, cuda, rec = make_standins(TRT85_VERSION)
    rec.fast_fp16 = False
    with pytest.raises(ExportError, match="no fast fp16.*never downgraded silently"):
        build_engine(onnx_file, tmp_path / "e.plan", target="8.5", input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=256, trt=trt, cuda=cuda)
    assert "trt.IBuilderConfig.set_flag" not in rec.names()
    assert "trt.Builder.build_serialized_network" not in rec.names()


def test_fp32_build_sets_no_precision_flag(tmp_path, onnx_file):
    _, rec = _build("10", onnx_file, tmp_path / "e.plan", precision="fp32")
    assert "trt.IBuilderConfig.set_flag" not in rec.names()
    assert "trt.Builder.platform_has_fast_fp16" not in rec.names()


def test_int8_from_a_graph_without_qdq_is_refused_before_a_builder_exists(tmp_path, onnx_file):
    """int8 is explicit quantization only (the tier's QDQ graph; tests/export/test_int8.py builds one): an fp32
    graph is never handed to TensorRT's implicit calibration."""
    trt, cuda, rec = make_standins(TRT85_VERSION)
    with pytest.raises(ExportError, match="no QuantizeLinear/DequantizeLinear nodes.*--precision int8"):
        build_engine(onnx_file, tmp_path / "e.plan", target="8.5", input_shape=(1, 3, 16, 16), precision="int8",
                     workspace_mb=256, trt=trt, cuda=cuda)
    assert "trt.Builder" not in rec.names() and not (tmp_path / "e.plan").exists()


@pytest.mark.parametrize("target", VERSIONS)
def test_dla_build_sets_device_type_core_and_gpu_fallback(tmp_path, onnx_file, target):
    trt, cuda, rec = make_standins(VERSIONS[target])
    rec.dla_cores = 2
    info = build_engine(onnx_file, tmp_path / "e.plan", target=target, input_shape=(1, 3, 16, 16), precision="fp16",
                        workspace_mb=256, dla_core=1, trt=trt, cuda=cuda)
    names = rec.names("trt.IBuilderConfig")
    assert names[names.index("trt.IBuilderConfig.default_device_type="):][:3] == [
        "trt.IBuilderConfig.default_device_type=", "trt.IBuilderConfig.DLA_core=", "trt.IBuilderConfig.set_flag"]
    assert rec.args("trt.IBuilderConfig.default_device_type=") == [("DLA",)]
    assert rec.args("trt.IBuilderConfig.DLA_core=") == [(1,)]
    assert rec.args("trt.IBuilderConfig.set_flag") == [("FP16",), ("GPU_FALLBACK",)]
    assert info["dla_core"] == 1 and b'"device_type": "DLA"' in (tmp_path / "e.plan").read_bytes()


def test_dla_core_must_exist_and_not_be_fp32(tmp_path, onnx_file):
    trt, cuda, rec = make_standins(TRT85_VERSION)
    rec.dla_cores = 2
    with pytest.raises(ExportError, match=r"DLA core 2 .* 2 DLA core\(s\) \(valid: \[0, 1\]\)"):
        build_engine(onnx_file, tmp_path / "e.plan", target="8.5", input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=256, dla_core=2, trt=trt, cuda=cuda)
    with pytest.raises(ExportError, match="DLA runs only fp16 and int8"):
        build_engine(onnx_file, tmp_path / "e.plan", target="8.5", input_shape=(1, 3, 16, 16), precision="fp32",
                     workspace_mb=256, dla_core=0, trt=trt, cuda=cuda)
    assert not (tmp_path / "e.plan").exists()


@pytest.mark.parametrize("target", VERSIONS)
def test_timing_cache_is_read_and_written_back(tmp_path, onnx_file, target):
    cache = tmp_path / "timing.cache"
    _, first = _build(target, onnx_file, tmp_path / "a.plan", timing_cache=cache)
    assert first.args("trt.IBuilderConfig.create_timing_cache") == [(b"",)]  # no file yet: an empty cache
    assert cache.read_bytes() == b"FAKECACHE:1"
    _, second = _build(target, onnx_file, tmp_path / "b.plan", timing_cache=cache)
    assert second.args("trt.IBuilderConfig.create_timing_cache") == [(b"FAKECACHE:1",)]  # reused across builds
    assert cache.read_bytes() == b"FAKECACHE:2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes left no temporaries


def test_mismatched_timing_cache_is_replaced_with_a_warning(tmp_path, onnx_file, caplog):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FAKECACHE:7")
    trt, cuda, rec = make_standins(TRT10_VERSION)
    rec.timing_cache_mismatch = True
    with caplog.at_level(logging.WARNING):
        build_engine(onnx_file, tmp_path / "e.plan", target="10", input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=256, timing_cache=cache, trt=trt, cuda=cuda)
    assert rec.args("trt.IBuilderConfig.create_timing_cache") == [(b"FAKECACHE:7",), (b"",)]
    assert "does not match this GPU/TensorRT" in caplog.text
    assert cache.read_bytes() == b"FAKECACHE:1"


@pytest.mark.parametrize("version, target", [(TRT10_VERSION, "8.5"), (TRT11_VERSION, "8.5"), (TRT85_VERSION, "10")])
def test_installed_tensorrt_must_match_the_profile_target(tmp_path, onnx_file, version, target):
    trt, cuda, rec = make_standins(version)
    with pytest.raises(ExportError, match=f"TensorRT {version} is installed but the profile targets TensorRT {target}"):
        build_engine(onnx_file, tmp_path / "e.plan", target=target, input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=256, trt=trt, cuda=cuda)
    assert rec.calls == []


@pytest.mark.parametrize("version", ["8.6.1.6", "9.3.0.1", "12.0.0.1"])
def test_a_tensorrt_no_target_covers_is_refused_with_the_supported_ones(tmp_path, onnx_file, version):
    trt, cuda, rec = make_standins(TRT10_VERSION)
    trt.__version__ = version
    with pytest.raises(ExportError, match=f"TensorRT {version} is not a version MambaESR builds with; it supports 8.5 "
                                          r"\(JetPack 5.1\), 10.x .* or 11.x"):
        build_engine(onnx_file, tmp_path / "e.plan", target="10", input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=256, trt=trt, cuda=cuda)
    assert rec.calls == []


def test_dynamic_network_is_pinned_with_an_optimization_profile(tmp_path, onnx_file):
    trt, cuda, rec = make_standins(TRT10_VERSION)
    rec.network_input = ("lr", (-1, 3, 16, 16))
    info = build_engine(onnx_file, tmp_path / "e.plan", target="10", input_shape=(2, 3, 16, 16), precision="fp16",
                        workspace_mb=256, trt=trt, cuda=cuda)
    assert rec.args("trt.IOptimizationProfile.set_shape") == [("lr", (2, 3, 16, 16), (2, 3, 16, 16), (2, 3, 16, 16))]
    assert "trt.IBuilderConfig.add_optimization_profile" in rec.names()
    assert info["input_shape"] == (2, 3, 16, 16)


def test_static_network_of_another_shape_is_refused(tmp_path, onnx_file):
    trt, cuda, rec = make_standins(TRT85_VERSION)
    with pytest.raises(ExportError, match=r"static at \(1, 3, 16, 16\) but the engine should take \(4, 3, 16, 16\)"):
        build_engine(onnx_file, tmp_path / "e.plan", target="8.5", input_shape=(4, 3, 16, 16), precision="fp16",
                     workspace_mb=256, trt=trt, cuda=cuda)
    assert "trt.Builder.create_optimization_profile" not in rec.names()  # static graphs get no profile (as trtexec)


def test_precheck_refuses_an_unsupported_graph_before_tensorrt(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    gamma = numpy_helper.from_array(__import__("numpy").ones(4, "float32"), "g")
    graph = helper.make_graph([helper.make_node("LayerNormalization", ["x", "g"], ["y"], name="norm")], "ln",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], [gamma])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ln.onnx")
    trt, cuda, rec = make_standins(TRT85_VERSION)
    with pytest.raises(ExportError, match="LayerNormalization .*norm"):
        build_engine(tmp_path / "ln.onnx", tmp_path / "e.plan", target="8.5", input_shape=(1, 3, 4, 4),
                     precision="fp16", workspace_mb=256, trt=trt, cuda=cuda)
    assert "trt.Builder" not in rec.names()


def test_tensorrt_messages_go_to_logging_not_the_console(tmp_path, onnx_file, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="mambaesr_runtime.tensorrt"):
        _build("8.5", onnx_file, tmp_path / "e.plan")
    assert "TensorRT: fake builder: tactic timing is simulated" in caplog.text
    assert capsys.readouterr() == ("", "")


def test_without_tensorrt_build_engine_says_how_to_get_it(tmp_path, onnx_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # what `import tensorrt` does where it is not installed
    with pytest.raises(DependencyError) as err:
        build_engine(onnx_file, tmp_path / "e.plan", target="10", input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=256)
    assert "JetPack" in str(err.value) and "pip install tensorrt" in str(err.value)
    assert isinstance(err.value, ImportError)


def test_importing_the_tensorrt_modules_imports_neither_tensorrt_nor_pycuda():
    code = ("import sys; import mambaesr_runtime.export.tensorrt_build, mambaesr_runtime.export.trt_compat, "
            "mambaesr_runtime.backends.tensorrt; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'pycuda', 'torch', 'onnx')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trtexec_command_for_each_target():
    common = {"input_shape": (1, 3, 64, 64), "precision": "fp16", "workspace_mb": 1024, "dla_core": None,
              "timing_cache": "engines/timing.cache"}
    assert trtexec_command("m.onnx", "m.plan", target="8.5", **common) == (
        "trtexec --onnx=m.onnx --saveEngine=m.plan --memPoolSize=workspace:1024 --fp16 "
        "--timingCacheFile=engines/timing.cache")
    assert trtexec_command("m.onnx", "m.plan", target="10", **common) == (
        "trtexec --onnx=m.onnx --saveEngine=m.plan --memPoolSize=workspace:1024M --fp16 "
        "--timingCacheFile=engines/timing.cache")
    dla = trtexec_command("my model.onnx", "m.plan", target="8.5", input_shape=(1, 3, 64, 64), precision="fp16",
                          workspace_mb=512, dla_core=0, timing_cache=None)
    assert dla == ("trtexec '--onnx=my model.onnx' --saveEngine=m.plan --memPoolSize=workspace:512 --fp16 "
                   "--useDLACore=0 --allowGPUFallback")
    assert "--shapes" not in dla  # trtexec refuses explicit shapes for static graphs
    dynamic = trtexec_command("m.onnx", "m.plan", target="10", input_name="lr", **common)
    assert dynamic.endswith("--shapes=lr:1x3x64x64")
    assert trtexec_command("m_int8.onnx", "m.plan", target="8.5", **{**common, "precision": "int8"}) == (
        "trtexec --onnx=m_int8.onnx --saveEngine=m.plan --memPoolSize=workspace:1024 --int8 --fp16 "
        "--timingCacheFile=engines/timing.cache")


# --- TensorRT 11: strongly typed networks ---------------------------------------------------------------------------

BUILD_SEQUENCE_11 = [n for n in BUILD_SEQUENCE if n not in ("trt.Builder.platform_has_fast_fp16",
                                                            "trt.IBuilderConfig.set_flag")]


def test_trt11_standin_has_none_of_the_removed_weak_typing_names():
    trt, _, _ = make_standins(TRT11_VERSION)
    for flag in ("FP16", "INT8", "BF16", "FP8", "OBEY_PRECISION_CONSTRAINTS"):
        assert not hasattr(trt.BuilderFlag, flag)
    assert not hasattr(trt.Builder, "platform_has_fast_fp16")
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    with pytest.raises(AttributeError):  # what the 10.x code path did on 11: config.set_flag(trt.BuilderFlag.FP16)
        _ = trt.BuilderFlag.FP16


def test_trt11_fp16_engine_is_built_from_an_fp16_graph_with_float32_io(tmp_path, onnx_file):
    info, rec = _build("10", onnx_file, tmp_path / "e.plan", timing_cache=tmp_path / "t.cache", trt_version=TRT11_VERSION)
    assert rec.names("trt.") == BUILD_SEQUENCE_11  # no FP16 flag, no platform_has_fast_fp16
    assert rec.args("trt.Builder.create_network") == [(0,)]
    meta, model = _plan_meta(tmp_path / "e.plan")
    assert meta["precision"] == "fp16" and meta["flags"] == []  # the types came from the graph
    assert meta["input"][2] == meta["output"][2] == "FLOAT"  # the runtime still feeds and reads float32
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert info["strongly_typed"] and info["precision"] == "fp16" and info["tensorrt"] == TRT11_VERSION


def test_trt11_fp32_engine_is_built_from_the_graph_as_it_is(tmp_path, onnx_file):
    _, rec = _build("10", onnx_file, tmp_path / "e.plan", precision="fp32", trt_version=TRT11_VERSION)
    meta, model = _plan_meta(tmp_path / "e.plan")
    assert meta["precision"] == "fp32" and model == onnx.load(onnx_file)
    assert "trt.IBuilderConfig.set_flag" not in rec.names()


def test_trt11_fp16_engine_computes_what_the_fp32_graph_computes(tmp_path, onnx_file):
    """The fp16 conversion keeps the function: the (ONNX Runtime backed) fake engine built on 11 still upscales by
    nearest neighbour, up to fp16 rounding of the input."""
    from mambaesr_runtime.artifacts.manifest import EngineManifest, write_manifest
    from mambaesr_runtime.backends.tensorrt import TrtBackend

    trt, cuda, _ = make_standins(TRT11_VERSION)
    plan = tmp_path / "e.plan"
    info = build_engine(onnx_file, plan, target="10", input_shape=(1, 3, 16, 16), precision="fp16", workspace_mb=64,
                        trt=trt, cuda=cuda)
    write_manifest(EngineManifest(
        kind="plan", artifact=plan.name, artifact_sha256=info["plan_sha256"], variant="tiny", scale=4,
        input_shape=(1, 3, 16, 16), output_shape=(1, 3, 64, 64), precision="fp16", opset=17, onnx_sha256="-",
        weights_sha256="-", profile="cuda", tier="t", tensorrt_target="10", versions={"tensorrt": TRT11_VERSION},
        device=info["device"]), tmp_path)
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    with TrtBackend(plan, trt=trt, cuda=cuda) as backend:
        y = backend.infer(x)
    np.testing.assert_allclose(y, x.repeat(4, 2).repeat(4, 3), atol=5e-4)  # fp16 spacing near 1 is 4.9e-4


def test_trt11_fp16_without_onnx_says_how_to_get_it(tmp_path, onnx_file, monkeypatch):
    trt, cuda, rec = make_standins(TRT11_VERSION)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(DependencyError, match="strongly typed.*pip install onnx"):
        build_engine(onnx_file, tmp_path / "e.plan", target="10", input_shape=(1, 3, 16, 16), precision="fp16",
                     workspace_mb=64, trt=trt, cuda=cuda)
    assert "trt.Builder.build_serialized_network" not in rec.names() and not (tmp_path / "e.plan").exists()


# --- stricter stand-ins: each behaves as the real library -----------------------------------------------------------

def test_trt85_standin_refuses_to_parse_a_network_without_explicit_batch(onnx_file):
    from mambaesr_runtime.artifacts.tensorrt import trt_logger

    trt, _, _ = make_standins(TRT85_VERSION)
    builder = trt.Builder(trt_logger(trt))
    parser = trt.OnnxParser(builder.create_network(0), trt_logger(trt))
    assert not parser.parse(onnx_file.read_bytes())
    assert "explicit batch dimension" in parser.get_error(0).desc()
    explicit = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    assert trt.OnnxParser(explicit, trt_logger(trt)).parse(onnx_file.read_bytes())


def test_standin_build_returns_a_buffer_only_host_memory(tmp_path, onnx_file):
    from mambaesr_runtime.artifacts.tensorrt import trt_logger

    trt, _, _ = make_standins(TRT10_VERSION)
    builder = trt.Builder(trt_logger(trt))
    network = builder.create_network(0)
    assert trt.OnnxParser(network, trt_logger(trt)).parse(onnx_file.read_bytes())
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    with pytest.raises(TypeError):
        len(plan)
    with pytest.raises(TypeError):
        plan[:4]
    assert memoryview(plan).nbytes == plan.nbytes and bytes(memoryview(plan)).startswith(_PLAN_MAGIC)
    assert plan.dtype == trt.DataType.UINT8


def test_standin_nptype_raises_type_error_like_tensorrt():
    trt, _, _ = make_standins(TRT10_VERSION)
    assert trt.nptype(trt.DataType.HALF) is np.float16
    with pytest.raises(TypeError, match="Could not resolve TensorRT datatype"):
        trt.nptype(trt.DataType.BF16)


def test_standin_enum_values_are_the_real_ones():
    """Values of ``enum class BuilderFlag`` / ``NetworkDefinitionCreationFlag`` / ``DataType`` in NVIDIA/TensorRT
    include/NvInfer*.h @ release/8.5, release/10.3, release/11.0: they moved between releases."""
    t85, t10, t11 = (make_standins(v)[0] for v in (TRT85_VERSION, TRT10_VERSION, TRT11_VERSION))
    assert (t85.BuilderFlag.FP16, t85.BuilderFlag.GPU_FALLBACK, t85.BuilderFlag.REFIT, t85.BuilderFlag.TF32) == (0, 3, 5, 7)
    assert (t10.BuilderFlag.FP16, t10.BuilderFlag.GPU_FALLBACK, t10.BuilderFlag.REFIT, t10.BuilderFlag.TF32,
            t10.BuilderFlag.BF16) == (0, 3, 4, 6, 17)
    assert (t11.BuilderFlag.GPU_FALLBACK, t11.BuilderFlag.REFIT, t11.BuilderFlag.TF32,
            t11.BuilderFlag.EDITABLE_TIMING_CACHE) == (3, 4, 6, 26)
    assert t85.NetworkDefinitionCreationFlag.EXPLICIT_BATCH == t10.NetworkDefinitionCreationFlag.EXPLICIT_BATCH == 0
    assert (t10.NetworkDefinitionCreationFlag.STRONGLY_TYPED, t11.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == (1, 0)
    assert (t10.DataType.BF16, t10.DataType.INT64, t11.DataType.FP4) == (7, 8, 10) and not hasattr(t85.DataType, "BF16")


def test_standin_create_timing_cache_can_return_none_and_set_timing_cache_refuses_none():
    from mambaesr_runtime.artifacts.tensorrt import trt_logger

    trt, _, rec = make_standins(TRT10_VERSION)
    rec.timing_cache_unreadable = True
    config = trt.Builder(trt_logger(trt)).create_builder_config()
    assert config.create_timing_cache(b"FAKECACHE:3") is None
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_timing_cache(None, False)  # what the old build did with the None


@pytest.mark.parametrize("version", [TRT10_VERSION, TRT11_VERSION])
def test_unreadable_timing_cache_is_replaced_with_a_warning_not_a_type_error(tmp_path, onnx_file, caplog, version):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FAKECACHE:7")
    trt, cuda, rec = make_standins(version)
    rec.timing_cache_unreadable = True
    with caplog.at_level(logging.WARNING):
        info = build_engine(onnx_file, tmp_path / "e.plan", target="10", input_shape=(1, 3, 16, 16),
                            precision="fp16", workspace_mb=256, timing_cache=cache, trt=trt, cuda=cuda)
    assert rec.args("trt.IBuilderConfig.create_timing_cache") == [(b"FAKECACHE:7",), (b"",)]
    assert "could not be read by TensorRT" in caplog.text and "starting a fresh one" in caplog.text
    assert cache.read_bytes() == b"FAKECACHE:1" and info["timing_cache"] == str(cache)  # the fresh cache replaced it
