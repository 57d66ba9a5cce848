"""``mambaesr-run``: upscale images x4 with the shipped model (ONNX Runtime, CPU) or an exported ONNX file.

    mambaesr-run photo.png                      -> photo_x4.png beside it
    mambaesr-run photo.png -o big.png
    mambaesr-run shots/ -o shots_x4/            every image in the folder, names kept

Exit codes: 0 all done; 1 some inputs failed (the others were written); 2 bad arguments or nothing could run.
Outputs are written atomically and never replace an existing file unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import MambaESRError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def _jobs(inputs: list[str], out: str | None, scale: int) -> list[tuple[Path, Path]]:
    """(source, destination) pairs; raises MambaESRError for arguments that cannot work."""
    jobs = []
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in inputs) or (out is not None and Path(out).is_dir())
    if many and out is not None and Path(out).suffix.lower() in IMAGE_SUFFIXES:
        raise MambaESRError(f"-o {out} looks like a file but several images are given; pass a folder")
    for item in inputs:
        src = Path(item)
        if src.is_dir():
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise MambaESRError(f"{src} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif src.exists():
            files = [src]
        else:
            raise MambaESRError(f"{src}: no such file or folder")
        for f in files:
            if out is None:
                dst = f.with_name(f"{f.stem}_x{scale}{f.suffix}")
            elif many:
                dst = Path(out) / f.name
            else:
                dst = Path(out)
            jobs.append((f, dst))
    return jobs


class _Bar:
    """A one-line progress bar on stderr: files done and tiles of the current file."""

    def __init__(self, total_files: int):
        self.total, self.done = total_files, 0

    def tiles(self, name: str):
        def update(done, total):
            width = 30
            fill = int(width * done / total)
            print(f"\r[{self.done + 1}/{self.total}] {name} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} tiles",
                  end="", file=sys.stderr, flush=True)
        return update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("-o", "--output", help="output file (one input) or folder (several, or a folder input)")
    parser.add_argument("--scale", type=int, default=4, help="upscaling factor; the shipped models are x4")
    parser.add_argument("--model", help="an exported ONNX file instead of the shipped student")
    parser.add_argument("--overlap", type=int, default=8, help="tile overlap per side, LR pixels (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    parser.add_argument("--max-megapixels", type=float, default=100.0, help="refuse larger outputs (default 100)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        from ..runtime.upscaler import Upscaler

        upscaler = Upscaler(args.model, args.overlap, args.threads, args.max_megapixels)
        if args.scale != upscaler.scale:
            raise MambaESRError(f"--scale {args.scale} asked for, but the model upscales x{upscaler.scale}")
        jobs = _jobs(args.inputs, args.output, upscaler.scale)
        if args.output and any(dst.parent == Path(args.output) for _, dst in jobs):
            Path(args.output).mkdir(parents=True, exist_ok=True)  # an output folder may be new
    except (MambaESRError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar, failed = _Bar(len(jobs)), 0
    with upscaler:
        for src, dst in jobs:
            try:
                upscaler.upscale_file(src, dst, args.overwrite, None if args.quiet else bar.tiles(src.name))
                if not args.quiet:
                    print(file=sys.stderr)
                print(f"{src} -> {dst}")
            except MambaESRError as exc:
                if not args.quiet:
                    print(file=sys.stderr)
                print(f"error: {exc}", file=sys.stderr)
                failed += 1
            bar.done += 1
    if failed:
        print(f"{failed} of {len(jobs)} inputs failed", file=sys.stderr)
        return 1 if failed < len(jobs) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
