"""``mambaesr-demo``: smoke-run a model variant through PyTorch and ONNX Runtime and print what happened."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import MambaESRError, require_torch
from ..model.config import VARIANTS
from ..model.config import variant as get_variant
from .signals import guarded_main


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A (1, 3, size, size) float32 test card in [0, 1]: gradients, a checkerboard and mild noise."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    checker = ((np.arange(size)[:, None] // 4 + np.arange(size)[None, :] // 4) % 2).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, 0.02, (size, size))
    rgb = np.stack([xx, yy, 0.5 * checker + 0.25 * (xx + yy)]) + noise
    return np.clip(rgb, 0, 1).astype(np.float32)[None]


def smoke_run(variant: str = "student", size: int = 64, threads: int = 2, seed: int = 0) -> dict:
    """Build ``variant`` (random weights), export it for a ``size`` x ``size`` input, and compare ORT with torch."""
    torch = require_torch()
    from ..export.onnx_export import export_onnx
    from ..export.parity import compare_with_torch
    from ..model.net import build_model, count_parameters

    torch.manual_seed(seed)
    cfg = get_variant(variant)
    model = build_model(cfg).eval()
    image = synthetic_image(size, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / f"{variant}.onnx", size, size)
        result = compare_with_torch(model, path, image, threads)
    result.update(variant=variant, params=count_parameters(model), input_shape=image.shape)
    return result


def main(argv: list[str] | None = None) -> int:
    return guarded_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-demo", description=__doc__)
    parser.add_argument("--variant", default="student", choices=sorted(VARIANTS))
    parser.add_argument("--size", type=int, default=64, help="LR input size in pixels (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be >= 1")
    try:
        r = smoke_run(args.variant, args.size, args.threads)
    except MambaESRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"variant {r['variant']}: {r['params']:,} parameters (random weights: shipped weights come later)")
    print(f"input {r['input_shape']} -> output {r['output_shape']}")
    print(f"ONNX Runtime vs PyTorch: max abs difference {r['max_abs_err']:.2e}")
    print(f"time: ONNX Runtime {r['ort_ms']:.0f} ms, PyTorch eager {r['torch_ms']:.0f} ms (first call, {args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
