"""Small models for tests: the ``tiny`` variant in both scan layouts, with every weight random.

The shipped initialisation zeroes the last conv (training starts from the nearest-neighbour upscale) and the line
mixers' out convs (they start silent), which would make a fresh model's output independent of its body (or of its
scans) and hide a broken part from any comparison; tests that compare outputs (export parity, backends, checkpoints)
use :func:`untrained` instead of ``build_model``.
"""

from __future__ import annotations

import torch

from mambaesr_runtime.model.config import variant
from mambaesr_runtime.model.net import build_model

#: ``tiny`` in the line layout the shipped models use: half-resolution row/column mixers beside 3x3 conv blocks.
LINES = dict(scan_layout="lines", scan_stride=2, ffn_kind="conv", heads=1)
#: Both layouts, for parametrised tests: the legacy raster scan (older checkpoints) and the line scan.
TINY = {"raster": {}, "lines": LINES}


def untrained(name: str = "tiny", seed: int = 0, **overrides):
    """``build_model(variant(name, **overrides))`` in eval mode, seeded, with every zero-initialised conv random."""
    from mambaesr_runtime.model.net import LineMixer

    torch.manual_seed(seed)
    model = build_model(variant(name, **overrides))
    with torch.no_grad():
        model.upsample.weight.normal_(std=0.05)
        for module in model.modules():
            if isinstance(module, LineMixer):
                module.out.weight.normal_(std=0.05)
    return model.eval()
