"""The int8 tier: ONNX Runtime static quantization of a verified fp32 graph (QDQ, per-channel, calibrated on real
crops), its node choice, its parity bar against fp32, the runtime finding it, and the TensorRT side (op table, the
builder's flags per release, the stand-ins). Tiny line-layout models; real image content from the shipped sample."""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np
import onnx
import pytest

from mambaesr_runtime.artifacts.manifest import read_manifest
from mambaesr_runtime.artifacts.names import engine_name, plan_name, shipped_dir
from mambaesr_runtime.backends.onnxruntime import OrtBackend
from mambaesr_runtime.errors import BackendError, ConfigError, ExportError
from mambaesr_runtime.export import int8_onnx, pipeline
from mambaesr_runtime.export.tensorrt_build import build_engine, trtexec_command
from mambaesr_runtime.export.trt_compat import check_graph
from mambaesr_runtime.model.checkpoint import save_checkpoint
from mambaesr_runtime.profiles import Tier, load_profile, profile_from_dict
from mambaesr_runtime.runtime.engines import open_engine
from standins.tensorrt_standin import TRT10_VERSION, TRT11_VERSION, TRT85_VERSION, make_standins
from tinymodels import LINES, untrained

TILE = 24


def make_profile(tiers, precision="fp32", tensorrt=None, name="test-int8"):
    base = load_profile("orin" if tensorrt else "cpu")
    return dataclasses.replace(base, name=name, precision=precision, tensorrt=tensorrt, tiers=tuple(tiers))


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    """Training-like images: the shipped sample (real photo content) at HR size, flipped and cut; two large (LR at
    least a tile), three small (LR below a tile)."""
    folder = tmp_path_factory.mktemp("train")
    lr = cv2.imread(str(shipped_dir().parent / "data" / "sample.png"), cv2.IMREAD_COLOR)
    hr = cv2.resize(lr, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    (folder / "big").mkdir()
    cv2.imwrite(str(folder / "big" / "a.png"), hr)
    cv2.imwrite(str(folder / "big" / "b.png"), hr[::-1, ::-1])
    for i, (y, x) in enumerate([(0, 0), (100, 200), (300, 40)]):
        cv2.imwrite(str(folder / f"small{i}.png"), hr[y:y + 64, x:x + 72])
    return folder


@pytest.fixture(scope="module")
def tiny_lines(tmp_path_factory):
    model = untrained("tiny", **LINES)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_x4.safetensors"
    save_checkpoint(model, path, variant="tiny")
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_lines, calibration_dir):
    """The tiny line model's fp32 and int8 graphs (tier precision int8), exported once for the module."""
    out = tmp_path_factory.mktemp("engines")
    profile = make_profile([Tier("q", "tiny", TILE, 2, 1, "int8")])
    [art] = pipeline.export_profile(profile, out, [tiny_lines], calibration_dir=calibration_dir)
    return profile, out, art


# --- calibration ------------------------------------------------------------------------------------------------------

def test_calibration_sample_is_real_crops_half_padded_deterministic_and_recorded(calibration_dir):
    a = int8_onnx.calibration_sample(calibration_dir, TILE, 4, -1.0, count=4, seed=3)
    b = int8_onnx.calibration_sample(calibration_dir, TILE, 4, -1.0, count=4, seed=3)
    assert a.record["sha256"] == b.record["sha256"] and np.array_equal(a.tiles, b.tiles)
    assert a.tiles.shape == (4, 3, TILE, TILE) and a.tiles.dtype == np.float32
    files = [c[0] for c in a.record["crops"]]
    assert len(set(files)) == 4 and {f.startswith("big/") for f in files} == {True, False}  # large and small images
    for tile, (_, _, _, h, w, padded) in zip(a.tiles, a.record["crops"]):
        assert padded == ((h, w) != (TILE, TILE))
        assert tile[:, :h, :w].min() >= 0 and tile[:, :h, :w].max() <= 1  # the image part is image content
        if padded:  # and the rest is exactly what the runtime pads with
            assert (tile[:, h:] == -1).all() and (tile[:, :, w:] == -1).all()
    assert any(c[5] for c in a.record["crops"])
    other = int8_onnx.calibration_sample(calibration_dir, TILE, 4, -1.0, count=4, seed=4)
    assert other.record["sha256"] != a.record["sha256"]


def test_calibration_without_images_names_the_argument(tmp_path):
    with pytest.raises(ExportError, match="calibration_dir=FOLDER"):
        int8_onnx.calibration_sample(tmp_path / "missing", TILE, 4, -1.0)


# --- the node choice --------------------------------------------------------------------------------------------------

def test_node_choice_keeps_the_scan_the_norm_and_the_output_fp32(exported):
    _, _, art = exported
    pre = onnx.load(str(art.fp32_onnx))
    choice = int8_onnx.choose_nodes(pre)
    by_name = {n.name: n for n in pre.graph.node}
    quantized = set(choice["quantize"])
    convs = [n.name for n in pre.graph.node if n.op_type == "Conv"]
    assert set(choice["roles"]["conv"]) == set(convs) - {"/upsample/Conv"}  # every conv but the output conv
    assert "/upsample/Conv" in choice["fp32"]
    assert {by_name[n].op_type for n in quantized} <= {"Conv", "Add", "Mul", "LeakyRelu", "Resize", "Transpose"}
    assert not any("/mixers." in n and by_name[n].op_type == "Mul" and n.split("/")[-1] != "Mul" for n in quantized)
    # the scan's and norm's nodes: nothing that feeds an Exp, Softplus, MatMul or the norm's reductions
    scan_inputs = {i for n in pre.graph.node if n.op_type in ("Exp", "Softplus", "MatMul", "ReduceMean", "ReduceMax",
                                                              "Gemm", "Sigmoid") for i in n.input}
    assert not [n for n in quantized if set(by_name[n].output) & scan_inputs and by_name[n].op_type != "Conv"]
    # and the quantized graph agrees: Q/DQ pairs only around the chosen nodes
    q = onnx.load(str(art.onnx))
    fed_by_dq = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in q.graph.node:
        if node.op_type in ("Exp", "Softplus", "MatMul", "DepthToSpace", "ReduceMean"):
            assert not set(node.input) & fed_by_dq, node.name
    recorded = art.manifest.verification["int8"]["nodes"]  # made on the pre-processed graph: same nodes
    assert {k: sorted(v) for k, v in recorded.items()} == {k: sorted(v) for k, v in choice["roles"].items()}


def _int8_weights(path):
    """Every int8 initializer that a DequantizeLinear reads (the quantized conv weights)."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    arrays = [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    return [a for a in arrays if a.dtype == np.int8]


@pytest.mark.parametrize("graph", ["exported", "shipped"])
def test_onnxruntime_scheme_weights_are_7_bit_so_cpus_without_vnni_do_not_saturate(exported, graph):
    """x86 without VNNI multiplies u8 activations by s8 weights in pairs summed into a saturating int16: with
    full-range weights (255 x 127 x 2 > 32767) the same graph gives other numbers there (the first shipped graph lost
    0.8 dB on Set5 on such a CPU). 7-bit weights (255 x 64 x 2 = 32640) compute the same integers everywhere."""
    path = exported[2].onnx if graph == "exported" else shipped_dir() / "student_x4_t264_b1_int8.onnx"
    weights = _int8_weights(path)
    assert len(weights) >= 1
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    assert read_manifest(path).verification["int8"]["reduce_range"] is True


# --- the export -------------------------------------------------------------------------------------------------------

def test_int8_export_writes_a_checked_qdq_graph_with_its_manifest(exported):
    _, out, art = exported
    assert art.onnx == out / "tiny_x4_t24_b1_int8.onnx" and art.fp32_onnx == out / "tiny_x4_t24_b1.onnx"
    m = read_manifest(art.onnx)
    assert m == art.manifest and m.precision == "int8" and m.kind == "onnx" and m.tier == "q"
    assert m.pad_value == -1.0 and m.input_shape == (1, 3, TILE, TILE)
    v = m.verification
    assert v["int8_vs_fp32_min_tile_psnr_db"] >= int8_onnx.INT8_MIN_PSNR
    assert v["int8_vs_fp32_padded_tile_psnr_db"] >= int8_onnx.INT8_MIN_PSNR  # the pad-aware path quantized too
    assert "int8_vs_fp32_saturated_tile_psnr_db" in v and v["parity_min_psnr_db"] == 40.0
    info = v["int8"]
    assert info["scheme"] == "onnxruntime" and info["format"] == "QDQ" and info["per_channel"]
    assert info["fp32_onnx_sha256"] == read_manifest(art.fp32_onnx).artifact_sha256
    calib = info["calibration"]
    assert calib["tiles"] == int8_onnx.CALIBRATION_TILES or calib["tiles"] == len(calib["crops"])
    assert calib["crops"] and len(calib["sha256"]) == 64
    assert info["qdq_loss_debug"]["tool"] == "onnxruntime.quantization.qdq_loss_debug"
    assert info["qdq_loss_debug"]["tensors"] > 0
    ops = {n.op_type for n in onnx.load(str(art.onnx)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with OrtBackend(art.onnx, threads=1) as backend:  # the runtime's backend takes it as any engine
        assert backend.pad_value == -1.0 and backend.input_shape == (1, 3, TILE, TILE)


def test_int8_export_is_reused_when_nothing_changed_and_redone_with_force(exported, tiny_lines, calibration_dir):
    profile, out, art = exported
    [again] = pipeline.export_profile(profile, out, [tiny_lines], calibration_dir=calibration_dir)
    assert again.reused and again.manifest == art.manifest
    [forced] = pipeline.export_profile(profile, out, [tiny_lines], calibration_dir=calibration_dir, force=True)
    assert not forced.reused and forced.manifest.build_time >= art.manifest.build_time


def test_an_int8_graph_below_the_bar_is_refused_and_nothing_is_written(tmp_path, tiny_lines, calibration_dir,
                                                                      monkeypatch):
    monkeypatch.setattr(int8_onnx, "check_int8_parity",
                        functools.partial(int8_onnx.check_int8_parity, min_psnr=101.0))  # no int8 graph is that close
    profile = make_profile([Tier("q", "tiny", TILE, 2, 1)])
    with pytest.raises(ExportError, match="only .* dB PSNR from fp32 on real tile .* Nothing was written"):
        pipeline.export_profile(profile, tmp_path, [tiny_lines], precision="int8", calibration_dir=calibration_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_x4_t24_b1.onnx", "tiny_x4_t24_b1.onnx.manifest.json"]


def test_the_saturated_tile_is_recorded_but_only_real_tiles_make_the_bar(exported):
    """A corrupted saturated tile alone does not refuse an int8 graph; a corrupted real tile does."""
    _, _, art = exported
    result = int8_onnx.check_int8_parity(art.onnx, art.fp32_onnx, -1.0, threads=1)
    assert result["parity_rule"].startswith("every real and padded tile")
    assert result["int8_vs_fp32_min_tile_psnr_db"] >= 40


# --- the runtime ------------------------------------------------------------------------------------------------------

def test_the_runtime_opens_the_int8_graph_for_an_int8_tier_or_request(exported):
    profile, out, art = exported
    sel = open_engine(profile, profile.tiers[0], engines_dir=out)
    assert sel.path == art.onnx and sel.precision == "int8" and sel.kind == "onnxruntime"
    sel.backend.close()
    fp32_tier = dataclasses.replace(profile.tiers[0], precision=None)
    sel = open_engine(profile, fp32_tier, engines_dir=out)
    assert sel.path == art.fp32_onnx and sel.precision == "fp32"
    sel.backend.close()
    sel = open_engine(profile, fp32_tier, backend="onnxruntime", precision="int8", engines_dir=out)
    assert sel.path == art.onnx
    sel.backend.close()
    with pytest.raises(ConfigError, match="precision fp16 needs the tensorrt backend"):
        open_engine(profile, fp32_tier, backend="onnxruntime", precision="fp16", engines_dir=out)
    with pytest.raises(ConfigError, match="QDQ ONNX graphs"):
        open_engine(profile, fp32_tier, backend="torch", precision="int8", engines_dir=out)


def test_a_missing_int8_engine_is_an_error_naming_the_export_command(tmp_path):
    profile = make_profile([Tier("q", "tiny", TILE, 2, 1, "int8")])
    with pytest.raises(BackendError, match=r"tiny_x4_t24_b1_int8\.onnx.*mambaesr-export --device test-int8 "
                                           r"--precision int8"):
        open_engine(profile, profile.tiers[0], engines_dir=tmp_path)


def test_int8_tier_output_is_close_to_fp32_through_the_tiler(exported):
    from mambaesr_runtime.runtime.upscaler import Upscaler

    profile, out, _ = exported
    img = (np.random.default_rng(2).random((30, 20, 3)) * 255).astype(np.uint8)  # smaller than the tile: padded
    with Upscaler(profile, engines_dir=out, threads=1) as q8, \
            Upscaler(profile, engines_dir=out, threads=1, precision="fp32") as fp32:
        assert "int8" in q8.describe() and "fp32" in fp32.describe()
        a, b = q8.upscale(img).astype(float), fp32.upscale(img).astype(float)
    assert a.shape == b.shape == (120, 80, 3)
    assert 10 * np.log10(255 ** 2 / np.mean((a - b) ** 2)) > 35


# --- profiles and names -----------------------------------------------------------------------------------------------

def test_profiles_cpu_and_rpi5_have_an_int8_tier_and_a_tier_precision_is_validated():
    for name in ("cpu", "rpi5"):
        tiers = {t.name: t for t in load_profile(name).tiers}
        assert tiers["int8"].precision == "int8" and tiers["int8"].variant == "student"
        assert list(tiers) == ["balanced", "int8", "light"]  # heaviest to lightest
    data = {**_profile_dict("cpu")}
    data["tiers"] = [{"name": "x", "variant": "student", "tile": 64, "overlap": 4, "batch": 1, "precision": "int4"}]
    with pytest.raises(ConfigError, match=r"precision is 'int4'; valid values are \['fp32', 'fp16', 'int8'\]"):
        profile_from_dict(data)


def _profile_dict(name):
    import yaml

    from mambaesr_runtime.fileio import package_dir

    return yaml.safe_load((package_dir("mambaesr_runtime.profiles_data") / f"{name}.yaml").read_text())


def test_int8_artifact_names():
    assert engine_name("onnxruntime", "student", 4, 264, 1, "int8") == "student_x4_t264_b1_int8.onnx"
    assert engine_name("onnxruntime", "student", 4, 264, 1) == "student_x4_t264_b1.onnx"
    assert engine_name("tensorrt", "student", 4, 64, 8, "int8") == "student_x4_t64_b8_int8.plan"
    assert plan_name("e/student_x4_t64_b8_int8.onnx", "int8").name == "student_x4_t64_b8_int8.plan"
    assert plan_name("e/student_x4_t64_b8_int8.onnx", "int8", 0).name == "student_x4_t64_b8_int8_dla0.plan"


# --- TensorRT ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trt_int8(tmp_path_factory, exported, calibration_dir):
    """The tiny model's int8 graph in TensorRT's scheme (symmetric int8, float bias) beside its ORT-scheme one."""
    _, _, art = exported
    out = tmp_path_factory.mktemp("trt") / "tiny_x4_t24_b1_int8.onnx"
    sample = int8_onnx.calibration_sample(calibration_dir, TILE, 4, -1.0, count=4)
    info = int8_onnx.quantize_int8(art.fp32_onnx, out, sample, scheme="tensorrt")
    assert info["symmetric_activations"] and not info["quantize_bias"] and not info["reduce_range"]
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in _int8_weights(out)) == 127  # TensorRT: full range
    return art, out


@pytest.mark.parametrize("target", ["8.5", "10"])
def test_op_table_accepts_tensorrts_qdq_scheme_and_names_what_it_refuses_in_onnxruntimes(trt_int8, target):
    art, trt_graph = trt_int8
    report = check_graph(trt_graph, target)
    assert report["ops"]["QuantizeLinear"] > 0 and report["ops"]["DequantizeLinear"] > 0
    with pytest.raises(ExportError) as refused:  # ONNX Runtime's scheme: uint8 zero points, int32 bias
        check_graph(art.onnx, target)
    text = str(refused.value)
    assert "`zero_point` is uint8" in text and "TensorRT quantizes to signed types only" in text
    assert "a constant input of type int32" in text


def test_op_table_refuses_a_nonzero_int8_zero_point_and_a_missing_one_on_85(trt_int8, tmp_path):
    _, trt_graph = trt_int8
    model = onnx.load(str(trt_graph))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    zp = next(t for t in model.graph.initializer if t.name == q.input[2])
    zp.CopyFrom(onnx.numpy_helper.from_array(np.array(3, np.int8), zp.name))
    with pytest.raises(ExportError, match="`zero_point` is not all zeros"):
        check_graph(model, "10")
    del q.input[2]
    with pytest.raises(ExportError, match="`zero_point` must be given"):
        check_graph(model, "8.5")


@pytest.mark.parametrize("version, target, flags", [(TRT85_VERSION, "8.5", ["INT8", "FP16"]),
                                                    (TRT10_VERSION, "10", ["INT8", "FP16"]),
                                                    (TRT11_VERSION, "10", [])])
def test_int8_plan_is_built_from_the_qdq_graph_with_what_each_release_needs(tmp_path, trt_int8, version, target,
                                                                            flags):
    _, trt_graph = trt_int8
    trt, cuda, rec = make_standins(version)
    info = build_engine(trt_graph, tmp_path / "e.plan", target=target, input_shape=(1, 3, TILE, TILE),
                        precision="int8", workspace_mb=256, trt=trt, cuda=cuda)
    assert [a[0] for a in rec.args("trt.IBuilderConfig.set_flag")] == flags
    assert info["precision"] == "int8" and (tmp_path / "e.plan").is_file()
    assert b'"precision": "int8+' in (tmp_path / "e.plan").read_bytes()  # the Q/DQ layers run int8
    assert not [n for n in rec.names() if "calibrat" in n.lower()]  # explicit quantization: no calibrator


def test_int8_without_a_qdq_graph_is_refused_before_the_build(tmp_path, exported):
    _, _, art = exported
    trt, cuda, rec = make_standins(TRT10_VERSION)
    with pytest.raises(ExportError, match="no QuantizeLinear/DequantizeLinear.*implicit calibration"):
        build_engine(art.fp32_onnx, tmp_path / "e.plan", target="10", input_shape=(1, 3, TILE, TILE),
                     precision="int8", workspace_mb=256, trt=trt, cuda=cuda)
    assert "trt.Builder.build_serialized_network" not in rec.names()


def test_standins_reject_what_tensorrt_rejects_in_qdq_graphs(tmp_path, trt_int8):
    art, trt_graph = trt_int8
    from mambaesr_runtime.artifacts.tensorrt import trt_logger

    for version, target in ((TRT85_VERSION, "8.5"), (TRT10_VERSION, "10")):
        trt, cuda, rec = make_standins(version)  # ORT's scheme (zero points of 128): the parser refuses it
        with pytest.raises(ExportError, match="TensorRT only supports symmetric quantization"):
            build_engine(art.onnx, tmp_path / "a.plan", target=target, input_shape=(1, 3, TILE, TILE),
                         precision="fp16", workspace_mb=256, trt=trt, cuda=cuda, precheck=False)
        trt, cuda, rec = make_standins(version)  # a QDQ network built weakly typed without INT8
        builder = trt.Builder(trt_logger(trt))
        legacy = version.startswith("8")
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if legacy else 0)
        assert trt.OnnxParser(network, trt_logger(trt)).parse(trt_graph.read_bytes())
        assert builder.build_serialized_network(network, builder.create_builder_config()) is None
        assert any("int8 is not configured" in m for _, m in rec.logged)
    trt, _, _ = make_standins(TRT11_VERSION)
    assert not hasattr(trt.BuilderFlag, "INT8")


def test_trtexec_int8_command_uses_the_qdq_graph_scales():
    command = trtexec_command("m_int8.onnx", "m_int8.plan", target="10", input_shape=(8, 3, 64, 64),
                              precision="int8", workspace_mb=1024)
    assert command == "trtexec --onnx=m_int8.onnx --saveEngine=m_int8.plan --memPoolSize=workspace:1024M --int8 --fp16"
    assert "calib" not in command


def test_tensorrt_profile_int8_tier_exports_the_tensorrt_scheme_and_builds_a_checked_plan(tmp_path, tiny_lines,
                                                                                          calibration_dir):
    trt, cuda, _ = make_standins(TRT10_VERSION)
    profile = make_profile([Tier("q", "tiny", TILE, 2, 1, "int8")], precision="fp16", tensorrt="10")
    [art] = pipeline.export_profile(profile, tmp_path, [tiny_lines], calibration_dir=calibration_dir, trt=trt,
                                    cuda=cuda)
    assert art.manifest.verification["int8"]["scheme"] == "tensorrt"
    assert art.manifest.verification["tensorrt_compat"]["ok"]
    assert art.plan == tmp_path / "tiny_x4_t24_b1_int8.plan" and art.plan_manifest.precision == "int8"
    v = art.plan_manifest.verification
    assert v["plan_vs_ort_min_tile_psnr_db"] >= 40 and v["parity_rule"].startswith("every real and padded tile")
    assert "trtexec" in art.trtexec and "--int8" in art.trtexec
