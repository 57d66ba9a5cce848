"""``mambaesr-demo``: smoke-run a model variant through PyTorch and ONNX Runtime and print what happened."""

from __future__ import annotations

import argparse
import sys

from ..errors import MambaESRError
from ..model.config import VARIANTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-demo", description=__doc__)
    parser.add_argument("--variant", default="student", choices=sorted(VARIANTS))
    parser.add_argument("--size", type=int, default=64, help="LR input size in pixels (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be >= 1")
    try:
        from ..model.smoke import smoke_run

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
