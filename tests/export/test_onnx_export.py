"""ONNX export: plain static graphs that ONNX Runtime runs to within 1e-4 of PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from mambaesr_runtime.export.onnx_export import FORBIDDEN_OPS, export_onnx
from mambaesr_runtime.export.parity import compare_with_torch
from mambaesr_runtime.model.config import variant
from mambaesr_runtime.model.net import build_model


def _image(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("h, w, batch", [(16, 16, 1), (13, 21, 2), (1, 1, 1)])
def test_tiny_exports_and_matches_torch(tmp_path, h, w, batch):
    torch.manual_seed(0)
    model = build_model(variant("tiny")).eval()
    path = export_onnx(model, tmp_path / "tiny.onnx", h, w, batch=batch)
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & FORBIDDEN_OPS, ops & FORBIDDEN_OPS
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [batch, 3, h, w]  # static shape: what TensorRT engines need
    result = compare_with_torch(model, path, _image((batch, 3, h, w)))
    assert result["output_shape"] == (batch, 3, 4 * h, 4 * w)
    assert result["max_abs_err"] <= 1e-4


def test_student_exports_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = build_model(variant("student")).eval()
    path = export_onnx(model, tmp_path / "student.onnx", 32, 32)
    assert not {n.op_type for n in onnx.load(path).graph.node} & FORBIDDEN_OPS
    assert compare_with_torch(model, path, _image((1, 3, 32, 32)))["max_abs_err"] <= 1e-4


def test_export_writes_atomically(tmp_path):
    model = build_model(variant("tiny")).eval()
    export_onnx(model, tmp_path / "out" / "tiny.onnx", 8, 8)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny.onnx"]
