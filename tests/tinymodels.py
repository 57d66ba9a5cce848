"""Small models for tests: the ``tiny`` variant in both scan layouts, with every weight random.

The shipped initialisation zeroes the last conv (training starts from the nearest-neighbour upscale) and the line
mixers' out convs (they start silent), which would make a fresh model's output independent of its body (or of its
scans) and hide a broken part from any comparison; tests that compare outputs (export parity, backends, checkpoints)
use :func:`untrained` instead of ``build_model``.
"""

from __future__ import annotations

import warnings

import torch

from mambaesr_runtime.model.config import variant
from mambaesr_runtime.model.net import build_model

#: ``tiny`` in the line layout the shipped models use: half-resolution row/column mixers beside 3x3 conv blocks.
LINES = dict(scan_layout="lines", scan_stride=2, ffn_kind="conv", heads=1)
#: The line layout with a diagonal and an anti-diagonal mixer (no rows or columns: tiny has one block).
DIAGONALS = dict(LINES, directions=("diag", "diag_rev", "anti", "anti_rev"), mixers_per_block=2)
#: The raster layout with a spiral beside the row-major order.
SPIRAL = dict(directions=("row", "spiral", "spiral_rev"))
#: Conv-only blocks with a quarter-resolution context stream of line mixers in all four orientations beside them.
CONTEXT = dict(LINES, mixers_per_block=0, context_mixers=4, context_tap=0, context_merge=1, scan_stride=4,
               directions=("row", "row_rev", "col", "col_rev", "diag", "diag_rev", "anti", "anti_rev"))
#: Every layout, for parametrised tests: the legacy raster scan (older checkpoints), the line scan, their diagonal
#: and spiral orders, and the context stream.
TINY = {"raster": {}, "lines": LINES, "diagonals": DIAGONALS, "spiral": SPIRAL, "context": CONTEXT}


def untrained(name: str = "tiny", seed: int = 0, **overrides):
    """``build_model(variant(name, **overrides))`` in eval mode, seeded, with every zero-initialised conv random."""
    from mambaesr_runtime.model.net import ContextStream, LineMixer

    torch.manual_seed(seed)
    model = build_model(variant(name, **overrides))
    with torch.no_grad():
        model.upsample.weight.normal_(std=0.05)
        for module in model.modules():
            if isinstance(module, LineMixer):
                module.out.weight.normal_(std=0.05)
            if isinstance(module, ContextStream):
                module.merge.weight.normal_(std=0.05)
    return model.eval()


def dynamic_sr_onnx(path, scale: int = 3, seed: int = 0):
    """A tiny super-resolution ONNX file of the kind users bring: ``lr`` (n, 3, h, w) -> ``sr`` (n, 3, s*h, s*w) with
    dynamic n, h and w (one conv and a pixel shuffle; not a MambaESR model, no manifest)."""
    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
            self.shuffle = torch.nn.PixelShuffle(scale)

        def forward(self, x):
            return self.shuffle(self.conv(x)) + torch.nn.functional.interpolate(x, scale_factor=scale)

    model = Net().eval()
    with warnings.catch_warnings():  # the TorchScript exporter's own deprecation notices, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.rand(1, 3, 16, 16), str(path), input_names=["lr"], output_names=["sr"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "sh", 3: "sw"}})
    return path, model
