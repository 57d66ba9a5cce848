"""The fp16 conversion TensorRT 11's strongly typed fp16 engines are built from: float16 inside, float32 I/O, the
same function (checked in ONNX Runtime on real tiles), and refusals for what it cannot express."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mambaesr_runtime.artifacts.names import shipped_dir
from mambaesr_runtime.errors import ExportError
from mambaesr_runtime.export.fp16_onnx import convert_to_fp16
from mambaesr_runtime.export.parity import real_tiles


def _run(model, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_shipped_fast_model_converts_with_float32_io_and_computes_the_same():
    model = onnx.load(shipped_dir() / "fast_x4_t264_b1.onnx")
    half = convert_to_fp16(model)
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TensorProto.FLOAT]
    assert [i.name for i in half.graph.input] == ["lr"] and [o.name for o in half.graph.output] == ["sr"]
    floats = {t.data_type for t in half.graph.initializer} & {TensorProto.FLOAT, TensorProto.FLOAT16}
    assert floats == {TensorProto.FLOAT16}
    onnx.checker.check_model(half, full_check=True)
    x = real_tiles(264, 1)
    a, b = _run(model, x), _run(half, x)
    assert b.dtype == np.float32 and b.shape == a.shape
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    assert 10 * np.log10(1 / mse) > 40  # ONNX Runtime's CPU kernels: the graph is right, fp16 accuracy is not shown


def _graph(nodes, initializers, out_shape=(1, 1, 2, 2), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_values_beyond_fp16_are_refused():
    big = numpy_helper.from_array(np.array([1e6], np.float32), "big")
    with pytest.raises(ExportError, match="initializer 'big' holds values up to 1e\\+06, beyond float16's 65504"):
        convert_to_fp16(_graph([helper.make_node("Mul", ["x", "big"], ["y"])], [big]))


def test_constants_and_casts_become_fp16_and_resize_scales_stay_float32():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Constant", [], ["two"], value_float=2.0),
             helper.make_node("Mul", ["x", "two"], ["m"]),
             helper.make_node("Cast", ["m"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest")]
    half = convert_to_fp16(_graph(nodes, [scales], out_shape=(1, 1, 4, 4)))
    types = {t.name: t.data_type for t in half.graph.initializer}
    assert types["scales"] == TensorProto.FLOAT  # Resize takes its scales as tensor(float) only
    cast = next(n for n in half.graph.node if n.name == "" and n.op_type == "Cast")
    assert cast.attribute[0].i == TensorProto.FLOAT16
    const = next(n for n in half.graph.node if n.op_type == "Constant")
    assert const.attribute[0].name == "value" and const.attribute[0].t.data_type == TensorProto.FLOAT16
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(_run(half, x), (2 * x).repeat(2, 2).repeat(2, 3))


def test_graphs_with_subgraphs_are_refused():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, 2, 2])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=branch, else_branch=branch)
    with pytest.raises(ExportError, match="branchy has a subgraph"):
        convert_to_fp16(_graph([node], [cond]))
