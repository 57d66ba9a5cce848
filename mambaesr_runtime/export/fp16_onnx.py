"""An fp32 ONNX graph as the same graph computing in fp16, with float32 input and output: what a strongly typed
TensorRT network needs to build an fp16 engine.

TensorRT 11 removed weak typing: ``BuilderFlag.FP16`` and ``Builder.platform_has_fast_fp16`` are gone and every
network is strongly typed, so an engine computes in the types the ONNX graph declares ("Migrating from TensorRT 10.x
to 11.x", docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html,
whose recipe is ModelOpt AutoCast with ``keep_io_types=True``; NVIDIA/TensorRT ``include/NvInfer.h`` @ release/11.0,
``NetworkDefinitionCreationFlag::kSTRONGLY_TYPED``: "Strongly typed mode is always enabled"). This module is that
conversion for our graphs, without a new dependency: every float32 initializer and ``Constant`` becomes float16,
``Cast`` to float becomes ``Cast`` to float16, and a ``Cast`` after the input and before the output keeps the engine's
I/O float32 (the runtime feeds and reads float32 buffers). The result is type-checked by ONNX's strict shape and type
inference; the engine built from it still has to pass the build-time parity check against ONNX Runtime fp32.

Needs the ``onnx`` package (imported when called); no torch.
"""

from __future__ import annotations

import numpy as np

from ..errors import DependencyError, ExportError

__all__ = ["FP16_MAX", "convert_to_fp16", "load_onnx"]

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
#: Inputs ONNX types as float32 only (``tensor(float)``), whatever the data type: left as they are.
_FLOAT32_ONLY_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
_SUFFIX = "__fp16"


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise DependencyError("building an fp16 engine with TensorRT 11 (strongly typed networks) converts the ONNX "
                              "graph to fp16 first, which needs the onnx package: pip install onnx") from exc
    return onnx


def load_onnx(path):
    """``onnx.load(path)``, or a :class:`DependencyError` saying why onnx is needed here."""
    return _onnx().load(str(path))


def _to_half(onnx, tensor, where: str):
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > FP16_MAX:
        raise ExportError(f"{where} holds values up to {float(np.abs(finite).max()):.4g}, beyond float16's "
                          f"{FP16_MAX:g}: this graph cannot be built strongly typed in fp16; build it with precision "
                          f"fp32 (a profile with precision: fp32)")
    return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def convert_to_fp16(model):
    """A converted copy of ``model`` (an ``onnx.ModelProto`` computing in float32): float16 inside, float32 at its
    inputs and outputs. Raises :class:`ExportError` for a graph this conversion cannot express (subgraphs, values
    beyond the float16 range, a type error found by ONNX's strict type inference)."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    keep = set()  # initializer / Constant outputs that feed a float32-only input
    for node in graph.node:
        for index in _FLOAT32_ONLY_INPUTS.get(node.op_type, ()):
            if len(node.input) > index and node.input[index]:
                keep.add(node.input[index])
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ExportError(f"node {node.name or node.op_type} has a subgraph; the fp16 conversion handles flat "
                                  f"graphs only (MambaESR graphs have no control flow)")

    for i, init in enumerate(graph.initializer):
        if init.data_type == FLOAT and init.name not in keep:
            graph.initializer[i].CopyFrom(_to_half(onnx, init, f"initializer {init.name!r}"))
    for node in graph.node:
        label = node.name or node.op_type
        if node.op_type in ("Constant", "ConstantOfShape") and not (set(node.output) & keep):
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(_to_half(onnx, attr.t, f"{node.op_type} {label}"))
                elif attr.name in ("value_float", "value_floats"):
                    values = np.asarray(onnx.helper.get_attribute_value(attr), np.float32)
                    tensor = onnx.numpy_helper.from_array(values, "value")
                    node.attribute.remove(attr)
                    node.attribute.append(helper.make_attribute("value", _to_half(onnx, tensor, label)))
                    break
        elif node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF

    # float32 at the edges: Cast after each float input, before each float output.
    head, tail = [], []
    renamed = {}
    for value in graph.input:
        if value.type.tensor_type.elem_type == FLOAT and value.name not in {t.name for t in graph.initializer}:
            renamed[value.name] = value.name + _SUFFIX
            head.append(helper.make_node("Cast", [value.name], [value.name + _SUFFIX], name=f"{value.name}/to_fp16",
                                         to=HALF))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for value in graph.output:
        if value.type.tensor_type.elem_type == FLOAT:
            internal = value.name + _SUFFIX
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == value.name:
                        node.output[i] = internal
                for i, name in enumerate(node.input):  # an output also read inside the graph
                    if name == value.name:
                        node.input[i] = internal
            tail.append(helper.make_node("Cast", [internal], [value.name], name=f"{value.name}/to_fp32", to=FLOAT))
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # element types changed; inferred again below

    try:
        inferred = onnx.shape_inference.infer_shapes(converted, check_type=True, strict_mode=True)
        onnx.checker.check_model(inferred)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the fp16 version of this graph does not type-check ({exc}); build it with precision "
                          f"fp32") from exc
    return inferred
