"""``mambaesr-eval``: PSNR/SSIM of a checkpoint, an ONNX file or a TensorRT plan on benchmark folders (``<Set>/HR``
+ ``<Set>/LR_bicubic/X<scale>``, or HR only), per image and per set, against bicubic and the seed's table.

    mambaesr-eval mambaesr_runtime/weights/student_x4_t264_b1.onnx ../shared/data/benchmarks/{Set5,Set14} -o report/
    mambaesr-eval ../shared/peers/span_x4.onnx ../shared/data/benchmarks/Set5 --tile 136
        (any x2/x3/x4 super-resolution ONNX with dynamic height and width, tiled like ours)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import MambaESRError
from .flags import for_cli
from .signals import guarded_main


def main(argv: list[str] | None = None) -> int:
    return guarded_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint (.safetensors/.json), ONNX file or TensorRT plan")
    parser.add_argument("sets", nargs="+", help="benchmark folders")
    parser.add_argument("-o", "--out", help="write results.md, results.json and crops.png here")
    parser.add_argument("--overlap", type=int, default=8, help="tile overlap per side for engine files (LR px; "
                                                                "default 8, what the recorded results used)")
    parser.add_argument("--tile", type=int, help="tile size for an ONNX file with dynamic height and width (default: "
                                                 "the cpu profile's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sheet", action="store_true", help="skip the crop sheet")
    args = parser.parse_args(argv)
    try:
        if args.out is not None and os.path.lexists(args.out) and not Path(args.out).is_dir():
            raise MambaESRError(f"-o {args.out} is a file, and -o takes a folder (results.md, results.json and "
                                f"crops.png are written in it): give a new or existing folder")
        from ..evaluation import benchmark

        sets = {}
        for folder in args.sets:
            if not (Path(folder) / "HR").is_dir():
                raise MambaESRError(f"{folder} is not a benchmark folder: it needs an HR/ subfolder "
                                    f"(and optionally LR_bicubic/X4/)")
            sets[Path(folder).name] = folder
        result = benchmark.evaluate(args.model, sets, args.overlap, args.threads, tile=args.tile)
        print(benchmark.markdown_table(result))
        if args.out:
            sheet = None if args.no_sheet else benchmark.crop_sheet(args.model, args.sets[0], overlap=args.overlap,
                                                                    threads=args.threads, tile=args.tile)
            print(f"report written to {benchmark.write_report(result, args.out, sheet)}")
        return 0
    except MambaESRError as exc:
        print(f"error: {for_cli(exc, {'tile': '--tile', 'overlap': '--overlap'})}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
