"""What the TensorRT ONNX parser of each profile target accepts, checked on the ONNX graph before any build.

The ops table is data (``tensorrt_ops.json``), transcribed from onnx-tensorrt's support matrix:

- target ``"8.5"`` (JetPack 5): ``onnx/onnx-tensorrt`` ``docs/operators.md`` @ ``6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc``
  ("TensorRT 8.5 supports operators up to Opset 17"), cross-checked with ``docs/Changelog.md`` @ ``0f305925`` (the
  8.5 GA release commit);
- target ``"10"`` (JetPack 6 / desktop, TensorRT 10.x and 11.x): ``docs/operators.md`` and ``docs/Changelog.md`` @
  ``0137504e2b25fe5253bd85d26b073378fb67805b`` (TensorRT 10.6 GA), minus the ops its changelog adds after 10.0, with
  the opset ceiling of the 10.0 page (``release/10.0``: "opset 9 to opset 20") and the restrictions of the 10.0 GA
  table that later releases lifted, each with the release that lifted it (``before``): Slice ``axes`` as a tensor
  from 10.3, Pad ``axes`` from 10.4, Squeeze/Unsqueeze ``axes`` from 10.7.

Each target has a ``floor``, the oldest release it covers (8.5, 10.0). Where the installed TensorRT is known (building
on the device) the graph is checked against that exact release; elsewhere against the floor, so a graph exported for
``"10"`` parses on every 10.x, including the 10.3 of JetPack 6.1/6.2.

The int64 rule, from the same pages: TensorRT 8.5 "will attempt to cast down INT64 to INT32 ... clamping values to
+-INT_MAX", and until 9.0 "ONNX models with INT64 I/O require INT32 bindings" (Changelog, 9.0 EA). So for 8.5:

- int64 graph inputs/outputs are refused (the engine would expect int32 buffers the runtime never feeds);
- int64 initializers and ``Constant`` values (shape arithmetic: Reshape targets, Slice bounds, Unsqueeze axes) are
  fine, the parser casts them; a value outside int32 is refused unless every consumer is a ``Slice`` start/end, where
  INT64_MAX/MIN mean "to the end" and clamping changes nothing.

TensorRT 10 has native INT64 (Changelog, 9.0 EA), so nothing int64 is refused there; the report still counts it.

The TensorRT targets themselves, the version family of an installed TensorRT and the process's one TensorRT logger
live in :mod:`..artifacts.tensorrt` (torch- and onnx-free: the runtime needs them too).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from functools import lru_cache

import numpy as np

from ..artifacts.tensorrt import TARGETS, tensorrt_family, version_numbers
from ..errors import ConfigError, DependencyError, ExportError
from ..fileio import package_dir

__all__ = ["TARGETS", "check_graph", "load_ops_table", "target_table"]

log = logging.getLogger(__name__)

_DEFAULT_DOMAINS = ("", "ai.onnx")
_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_ONNX_INT64 = 7  # onnx.TensorProto.INT64, kept literal so this module imports without onnx
_SLICE_BOUND_INPUTS = (1, 2)  # Slice(data, starts, ends, axes, steps)
_MAX_NAMES = 8  # node names listed per problem before "+N more"


# --- the ops table ----------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def load_ops_table() -> dict:
    """``tensorrt_ops.json``, parsed once."""
    text = (package_dir(__package__) / "tensorrt_ops.json").read_text()
    return json.loads(text)


def target_table(target: str) -> dict:
    """The ops table of one target; a :class:`ConfigError` listing the valid targets otherwise."""
    targets = load_ops_table()["targets"]
    if str(target) not in targets:
        raise ConfigError(f"TensorRT target {target!r} is unknown; valid targets are {sorted(targets)}")
    return targets[str(target)]


# --- the graph check --------------------------------------------------------------------------------------------------

def _load_model(model_or_path):
    try:
        import onnx
    except ImportError as exc:
        raise DependencyError("checking an ONNX graph needs the onnx package: pip install onnx "
                              "(or pip install -e '.[export]')") from exc
    if isinstance(model_or_path, onnx.ModelProto):
        return onnx, model_or_path, "model"
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
        raise ExportError(f"ONNX file {path} not found; export it first (mambaesr-export or export_onnx)")
    # External weights are irrelevant to the structure we check; leave them on disk.
    return onnx, onnx.load(path, load_external_data=False), os.path.basename(path)


def _walk(graph, scope: str = ""):
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies), with a readable scope prefix."""
    for index, node in enumerate(graph.node):
        yield node, index, scope
        for attr in node.attribute:
            subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subgraphs:
                yield from _walk(sub, f"{scope}{node.name or node.op_type}/{attr.name}/")


def _node_label(node, index: int, scope: str) -> str:
    return f"{scope}{node.name}" if node.name else f"{scope}<unnamed #{index} {node.op_type}>"


def _names(labels: list[str]) -> str:
    shown = ", ".join(labels[:_MAX_NAMES])
    return shown + (f" (+{len(labels) - _MAX_NAMES} more)" if len(labels) > _MAX_NAMES else "")


def _attr_value(onnx, node, name):
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                return value.decode()
            return value
    return None


def _tensor_info(onnx, value_info) -> dict:
    ttype = value_info.type.tensor_type
    dims = []
    for d in ttype.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return {"name": value_info.name, "shape": dims if ttype.HasField("shape") else None,
            "dtype": onnx.TensorProto.DataType.Name(ttype.elem_type).lower(), "elem_type": ttype.elem_type}


def _int64_values(onnx, node_or_tensor):
    """The values of an int64 Constant/initializer (numpy array), or ``None`` when it is not int64."""
    from onnx import numpy_helper

    if isinstance(node_or_tensor, onnx.TensorProto):
        return numpy_helper.to_array(node_or_tensor) if node_or_tensor.data_type == _ONNX_INT64 else None
    for attr in node_or_tensor.attribute:
        if attr.name == "value" and attr.t.data_type == _ONNX_INT64:
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(onnx.helper.get_attribute_value(attr), dtype=np.int64)
    return None


def _qdq_problems(onnx, node, spec: dict, constants: dict) -> list[str]:
    """What a QuantizeLinear/DequantizeLinear node breaks of a ``qdq`` rule (see the table's ``about``)."""
    from onnx import numpy_helper

    def type_name(tensor) -> str:
        return onnx.TensorProto.DataType.Name(tensor.data_type).lower()

    problems = []
    scale = constants.get(node.input[1]) if len(node.input) > 1 else None
    if spec.get("scale") == "positive_constant":
        if scale is None:
            problems.append("`scale` must be an initializer or Constant")
        elif not (numpy_helper.to_array(scale) > 0).all():
            problems.append("`scale` must be positive everywhere")
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero is None:
        if spec.get("zero_point_required"):
            problems.append("`zero_point` must be given (an int8 tensor of zeros)")
    elif zero not in constants:
        problems.append("`zero_point` must be an initializer or Constant")
    else:
        tensor = constants[zero]
        allowed = spec.get("zero_point_types", ())
        if type_name(tensor) not in allowed:
            problems.append(f"`zero_point` is {type_name(tensor)} (supported: {allowed}; TensorRT quantizes to signed "
                            f"types only)")
        elif numpy_helper.to_array(tensor).astype(np.float64).any():
            problems.append("`zero_point` is not all zeros (TensorRT quantizes symmetrically only)")
    x = constants.get(node.input[0])
    if x is not None and "constant_x_types" in spec and type_name(x) not in spec["constant_x_types"]:
        problems.append(f"a constant input of type {type_name(x)} (supported: {spec['constant_x_types']}); keep "
                        f"such values (e.g. a bias) in float")
    return problems


def _rule_applies(rule: dict, version: tuple[int, int]) -> bool:
    """A rule with ``before: "10.3"`` binds only releases older than 10.3."""
    return "before" not in rule or version < version_numbers(rule["before"])


def _ranks(onnx, model) -> dict[str, int]:
    """The rank of every tensor whose shape is known, with ONNX shape inference where the graph does not say."""
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - a graph shape inference cannot follow keeps the ranks it declares
        log.debug("ONNX shape inference failed (%s); using the declared shapes only", exc)
    graph = model.graph
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks


def check_graph(model_or_path, target: str, *, require_static: bool = True, tensorrt_version: str | None = None) -> dict:
    """Check an ONNX graph against what the TensorRT ``target`` parser accepts; return a report, raise on problems.

    ``model_or_path``: an ``onnx.ModelProto`` or a path. ``target``: ``"8.5"`` or ``"10"``. ``require_static``: refuse
    graph inputs/outputs with symbolic or unknown dims (our engines are static; the builder passes ``False`` because it
    pins dynamic dims itself with an optimization profile). ``tensorrt_version``: the installed TensorRT (building on
    the device), whose exact release decides the version-bound restrictions; default: the target's ``floor``, the
    oldest release the target covers.

    The report: ``target``, ``checked_version`` (the release the version-bound rules were applied for), ``opset``, ``ops`` (op -> count, custom domains as ``domain::Op``), ``num_nodes``,
    ``inputs``/``outputs`` (name, shape, dtype), ``static_shapes``, ``int64`` (graph I/O, initializer, Constant and
    Cast-to-int64 counts, out-of-int32 values and whether the parser clamps them) and ``sources`` (the docs it rests
    on). Raises :class:`ExportError` listing every problem found: each unsupported op with its node names, each
    violated restriction, any non-static dim, an opset outside the parser's range, int64 tensors 8.5 cannot take.
    """
    table = target_table(target)
    if tensorrt_version is not None and tensorrt_family(tensorrt_version) != str(target):
        raise ConfigError(f"TensorRT {tensorrt_version} does not belong to target {target!r}; valid targets are "
                          f"{list(TARGETS)} (8.5 = TensorRT 8.5, 10 = TensorRT 10.x and 11.x)")
    checked = str(tensorrt_version) if tensorrt_version is not None else table["floor"]
    version = version_numbers(checked)
    onnx, model, label = _load_model(model_or_path)
    graph = model.graph
    problems: list[str] = []
    source = table["sources"][0]
    where = f"{source['repo']} {source['path']}@{source['ref'][:8]}"

    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    lo, hi = table["opset_min"], table["opset_max"]
    if opset is None:
        problems.append("the graph imports no default-domain opset; re-export it with torch.onnx.export")
    elif opset > hi or (lo is not None and opset < lo):
        span = f"{lo}..{hi}" if lo is not None else f"<= {hi}"
        problems.append(f"opset {opset} is outside what the TensorRT {target} parser reads ({span}); re-export with "
                        f"export_onnx(..., opset={hi})")

    # Names whose value is known at build time: what `const_inputs` restrictions ask for.
    const_names = {t.name for t in graph.initializer}
    constants = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[tuple[object, int]]] = {}
    for node, _, _ in _walk(graph):
        if node.op_type == "Constant":
            const_names.update(node.output)
            value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
            if value is not None:
                constants[node.output[0]] = value
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    graph_outputs = {o.name for o in graph.output}

    counts: Counter = Counter()
    unsupported: dict[str, list[str]] = {}
    violations: dict[tuple[str, str], list[str]] = {}
    ranks = None
    for node, index, scope in _walk(graph):
        domain = node.domain if node.domain not in _DEFAULT_DOMAINS else ""
        key = f"{domain}::{node.op_type}" if domain else node.op_type
        counts[key] += 1
        node_label = _node_label(node, index, scope)
        rule = table["ops"].get(node.op_type) if not domain else None
        if rule is None:
            unsupported.setdefault(key, []).append(node_label)
            continue
        if not _rule_applies(rule, version):
            continue
        for idx, what in rule.get("absent_inputs", {}).items():
            if len(node.input) > int(idx) and node.input[int(idx)]:
                violations.setdefault((node.op_type, f"input `{what}` is unsupported"), []).append(node_label)
        for idx, (low, high) in rule.get("input_rank", {}).items():
            if len(node.input) > int(idx) and node.input[int(idx)]:
                ranks = _ranks(onnx, model) if ranks is None else ranks
                rank = ranks.get(node.input[int(idx)])
                if rank is None or not low <= rank <= high:
                    what = (f"input rank {rank if rank is not None else 'unknown'} "
                            f"(supported: {low}..{high})")
                    violations.setdefault((node.op_type, what), []).append(node_label)
        for idx, what in rule.get("const_inputs", {}).items():
            idx = int(idx)
            if len(node.input) > idx and node.input[idx] and node.input[idx] not in const_names:
                violations.setdefault((node.op_type, f"input `{what}` must be an initializer or Constant"),
                                      []).append(node_label)
        for attr, spec in rule.get("attrs", {}).items():
            value = _attr_value(onnx, node, attr)
            if spec.get("all_ones"):
                bad = value is not None and any(v != 1 for v in value)
            else:
                bad = (spec.get("default") if value is None else value) not in spec["allowed"]
            if bad:
                allowed = "all ones" if spec.get("all_ones") else spec["allowed"]
                violations.setdefault((node.op_type, f"{attr}={value!r} (supported: {allowed})"), []).append(node_label)
        for attr in rule.get("forbidden_attrs", ()):
            if _attr_value(onnx, node, attr) is not None:
                violations.setdefault((node.op_type, f"attribute `{attr}` is unsupported"), []).append(node_label)
        if "qdq" in rule:
            for what in _qdq_problems(onnx, node, rule["qdq"], constants):
                violations.setdefault((node.op_type, what), []).append(node_label)
        if rule.get("only_first_output") and any(o and (o in consumers or o in graph_outputs)
                                                 for o in node.output[1:]):
            violations.setdefault((node.op_type, "only its first output may be used"), []).append(node_label)

    for key, labels in sorted(unsupported.items()):
        if "::" in key:
            problems.append(f"op {key} (nodes: {_names(labels)}) is in a custom domain, which TensorRT only runs "
                            f"through a plugin; export it with standard ONNX ops")
        else:
            note = table["unsupported"].get(key, "not in the parser's support matrix")
            problems.append(f"op {key} (nodes: {_names(labels)}) is not supported by the TensorRT {target} ONNX "
                            f"parser ({where}): {note}")
    for (op, what), labels in sorted(violations.items()):
        problems.append(f"op {op} (nodes: {_names(labels)}): {what}; TensorRT {checked} restriction: "
                        f"{table['ops'][op]['note']}")

    initializer_names = {t.name for t in graph.initializer}
    inputs = [_tensor_info(onnx, v) for v in graph.input if v.name not in initializer_names]
    outputs = [_tensor_info(onnx, v) for v in graph.output]
    static = True
    for kind, infos in (("input", inputs), ("output", outputs)):
        for info in infos:
            shape = info["shape"]
            if shape is None or any(not isinstance(d, int) or d <= 0 for d in shape):
                static = False
                if require_static:
                    problems.append(f"graph {kind} {info['name']!r} has shape {shape}, not static; export with a "
                                    f"fixed tile size (export_onnx(model, path, height, width, batch))")

    casts_to_int64 = sum(1 for n, _, _ in _walk(graph) if n.op_type == "Cast" and _attr_value(onnx, n, "to") == _ONNX_INT64)
    int64_io = [i["name"] for i in inputs + outputs if i["elem_type"] == _ONNX_INT64]
    if int64_io and table["int64"] == "cast_to_int32":
        problems.append(f"graph inputs/outputs {int64_io} are int64: TensorRT {target} casts them to int32 bindings "
                        f"the runtime would feed wrongly; make them float32 (or int32) in the exported model")
    int64_consts = [(t.name, _int64_values(onnx, t)) for t in graph.initializer]
    int64_consts = [(name, v) for name, v in int64_consts if v is not None]
    n_initializers = len(int64_consts)
    for node, _, _ in _walk(graph):
        if node.op_type == "Constant":
            values = _int64_values(onnx, node)
            if values is not None:
                int64_consts.append((node.output[0], values))
    out_of_range, refused = [], []
    for name, values in int64_consts:
        if values.size and (values.min() < _INT32_MIN or values.max() > _INT32_MAX):
            out_of_range.append(name)
            slice_bound_only = all(n.op_type == "Slice" and i in _SLICE_BOUND_INPUTS for n, i in consumers.get(name, []))
            if table["int64"] == "cast_to_int32" and not slice_bound_only:
                refused.append(name)
    if refused:
        problems.append(f"int64 constants {_names(refused)} hold values outside int32, which TensorRT {target} would "
                        f"clamp to +-INT_MAX and change the result; keep shape arithmetic within int32")

    report = {
        "target": str(target), "tensorrt": table["tensorrt"], "checked_version": checked, "opset": opset,
        "ops": dict(sorted(counts.items())),
        "num_nodes": sum(counts.values()), "inputs": [{k: v for k, v in i.items() if k != "elem_type"} for i in inputs],
        "outputs": [{k: v for k, v in o.items() if k != "elem_type"} for o in outputs], "static_shapes": static,
        "int64": {"rule": table["int64"], "graph_io": int64_io, "initializers": n_initializers,
                  "constants": len(int64_consts) - n_initializers, "casts_to_int64": casts_to_int64,
                  "outside_int32": out_of_range},
        "sources": table["sources"],
    }
    if problems:
        raise ExportError(f"{label} cannot be built by TensorRT {checked} (target {target}):\n- " + "\n- ".join(problems))
    log.info("%s passes the TensorRT %s parser check: %d nodes, %d op types, opset %s", label, target,
             report["num_nodes"], len(counts), opset)
    return report
