"""ONNX export: plain static graphs that ONNX Runtime runs to within 1e-4 of PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from mambaesr_runtime.errors import ExportError
from mambaesr_runtime.export.onnx_export import FORBIDDEN_OPS, export_onnx
from mambaesr_runtime.export.parity import compare_with_torch
from tinymodels import TINY, untrained


def _image(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("layout", sorted(TINY))
@pytest.mark.parametrize("h, w, batch", [(16, 16, 1), (13, 21, 2), (1, 1, 1)])
def test_tiny_exports_and_matches_torch(tmp_path, h, w, batch, layout):
    model = untrained("tiny", **TINY[layout])
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
    model = untrained("student")
    path = export_onnx(model, tmp_path / "student.onnx", 32, 32)
    assert not {n.op_type for n in onnx.load(path).graph.node} & FORBIDDEN_OPS
    assert compare_with_torch(model, path, _image((1, 3, 32, 32)))["max_abs_err"] <= 1e-4


def test_export_writes_atomically(tmp_path):
    model = untrained("tiny")
    export_onnx(model, tmp_path / "out" / "tiny.onnx", 8, 8)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny.onnx"]


def test_cumsum_is_refused_like_control_flow(tmp_path, monkeypatch):
    """A model whose graph holds a CumSum (TensorRT < 10.8 runs it as a loop) is refused and nothing is written."""
    model = untrained("tiny")
    monkeypatch.setattr(type(model), "forward", lambda self, x: x.cumsum(dim=-1).repeat_interleave(4, 2)
                        .repeat_interleave(4, 3))
    with pytest.raises(ExportError, match="CumSum"):
        export_onnx(model, tmp_path / "bad.onnx", 8, 8)
    assert list(tmp_path.iterdir()) == []


def test_the_line_layout_moves_each_map_into_scan_layout_once(tmp_path):
    """At a tile that is a multiple of the chunk, the simplified graph has no Pad and no Concat, slices and splits
    only touch small tensors, and the only transposes of a whole (d, H/2, W/2) mixer map are the one into and the
    one out of the line layout (plus the H/W swap in and out of a column mixer)."""
    from mambaesr_runtime.export.pipeline import simplify

    model = untrained("tiny", **TINY["lines"], chunk=8, num_blocks=4, inner_dim=24,
                      embed_dim=24)  # maps wider than the 1 + 4n scan parameters, whose split is small
    raw = export_onnx(model, tmp_path / "raw.onnx", 32, 32)
    simplify(raw, str(tmp_path / "lines.onnx"))
    graph = onnx.shape_inference.infer_shapes(onnx.load(tmp_path / "lines.onnx")).graph
    sizes = {v.name: int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim]))
             for v in list(graph.value_info) + list(graph.input)}
    map_size = min(model.cfg.inner_dim, model.cfg.embed_dim) * 16 * 16  # a mixer map: d (or C) x H/2 x W/2
    big = lambda op: [n for n in graph.node if n.op_type == op and sizes[n.input[0]] >= map_size]
    ops = [n.op_type for n in graph.node]
    assert "Pad" not in ops and "Concat" not in ops and not {"CumSum", "Loop", "Scan", "If"} & set(ops)
    assert not big("Slice") and not big("Split") and not big("Gather")
    rows = cols = model.cfg.num_blocks // 2  # mixers alternate: row, column, row, column
    assert len(big("Transpose")) == 2 * rows + 4 * cols, [n.name for n in big("Transpose")]


def test_diagonal_mixers_reach_their_lines_with_one_skew_in_and_one_out(tmp_path):
    """A diagonal or anti-diagonal mixer adds to a row mixer's layout only its skew into lines and back: per mixer
    one Pad in and one out, one Slice each way (a reversed Slice more each way for ``diag``) and five transposes of
    a whole map in all (the simplifier merges the skew's with the token-major ones), no Gather of a whole map, and
    still no Concat, CumSum or control flow."""
    from mambaesr_runtime.export.pipeline import simplify

    dirs = ("row", "row_rev", "col", "col_rev", "diag", "diag_rev", "anti", "anti_rev")
    model = untrained("tiny", **TINY["lines"], chunk=8, num_blocks=4, inner_dim=24, embed_dim=24, directions=dirs)
    assert [m.orient for b in model.blocks for m in b.mixers] == ["row", "col", "diag", "anti"]
    raw = export_onnx(model, tmp_path / "raw.onnx", 32, 32)
    simplify(raw, str(tmp_path / "diag.onnx"))
    graph = onnx.shape_inference.infer_shapes(onnx.load(tmp_path / "diag.onnx")).graph
    sizes = {v.name: int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim]))
             for v in list(graph.value_info) + list(graph.input)}
    map_size = 24 * 16 * 16
    big = lambda op: [n for n in graph.node if n.op_type == op and sizes[n.input[0]] >= map_size]
    ops = [n.op_type for n in graph.node]
    assert not {"CumSum", "Loop", "Scan", "If", "Concat"} & set(ops) and not big("Gather")
    assert len(big("Pad")) == 2 * 2  # two diagonal mixers, one Pad in and one out each
    assert len(big("Slice")) == 2 * 2 + 2  # one Slice each way per skew, plus diag's reversal each way
    # a row mixer 2, a column mixer 4 (as in the test above), each diagonal mixer 5
    assert len(big("Transpose")) == 2 + 4 + 2 * 5, [n.name for n in big("Transpose")]
    result = compare_with_torch(model, tmp_path / "diag.onnx", _image((1, 3, 32, 32)))
    assert result["max_abs_err"] <= 1e-4
