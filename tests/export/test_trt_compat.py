"""The TensorRT op check: the real exported model passes both targets; what a target's parser cannot take is refused
with the op, the node names and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mambaesr_runtime.errors import ConfigError, ExportError
from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.export.trt_compat import (
    TARGETS,
    check_graph,
    load_ops_table,
    target_table,
)
from tinymodels import untrained


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    return export_onnx(untrained("tiny"), tmp_path_factory.mktemp("tiny") / "tiny.onnx", 16, 16)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _io(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.mark.parametrize("target", TARGETS)
def test_real_tiny_export_passes_every_target(tiny_onnx, target):
    report = check_graph(tiny_onnx, target)
    assert report["target"] == target and report["opset"] == 17
    assert report["static_shapes"]
    assert report["inputs"] == [{"name": "lr", "shape": [1, 3, 16, 16], "dtype": "float"}]
    assert report["outputs"][0]["shape"] == [1, 3, 64, 64]
    assert report["ops"]["Conv"] >= 1 and report["num_nodes"] == sum(report["ops"].values())
    assert not {"Loop", "Scan", "If"} & set(report["ops"])
    # Shape arithmetic is int64 in torch exports; only Slice "to the end" bounds exceed int32, which 8.5 may clamp.
    assert report["int64"]["graph_io"] == [] and report["int64"]["constants"] > 0
    assert report["sources"][0]["repo"] == "onnx/onnx-tensorrt"


def test_unsupported_op_is_named_with_its_nodes():
    x = _io("x", [1, 8, 4, 4])
    scale = numpy_helper.from_array(np.ones(4, np.float32), "gamma")
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma"], ["y"], name="blocks.0/norm", axis=-1),
             helper.make_node("Relu", ["y"], ["z"], name="act")]
    model = _model(nodes, [x], [_io("z", [1, 8, 4, 4])], [scale])
    with pytest.raises(ExportError) as err:
        check_graph(model, "8.5")
    message = str(err.value)
    assert "LayerNormalization" in message and "blocks.0/norm" in message
    assert "ReduceMean" in message  # the fix: decompose the norm
    assert "Relu" not in message
    assert check_graph(model, "10")["ops"] == {"LayerNormalization": 1, "Relu": 1}  # native in TensorRT 10


def test_unknown_and_custom_domain_ops_list_every_node():
    nodes = [helper.make_node("Frobnicate", ["x"], ["a"], name="first"),
             helper.make_node("Frobnicate", ["a"], ["b"], name="second"),
             helper.make_node("FusedConv", ["b"], ["y"], name="fused", domain="com.microsoft")]
    model = _model(nodes, [_io("x", [1, 3, 4, 4])], [_io("y", [1, 3, 4, 4])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for target in TARGETS:
        with pytest.raises(ExportError) as err:
            check_graph(model, target)
        message = str(err.value)
        assert "Frobnicate (nodes: first, second)" in message
        assert "com.microsoft::FusedConv" in message and "fused" in message and "plugin" in message


def test_dynamic_dims_are_refused_unless_allowed():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_io("x", ["batch", 3, 16, 16])],
                   [_io("y", ["batch", 3, 16, 16])])
    with pytest.raises(ExportError, match=r"graph input 'x' has shape \['batch', 3, 16, 16\], not static"):
        check_graph(model, "10")
    assert check_graph(model, "10", require_static=False)["static_shapes"] is False


def test_int64_graph_input_is_refused_for_85_only():
    nodes = [helper.make_node("Cast", ["idx"], ["f"], name="to_float", to=TensorProto.FLOAT)]
    model = _model(nodes, [_io("idx", [1, 4], TensorProto.INT64)], [_io("f", [1, 4])])
    with pytest.raises(ExportError, match=r"graph inputs/outputs \['idx'\] are int64"):
        check_graph(model, "8.5")
    assert check_graph(model, "10")["int64"]["graph_io"] == ["idx"]  # native int64 in 10.x


def test_int64_constant_outside_int32_is_refused_for_85_unless_a_slice_bound():
    big = helper.make_node("Constant", [], ["big"], name="big", value=helper.make_tensor("v", TensorProto.INT64, [1],
                                                                                       [2 ** 40]))
    shape = helper.make_node("Shape", ["x"], ["s"], name="shape")
    add = helper.make_node("Add", ["s", "big"], ["t"], name="add")
    model = _model([big, shape, add], [_io("x", [1, 3, 4, 4])], [_io("t", [4], TensorProto.INT64)])
    with pytest.raises(ExportError, match="big .*outside int32"):
        check_graph(model, "8.5")

    start = helper.make_node("Constant", [], ["start"], value=helper.make_tensor("s0", TensorProto.INT64, [1], [1]))
    end = helper.make_node("Constant", [], ["end"], value=helper.make_tensor("e0", TensorProto.INT64, [1],
                                                                            [2 ** 63 - 1]))
    axes = helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a0", TensorProto.INT64, [1], [1]))
    sl = helper.make_node("Slice", ["x", "start", "end", "axes"], ["y"], name="slice")
    model = _model([start, end, axes, sl], [_io("x", [1, 3, 4, 4])], [_io("y", [1, 2, 4, 4])])
    report = check_graph(model, "8.5")  # INT64_MAX as a Slice end means "to the end": clamping changes nothing
    assert report["int64"]["outside_int32"] == ["end"] and report["int64"]["constants"] == 3


@pytest.mark.parametrize("target, ok, bad", [("8.5", 17, 18), ("10", 20, 21)])
def test_opset_above_the_parser_is_refused(target, ok, bad):
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    assert check_graph(_model([relu], [_io("x", [1, 3, 4, 4])], [_io("y", [1, 3, 4, 4])], opset=ok), target)
    with pytest.raises(ExportError, match=f"opset {bad} is outside .* re-export with export_onnx\\(..., opset={ok}\\)"):
        check_graph(_model([relu], [_io("x", [1, 3, 4, 4])], [_io("y", [1, 3, 4, 4])], opset=bad), target)


def test_restricted_attributes_and_constant_inputs():
    roi = helper.make_node("Constant", [], ["scales"], value=helper.make_tensor("sc", TensorProto.FLOAT, [4],
                                                                              [1, 1, 2, 2]))
    resize = helper.make_node("Resize", ["x", "", "scales"], ["up"], name="upsample", mode="cubic")
    cumsum = helper.make_node("CumSum", ["up", "axis"], ["y"], name="scan/cumsum")
    model = _model([roi, resize, cumsum], [_io("x", [1, 3, 4, 4]), _io("axis", [], TensorProto.INT32)],
                   [_io("y", [1, 3, 8, 8])])
    for target in TARGETS:
        with pytest.raises(ExportError) as err:
            check_graph(model, target)
        message = str(err.value)
        assert "Resize (nodes: upsample): mode='cubic'" in message and "nearest" in message
        assert "CumSum (nodes: scan/cumsum): input `axis` must be an initializer or Constant" in message


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"valid targets are \['10', '8.5'\]"):
        target_table("9")


def test_ops_table_is_data_with_its_sources():
    table = load_ops_table()["targets"]
    assert set(table) == set(TARGETS)
    for target in TARGETS:
        for source in table[target]["sources"]:
            assert source["repo"] == "onnx/onnx-tensorrt" and source["ref"]
            assert source["path"].startswith("docs/") or source["path"].endswith(".cpp")
    assert (table["8.5"]["opset_max"], table["10"]["opset_max"]) == (17, 20)
    assert "LayerNormalization" not in table["8.5"]["ops"] and "LayerNormalization" in table["10"]["ops"]
    assert {"Mod", "Trilu", "CumSum", "MatMul", "Einsum"} <= set(table["8.5"]["ops"]) & set(table["10"]["ops"])
    assert table["8.5"]["int64"] == "cast_to_int32" and table["10"]["int64"] == "native"


# --- version-bound restrictions: what 10.0-10.3 and 8.5 parse --------------------------------------------------------

def _slice_with_tensor_axes():
    """Slice whose `axes` input is computed (Shape -> Gather), not an initializer or Constant."""
    consts = [helper.make_node("Constant", [], [n], value=helper.make_tensor(n, TensorProto.INT64, [1], [v]))
              for n, v in (("starts", 0), ("ends", 2), ("idx", 0))]
    nodes = consts + [helper.make_node("Shape", ["ax"], ["ax_shape"], name="shape"),
                      helper.make_node("Gather", ["ax_shape", "idx"], ["axes"], name="gather"),
                      helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="blocks.0/slice")]
    return _model(nodes, [_io("x", [1, 3, 4, 4]), _io("ax", [1])], [_io("y", [1, 3, 2, 4])])


def _pad_with_tensor_axes(opset=18):
    consts = [helper.make_node("Constant", [], ["pads"], value=helper.make_tensor("p", TensorProto.INT64, [2],
                                                                                  [1, 1]))]
    nodes = consts + [helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="blocks.0/pad")]
    return _model(nodes, [_io("x", [1, 3, 4, 4]), _io("axes", [1], TensorProto.INT64)], [_io("y", [1, 3, 4, 6])],
                  opset=opset)


@pytest.mark.parametrize("version, ok", [(None, False), ("10.2.0.19", False), ("10.3.0.30", True),
                                         ("11.1.0.106", True)])
def test_slice_axes_must_be_constant_before_10_3(version, ok):
    """onnx-tensorrt 10.0 GA table: Slice `axes` must be an initializer; Changelog 10.3 GA lifts it. Without a version
    the target's floor (10.0) decides, so an exported graph parses on every 10.x."""
    model = _slice_with_tensor_axes()
    if ok:
        assert check_graph(model, "10", tensorrt_version=version)["checked_version"] == version
    else:
        with pytest.raises(ExportError, match=r"Slice \(nodes: blocks.0/slice\): input `axes` must be an initializer"):
            check_graph(model, "10", tensorrt_version=version)


@pytest.mark.parametrize("version, ok", [("10.3.0.30", False), ("10.4.0.26", True)])
def test_pad_axes_must_be_constant_before_10_4(version, ok):
    """JetPack 6.1/6.2 ship 10.3, which still needs Pad `axes` as an initializer (lifted in 10.4 GA)."""
    model = _pad_with_tensor_axes()
    if ok:
        check_graph(model, "10", tensorrt_version=version)
    else:
        with pytest.raises(ExportError, match=r"(?s)TensorRT 10.3.0.30 .*Pad \(nodes: blocks.0/pad\): input `axes` must "
                                              r"be an initializer"):
            check_graph(model, "10", tensorrt_version=version)


def test_pad_axes_are_refused_altogether_by_85():
    with pytest.raises(ExportError, match=r"Pad \(nodes: blocks.0/pad\): input `axes` is unsupported"):
        check_graph(_pad_with_tensor_axes(opset=17), "8.5")


def test_reduce_sum_axes_must_be_constant_for_85():
    consts = helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1]))
    nodes = [consts, helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "one"], ["axes"], name="gather", axis=0),
             helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="blocks.0/sum", keepdims=1)]
    model = _model(nodes, [_io("x", [1, 3, 4, 4])], [_io("y", [1, 1, 4, 4])])
    with pytest.raises(ExportError, match=r"ReduceSum \(nodes: blocks.0/sum\): input `axes` must be an initializer"):
        check_graph(model, "8.5")
    const_axes = _model([consts, helper.make_node("ReduceSum", ["x", "one"], ["y"], name="sum", keepdims=1)],
                        [_io("x", [1, 3, 4, 4])], [_io("y", [1, 1, 4, 4])])
    assert check_graph(const_axes, "8.5")["ops"] == {"Constant": 1, "ReduceSum": 1}


@pytest.mark.parametrize("rank, ok_85", [(2, True), (3, True), (4, False)])
def test_trilu_rank_is_2_or_3_for_85(rank, ok_85):
    shape = [4] * rank
    model = _model([helper.make_node("Trilu", ["x"], ["y"], name="mask")], [_io("x", shape)], [_io("y", shape)])
    assert check_graph(model, "10")  # N-D Trilu from 8.6
    if ok_85:
        check_graph(model, "8.5")
    else:
        with pytest.raises(ExportError, match=r"Trilu \(nodes: mask\): input rank 4 \(supported: 2..3\)"):
            check_graph(model, "8.5")


def test_trilu_rank_is_found_by_shape_inference_inside_the_graph():
    nodes = [helper.make_node("Unsqueeze", ["x", "zero"], ["x4"], name="unsq"),
             helper.make_node("Trilu", ["x4"], ["y"], name="mask")]
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    model = _model(nodes, [_io("x", [2, 4, 4])], [_io("y", [1, 2, 4, 4])], [zero])
    with pytest.raises(ExportError, match=r"Trilu \(nodes: mask\): input rank 4"):
        check_graph(model, "8.5")


def test_a_version_of_another_family_is_refused():
    relu = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_io("x", [1, 3, 4, 4])], [_io("y", [1, 3, 4, 4])])
    with pytest.raises(ConfigError, match="TensorRT 8.5.2.2 does not belong to target '10'"):
        check_graph(relu, "10", tensorrt_version="8.5.2.2")
    assert check_graph(relu, "8.5")["checked_version"] == "8.5"
    assert check_graph(relu, "10")["checked_version"] == "10.0"


def test_every_version_bound_row_names_its_release_and_floor():
    for target, table in load_ops_table()["targets"].items():
        assert table["floor"].startswith(target.split(".")[0])
        for op, rule in table["ops"].items():
            if "before" in rule:
                assert rule["before"] in rule["note"], op  # the note says which release lifted it
    ops10 = load_ops_table()["targets"]["10"]["ops"]
    assert (ops10["Slice"]["before"], ops10["Pad"]["before"], ops10["Squeeze"]["before"]) == ("10.3", "10.4", "10.7")
