"""End-to-end runtime speed and memory: ``Upscaler`` on ONNX Runtime CPU for 256->1024, 512->2048, 1024->4096.

For each workload: median latency of ``Upscaler.upscale`` (decode, tiles, engine, blend, encode), output megapixels
per second, the share of time spent outside the engine (tiling + blending + conversion), peak RSS of a fresh process
doing only that (model load included), and the tiling overhead: tiled latency vs one whole-image engine call at the
same size (an ONNX file exported for exactly that size: needs the torch extra, made once in a temp folder).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_runtime.py [--device cpu] [--tier quality] [--repeats 3]

Writes benchmarks/results/runtime_speed.md (+ .json). Each measurement runs in its own process so peak RSS is that
workload's alone. Targets (issue "mambaesr-run and the embeddable runtime"): tiling overhead <= 15 %; peak RSS for
1024 -> 4096 <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_OVERHEAD, TARGET_RSS_GB = 0.15, 1.5


def test_image(size: int) -> np.ndarray:
    """A size x size BGR uint8 image of real content: the shipped sample (a Kodak crop) mirrored to size."""
    import cv2

    from mambaesr_runtime.runtime.engines import shipped_dir

    img = cv2.imread(str(shipped_dir().parent / "data" / "sample.png"), cv2.IMREAD_UNCHANGED)
    reps = -(-size // img.shape[0])
    tiled = np.concatenate([np.concatenate([img if (i + j) % 2 == 0 else img[:, ::-1] for j in range(reps)], 1)
                            for i in range(reps)], 0)
    return np.ascontiguousarray(tiled[:size, :size])


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def child_tiled(args) -> dict:
    from mambaesr_runtime.runtime.upscaler import Upscaler

    img = test_image(args.size)
    with Upscaler(args.device, tier=args.tier, threads=args.threads) as up:
        engine_s = []
        backend = up.engine.backend
        infer = backend.infer

        def timed(x):
            start = time.perf_counter()
            y = infer(x)
            engine_s[-1] += time.perf_counter() - start
            return y

        backend.infer = timed  # instance attribute: counts engine time inside upscale
        times = []
        for _ in range(args.repeats + 1):  # first run: warm-up
            engine_s.append(0.0)
            start = time.perf_counter()
            out = up.upscale(img)
            times.append(time.perf_counter() - start)
        assert out.shape == (4 * args.size, 4 * args.size, 3)
        t = up.engine.tier
        return {"median_s": statistics.median(times[1:]), "runs_s": times[1:],
                "engine_share": statistics.median(e / s for e, s in zip(engine_s[1:], times[1:])),
                "peak_rss_gb": peak_rss_gb(), "engine": up.describe(),
                "tier": {"name": t.name, "variant": t.variant, "tile": t.tile, "overlap": t.overlap,
                         "batch": t.batch}}


def child_whole(args) -> dict:
    from mambaesr_runtime.backends.onnxruntime import OrtBackend

    img = test_image(args.size)
    x = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255
    with OrtBackend(args.onnx, args.threads) as backend:
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times[1:]), "runs_s": times[1:], "peak_rss_gb": peak_rss_gb()}


def run_child(mode: str, **kw) -> dict:
    argv = [sys.executable, __file__, "--child", mode] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()
                                                           if v is not None]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_whole(variant: str, size: int, folder: Path) -> Path:
    from mambaesr_runtime.export.onnx_export import export_onnx
    from mambaesr_runtime.model.checkpoint import load_checkpoint
    from mambaesr_runtime.runtime.engines import shipped_dir

    path = folder / f"{variant}_{size}.onnx"
    if not path.exists():
        model, _ = load_checkpoint(shipped_dir() / f"{variant}_x4.safetensors")
        export_onnx(model, path, size, size)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tier", help="profile tier (default: the profile's first)")
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-whole", action="store_true", help="skip the whole-image baseline (no torch needed)")
    p.add_argument("--out", default=str(RESULTS / "runtime_speed"))
    p.add_argument("--child", choices=["tiled", "whole"], help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child_tiled(args) if args.child == "tiled" else child_whole(args)))
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="mambaesr-bench-") as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            tiled = run_child("tiled", device=args.device, tier=args.tier, size=size, repeats=args.repeats,
                              threads=args.threads)
            row = {"input": size, "output": 4 * size, **{k: tiled[k] for k in ("median_s", "runs_s",
                                                                              "engine_share", "peak_rss_gb")},
                   "mp_per_s": (4 * size) ** 2 / 1e6 / tiled["median_s"], "engine": tiled["engine"],
                   "tier": tiled["tier"]}
            if not args.no_whole:
                onnx_path = export_whole(tiled["tier"]["variant"], size, Path(tmp))
                whole = run_child("whole", size=size, repeats=args.repeats, threads=args.threads, onnx=onnx_path)
                row.update(whole_s=whole["median_s"], whole_runs_s=whole["runs_s"],
                           whole_peak_rss_gb=whole["peak_rss_gb"],
                           tiling_overhead=tiled["median_s"] / whole["median_s"] - 1)
            rows.append(row)
            print(f"{size} -> {4 * size}: {row['median_s']:.2f} s ({row}", file=sys.stderr, flush=True)

    tier = rows[0]["tier"]
    lines = [(f"# Runtime speed and memory: {args.device} profile, tier {tier['name']} ({tier['variant']}, tile "
             f"{tier['tile']}, overlap {tier['overlap']}, batch {tier['batch']})"), "",
             f"{rows[0]['engine']}", "",
             (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, ONNX Runtime "
             f"{args.threads} threads; median of {args.repeats} runs after a warm-up; "
             f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Command: "
             f"`python benchmarks/bench_runtime.py --device {args.device}"
             f"{' --tier ' + args.tier if args.tier else ''} --repeats {args.repeats}`"), "",
             ("| input -> output | latency (s) | output MP/s | engine share | peak RSS (GB) | whole-image call (s) "
             "| tiling overhead | whole-image peak RSS (GB) |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        whole = (f"{r['whole_s']:.2f} | {100 * r['tiling_overhead']:+.1f} % | {r['whole_peak_rss_gb']:.2f}"
                 if "whole_s" in r else "- | - | -")
        lines.append(f"| {r['input']}² -> {r['output']}² | {r['median_s']:.2f} | {r['mp_per_s']:.2f} | "
                     f"{100 * r['engine_share']:.0f} % | {r['peak_rss_gb']:.2f} | {whole} |")
    lines += ["", (f"Targets: tiling overhead <= {100 * TARGET_OVERHEAD:.0f} %; peak RSS for 1024² -> 4096² <= "
              f"{TARGET_RSS_GB} GB. Engine share: time inside the engine over the whole call (the rest is tiling, "
              f"blending and conversion).")]
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table)
    out.with_suffix(".json").write_text(json.dumps({"device": args.device, "threads": args.threads,
                                                    "repeats": args.repeats, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
