"""``mambaesr-eval``: PSNR/SSIM of a checkpoint or an ONNX file on benchmark folders (``<Set>/HR`` +
``<Set>/LR_bicubic/X4``, or HR only), per image and per set, against bicubic and the seed's table.

    mambaesr-eval mambaesr_runtime/weights/student_x4.onnx ../shared/data/benchmarks/{Set5,Set14,B100} -o report/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import MambaESRError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint (.safetensors/.json) or ONNX file")
    parser.add_argument("sets", nargs="+", help="benchmark folders")
    parser.add_argument("-o", "--out", help="write results.md, results.json and crops.png here")
    parser.add_argument("--overlap", type=int, default=8, help="tile overlap per side for ONNX files (LR px)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sheet", action="store_true", help="skip the crop sheet")
    args = parser.parse_args(argv)
    try:
        from ..evaluation import benchmark

        sets = {}
        for folder in args.sets:
            if not (Path(folder) / "HR").is_dir():
                raise MambaESRError(f"{folder} is not a benchmark folder: it needs an HR/ subfolder "
                                    f"(and optionally LR_bicubic/X4/)")
            sets[Path(folder).name] = folder
        result = benchmark.evaluate(args.model, sets, args.overlap, args.threads)
        print(benchmark.markdown_table(result))
        if args.out:
            sheet = None if args.no_sheet else benchmark.crop_sheet(args.model, args.sets[0], overlap=args.overlap,
                                                                    threads=args.threads)
            print(f"report written to {benchmark.write_report(result, args.out, sheet)}")
        return 0
    except MambaESRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
