"""Export the reference model to ONNX with a static input shape (wraps the one model definition; never copies it)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import ExportError, require_torch
from ..fileio import atomic_write

#: Opset 17: the newest that TensorRT 8.5 (JetPack 5) parses, and fully supported by TensorRT 10 and ONNX Runtime.
DEFAULT_OPSET = 17
#: Graph ops that must never appear: control flow would make shapes data-dependent or hide a Python loop, and
#: TensorRT's ONNX parsers before 10.8 (every JetPack 5 and JetPack 6.1/6.2 board) import ``CumSum`` as a
#: sequential loop, which is slow and cannot run on a DLA (the scan writes prefix sums as matmuls instead).
FORBIDDEN_OPS = frozenset({"Loop", "Scan", "If", "CumSum"})


def forbidden_ops(graph) -> list[str]:
    """The :data:`FORBIDDEN_OPS` in an ``onnx.ModelProto``'s main graph, sorted (empty when it is clean)."""
    return sorted({node.op_type for node in graph.graph.node} & FORBIDDEN_OPS)
INPUT_NAME, OUTPUT_NAME = "lr", "sr"


def export_onnx(model, path: str | os.PathLike, height: int, width: int, batch: int = 1,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (a ``MambaESR``) to ``path`` as ONNX for input ``(batch, 3, height, width)``; return the path.

    The file is written to a temporary name beside ``path`` and renamed, so an interrupted export leaves nothing.
    Raises :class:`ExportError` if the graph contains a forbidden control-flow op.
    """
    torch = require_torch()
    import onnx

    path = Path(path)
    model = model.eval()
    dummy = torch.rand(batch, model.cfg.in_channels, height, width)

    def write(tmp):
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated in favour of torch.export, but it is the one that emits
            # opset 17 directly with static shapes and constant folding, which TensorRT 8.5 needs.
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), tmp, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)
        bad = forbidden_ops(onnx.load(tmp))
        if bad:
            raise ExportError(f"exported graph contains {bad}, which TensorRT runs as loops (or not at all); the "
                              f"model must export to plain ops")

    atomic_write(path, write, suffix=".onnx")
    return path
