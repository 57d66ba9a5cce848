"""End-to-end runtime speed and memory: ``Upscaler`` on ONNX Runtime CPU for 256->1024, 512->2048, 1024->4096.

First, the number to quote: each tier of the profile through ``Upscaler.upscale`` on a 256x256 image as a ratio to
RLFN's and SPAN's whole-image time (../shared/peers), all timed round-robin in one process (medians of per-round
ratios). Then, per size:

For each workload: median latency of ``Upscaler.upscale`` (decode, tiles, engine, blend, encode), output megapixels
per second, the share of time spent outside the engine (tiling + blending + conversion), peak RSS of a fresh process
doing only that (model load included), and the tiling overhead: tiled latency vs one whole-image engine call at the
same size (an ONNX file exported for exactly that size: needs the torch extra, made once in a temp folder).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_runtime.py [--device cpu] [--tier light] [--repeats 5]

Writes benchmarks/results/runtime_speed.md (+ .json). Each measurement runs in its own process so peak RSS is that
workload's alone. Targets (issue "mambaesr-run and the embeddable runtime"): tiling overhead <= 15 %; peak RSS for
1024 -> 4096 <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import datetime
import functools
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

    from mambaesr_runtime.artifacts.names import shipped_dir

    img = cv2.imread(str(shipped_dir().parent / "data" / "sample.png"), cv2.IMREAD_UNCHANGED)
    reps = -(-size // img.shape[0])
    tiled = np.concatenate([np.concatenate([img if (i + j) % 2 == 0 else img[:, ::-1] for j in range(reps)], 1)
                            for i in range(reps)], 0)
    return np.ascontiguousarray(tiled[:size, :size])


def peak_rss_gb() -> float:
    """Peak resident memory of this process's address space (VmHWM). Not getrusage's ru_maxrss: across exec that
    keeps the larger of the old and new address spaces, so a child started from a parent that had loaded torch would
    report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def whole_input(size: int) -> np.ndarray:
    img = test_image(size)
    return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255


def child_tiled(args) -> dict:
    """One process, the tiled path only: latency, engine share, peak memory."""
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
    """One process, one whole-image engine call per run: its peak memory (and latency)."""
    from mambaesr_runtime.backends.onnxruntime import OrtBackend

    x = whole_input(args.size)
    with OrtBackend(args.onnx, args.threads) as backend:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - start)
    return {"median_s": times[-1], "peak_rss_gb": peak_rss_gb()}


def child_ratio(args) -> dict:
    """Tiled vs whole-image, timed round-robin in one process (same machine conditions for both)."""
    from mambaesr_runtime.backends.onnxruntime import OrtBackend
    from mambaesr_runtime.runtime.upscaler import Upscaler

    img, x = test_image(args.size), whole_input(args.size)
    tiled, whole = [], []
    with Upscaler(args.device, tier=args.tier, threads=args.threads) as up, OrtBackend(args.onnx, args.threads) as b:
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            up.upscale(img)
            t1 = time.perf_counter()
            b.infer(x)
            t2 = time.perf_counter()
            if i:  # the first round warms both up
                tiled.append(t1 - start)
                whole.append(t2 - t1)
    ratios = [a / b for a, b in zip(tiled, whole)]
    return {"tiled_s": statistics.median(tiled), "whole_s": statistics.median(whole), "whole_runs_s": whole,
            "tiled_runs_s": tiled, "tiling_overhead": statistics.median(ratios) - 1}


def child_peers(args) -> dict:
    """Every tier of the profile through the Upscaler vs the peers' whole-image calls, round-robin in one process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import peers

    from mambaesr_runtime.profiles import load_profile
    from mambaesr_runtime.runtime.upscaler import Upscaler

    img, x = test_image(args.size), whole_input(args.size)
    tiers = [t.name for t in load_profile(args.device).tiers]
    fns, ups = {}, []
    for name, path in peers.peer_paths().items():
        fns[name] = peers.runner(peers.session(path, args.threads), x)
    for tier in tiers:
        up = Upscaler(args.device, tier=tier, threads=args.threads)
        ups.append(up)
        fns[tier] = functools.partial(up.upscale, img)
    try:
        times = peers.round_robin(fns, args.repeats)
        ours = {tier: {"engine": up.describe(), "variant": up.engine.tier.variant, "precision": up.engine.precision,
                       "ms": 1000 * statistics.median(times[tier]), "x_rlfn": peers.median_ratio(times, tier, "RLFN"),
                       "x_span": peers.median_ratio(times, tier, "SPAN"),
                       "speedup_vs_first_tier": peers.median_ratio(times, tiers[0], tier)}
                for tier, up in zip(tiers, ups)}
        return {**ours, **{name: {"ms": 1000 * statistics.median(times[name])} for name in peers.PEERS}}
    finally:
        for up in ups:
            up.close()


def run_child(mode: str, **kw) -> dict:
    argv = [sys.executable, __file__, "--child", mode] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()
                                                           if v is not None]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_whole(variant: str, size: int, folder: Path) -> Path:
    from mambaesr_runtime.artifacts.names import shipped_dir
    from mambaesr_runtime.export.onnx_export import export_onnx
    from mambaesr_runtime.model.checkpoint import load_checkpoint

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
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-whole", action="store_true", help="skip the whole-image baseline (no torch needed)")
    p.add_argument("--out", default=str(RESULTS / "runtime_speed"))
    p.add_argument("--peer-size", type=int, default=256, help="image size of the peer comparison (0: skip it)")
    p.add_argument("--child", choices=["tiled", "whole", "ratio", "peers"], help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps({"tiled": child_tiled, "whole": child_whole, "ratio": child_ratio,
                          "peers": child_peers}[args.child](args)))
        return
    if args.repeats < 5:
        p.error("--repeats must be at least 5: a median of fewer rounds is not a measurement here")

    versus = run_child("peers", device=args.device, size=args.peer_size, repeats=args.repeats,
                       threads=args.threads) if args.peer_size else {}

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
                whole = run_child("whole", size=size, threads=args.threads, onnx=onnx_path)
                ratio = run_child("ratio", device=args.device, tier=args.tier, size=size, repeats=args.repeats,
                                  threads=args.threads, onnx=onnx_path)
                row.update(whole_s=ratio["whole_s"], whole_runs_s=ratio["whole_runs_s"],
                           tiled_in_ratio_s=ratio["tiled_s"], whole_peak_rss_gb=whole["peak_rss_gb"],
                           tiling_overhead=ratio["tiling_overhead"])
            rows.append(row)
            print(f"{size} -> {4 * size}: {row['median_s']:.2f} s ({row}", file=sys.stderr, flush=True)

    tier = rows[0]["tier"]
    peer_lines = []
    first = next(iter(versus), "")
    if versus:
        peer_lines = [f"## Against the peers: {args.peer_size}² image, Upscaler (tiled, every step included) vs one "
                      f"whole-image call of RLFN / SPAN", "",
                      f"| tier | model | precision | Upscaler ms | vs RLFN | vs SPAN | speed-up vs {first} |",
                      "|---|---|---|---|---|---|---|"]
        for name, v in versus.items():
            if "x_rlfn" in v:
                peer_lines.append(f"| {name} | {v['variant']} | {v.get('precision', '-')} | {v['ms']:.0f} | "
                                  f"{v['x_rlfn']:.2f}x | {v['x_span']:.2f}x | {v['speedup_vs_first_tier']:.2f}x |")
        peer_lines += ["", "Peers: " + ", ".join(f"{k} {v['ms']:.0f} ms" for k, v in versus.items()
                                                if "x_rlfn" not in v) + f" (same process, {args.repeats} "
                       "round-robin rounds; ratios are medians of per-round ratios, the numbers to quote).", ""]
    lines = peer_lines + [(f"## Runtime speed and memory: {args.device} profile, tier {tier['name']} ({tier['variant']}, tile "
             f"{tier['tile']}, overlap {tier['overlap']}, batch {tier['batch']})"), "",
             f"{rows[0]['engine']}", "",
             (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, ONNX Runtime "
             f"{args.threads} threads; median of {args.repeats} runs after a warm-up; tiling overhead = median "
             f"ratio of tiled to whole-image time, the two timed round-robin in one process; peak RSS = VmHWM of a "
             f"process doing only that workload (model load included); "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Command: "
             f"`python benchmarks/bench_runtime.py {' '.join(sys.argv[1:])}`".rstrip()), "",
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
                                                    "repeats": args.repeats, "versus_peers": versus, "rows": rows},
                                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
