"""What the mask-free twins buy (issue 19 item 4): ``Upscaler.upscale`` with each shipped engine's twin beside it
against the same engine alone (no twin: every image pays the pad-aware masks), and RLFN's whole-image call, all on
the same image, round-robin in one process (medians of per-round ratios; ``../shared/peers`` needed).

An image at least one tile high and wide (264 LR pixels on the cpu profile) runs on the twin; a smaller one pays the
masks either way, so the sizes here are 264 (one tile, the best case) and 512 (four tiles, blended).

    python benchmarks/bench_interior.py [--rounds 7] [--sizes 264,512] [--threads 2]

Prints the table and writes benchmarks/results/interior_twin.md (+ .json).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers

from mambaesr_runtime.artifacts.names import shipped_dir
from mambaesr_runtime.runtime.upscaler import Upscaler

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = {"student": "student_x4_t264_b1.onnx", "fast": "fast_x4_t264_b1.onnx"}


def image(size: int) -> np.ndarray:
    """A real photo (the shipped sample, reflected up to ``size``) as 8-bit BGR: content decides nothing here, but a
    real picture keeps the comparison honest about the decode/encode share."""
    import cv2

    img = cv2.imread(str(shipped_dir().parent / "data" / "sample.png"), cv2.IMREAD_COLOR)
    reps = (-(-size // img.shape[0]), -(-size // img.shape[1]), 1)
    return np.ascontiguousarray(np.tile(img, reps)[:size, :size])


def measure(sizes: list[int], rounds: int, threads: int) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mambaesr-interior-") as tmp:
        alone = {}
        for variant, name in ENGINES.items():  # each engine copied into a folder of its own: no twin beside it
            folder = Path(tmp) / variant
            folder.mkdir()
            for f in (name, name + ".manifest.json"):
                shutil.copy(shipped_dir() / f, folder / f)
            alone[variant] = folder / name
        for size in sizes:
            img = image(size)
            x = np.ascontiguousarray(img[None, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255
            fns, ups = {"RLFN": peers.runner(peers.session(peers.peer_paths()["RLFN"], threads), x)}, []
            for variant, name in ENGINES.items():
                twin = Upscaler(model=shipped_dir() / name, threads=threads)
                plain = Upscaler(model=alone[variant], threads=threads)
                assert twin.engine.interior is not None and plain.engine.interior is None
                ups += [twin, plain]
                fns[f"{variant} + twin"] = functools.partial(twin.upscale, img)
                fns[f"{variant} alone"] = functools.partial(plain.upscale, img)
            try:
                times = peers.round_robin(fns, rounds)
            finally:
                for up in ups:
                    up.close()
            for variant in ENGINES:
                rows[f"{variant} {size}"] = {
                    "variant": variant, "size": size,
                    "twin_ms": 1000 * statistics.median(times[f"{variant} + twin"]),
                    "alone_ms": 1000 * statistics.median(times[f"{variant} alone"]),
                    "twin_vs_alone": peers.median_ratio(times, f"{variant} + twin", f"{variant} alone"),
                    "twin_x_rlfn": peers.median_ratio(times, f"{variant} + twin", "RLFN"),
                    "alone_x_rlfn": peers.median_ratio(times, f"{variant} alone", "RLFN")}
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--sizes", default="264,512")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "interior_twin"))
    args = p.parse_args(argv)
    if args.rounds < 5:
        p.error("--rounds must be >= 5 (ratios are medians of at least five rounds)")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = measure(sizes, args.rounds, args.threads)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"One run, {when}, {peers.cpu()}; ONNX Runtime CPU, {args.threads} threads, {args.rounds} rounds "
             f"round-robin (medians of per-round ratios). `python benchmarks/bench_interior.py --rounds "
             f"{args.rounds} --sizes {args.sizes}`.", "",
             "| engine, image | with its twin | alone (masks on every tile) | twin / alone | with twin vs RLFN | "
             "alone vs RLFN |", "|---|---|---|---|---|---|"]
    for r in rows.values():
        lines.append(f"| {r['variant']}, {r['size']}² | {r['twin_ms']:.0f} ms | {r['alone_ms']:.0f} ms | "
                     f"**{r['twin_vs_alone']:.3f}x** | {r['twin_x_rlfn']:.2f}x | {r['alone_x_rlfn']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"when": when, "cpu": peers.cpu(), "rounds": args.rounds,
                                                    "threads": args.threads, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        "# Mask-free twins: what images that cover a whole tile save\n\n" + table + "\n\n"
        "The twin is the engine without its valid-map masks (same weights, verified against it at export: max abs "
        "difference in the manifest, `interior_vs_pad_aware_max_abs_err`); the runtime runs it on images at least "
        "one tile high and wide, where no tile holds padding. Images smaller than a tile (a 256² one on the cpu "
        "profile's 264 tiles) still need the masks: they are what makes their padded tile exact.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
