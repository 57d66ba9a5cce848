"""Soak: many frames through ``Upscaler.stream`` with the adaptive controller on a replayed trace that moves the
tier down and back up every few hundred frames. Looks for what only a long run shows: memory that grows, engines
that are opened again and again or never closed, frames lost or out of order.

Frames alternate between two sizes (default 64x64 and 320x180) and cycle through 7 contents, so a frame dropped,
repeated or reordered shows as a mismatch: every output is compared, exactly, with the reference output of its
content on the tier it ran on (computed once, before the soak, by a separate Upscaler). Reported: RSS at the start
and every 1,000 frames, engines open and engines ever opened, tier switches, frames per second per tier.

Pass/fail (exit 1 on a failure): RSS from frame 1,000 to the end grows by less than 5 %; open engines never exceed
``--max-open-engines`` (default: one per tier) and, when every tier may stay open, no engine is opened twice; every
frame came out, in order, equal to its reference.

Engines: ``--engines shipped`` runs the ``cpu`` profile as shipped (student / fast; the committed shipped run was
made with the earlier 136x136 engines, about 0.1-0.3 s per tile on one thread of a shared 2-core CPU: with 320x180
frames, 6 tiles each, 10,000 frames take hours there, so it uses one-tile frames, 64x64 and 136x100: 27 minutes); ``--engines tiny`` exports the same
two-tier layout for the ``tiny`` test variant with the real export pipeline (needs torch), which runs the 64x64 /
320x180 alternation in about 15 minutes. The runtime code under test (controller, engine cache, tiling, blending,
encode) is the same either way.

    python benchmarks/soak_stream.py --engines shipped --sizes 64x64,136x100        # results/soak_stream_shipped
    python benchmarks/soak_stream.py --engines tiny                                 # results/soak_stream_tiny
    python benchmarks/soak_stream.py --engines tiny --max-open-engines 1 \\
        --out benchmarks/results/soak_stream_tiny_max_open_1
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from mambaesr_runtime.profiles import Tier, load_profile
from mambaesr_runtime.runtime.adaptive import AdaptiveController
from mambaesr_runtime.runtime.monitor import ReplayMonitor, Telemetry
from mambaesr_runtime.runtime.upscaler import Upscaler

RESULTS = Path(__file__).resolve().parent / "results"
CONTENTS = 7  # distinct frame contents, cycled: coprime with the size alternation and the trace period


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def tiny_engines(folder: Path):
    """The cpu profile with its two tiers on the tiny variant, exported into ``folder`` (ONNX + manifests)."""
    import torch

    from mambaesr_runtime.export.pipeline import export_profile
    from mambaesr_runtime.model.checkpoint import save_checkpoint
    from mambaesr_runtime.model.config import variant
    from mambaesr_runtime.model.net import build_model

    torch.manual_seed(0)
    model = build_model(variant("tiny"))
    with torch.no_grad():
        model.upsample.weight.normal_(std=0.05)  # the shipped init zeroes it: a random one makes outputs differ
    ckpt = folder / "tiny_x4.safetensors"
    save_checkpoint(model, ckpt, variant="tiny")
    profile = dataclasses.replace(load_profile("cpu"), name="cpu-tiny", tiers=(
        Tier("balanced", "tiny", 48, 4, 1), Tier("light", "tiny", 32, 4, 1)))
    export_profile(profile, folder, [ckpt], threads=1)
    return profile


def trace(frames: int, period: int, step_s: float) -> list[Telemetry]:
    """One snapshot per frame, ``step_s`` apart: hot (95 °C, above the cpu profile's 90) for ``period`` frames,
    then cool (50 °C) for ``period``, and so on: a step down at each hot block, a step up ``dwell_s`` into each cool
    one."""
    return [Telemetry(timestamp=i * step_s, temps_c={"cpu": 95.0 if (i // period) % 2 else 50.0},
                      mem_free_mb=8000.0, source="replay") for i in range(frames)]


def make_frames(sizes: list[tuple[int, int]]) -> list[list[np.ndarray]]:
    """frames[size][content]: BGR uint8 pictures with structure (gradients + noise), distinct per content."""
    rng = np.random.default_rng(0)
    out = []
    for h, w in sizes:
        yy, xx = np.mgrid[0:h, 0:w]
        per = []
        for c in range(CONTENTS):
            base = (np.sin(xx / (3 + c)) + np.cos(yy / (5 + c))) * 60 + 120
            img = base[:, :, None] + rng.normal(0, 12, (h, w, 3)) + np.array([10 * c, -5 * c, 3 * c])
            per.append(np.clip(img, 0, 255).astype(np.uint8))
        out.append(per)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", choices=("shipped", "tiny"), default="shipped")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--sizes", default="64x64,320x180", help="WxH,WxH... frame sizes, alternated")
    parser.add_argument("--period", type=int, default=300, help="frames per hot or cool block of the trace")
    parser.add_argument("--step-s", type=float, default=0.1, help="trace time between frames (dwell is 10 s)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--max-open-engines", type=int, default=None)
    parser.add_argument("--every", type=int, default=1000, help="RSS report interval, frames")
    parser.add_argument("--out", default=None, help="results stem (default benchmarks/results/soak_stream_<engines>)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in args.sizes.split(",")]  # (h, w)

    with tempfile.TemporaryDirectory(prefix="mambaesr-soak-") as work:
        if args.engines == "tiny":
            profile, engines_dir = tiny_engines(Path(work)), work
        else:
            profile, engines_dir = load_profile("cpu"), None
        tiers = [t.name for t in profile.tiers]
        pictures = make_frames(sizes)

        # References: each (size, content) on each tier, by an Upscaler of its own.
        expected = {}
        with Upscaler(profile, engines_dir=engines_dir, threads=args.threads) as ref:
            for name in tiers:
                ref.use_tier(name)
                for s, per in enumerate(pictures):
                    for c, img in enumerate(per):
                        expected[name, s, c] = ref.upscale(img)

        def frames():
            for i in range(args.frames):
                yield pictures[i % len(sizes)][i % CONTENTS]

        opened = []
        import mambaesr_runtime.runtime.upscaler as upscaler_module

        real_open = upscaler_module.open_engine

        def counting_open(*a, **k):
            sel = real_open(*a, **k)
            opened.append(sel.tier.name)
            return sel

        upscaler_module.open_engine = counting_open
        snapshots = trace(args.frames, args.period, args.step_s)
        rows, failures, per_tier = [], [], {name: [0, 0.0] for name in tiers}
        max_open = 0
        with AdaptiveController(profile, ReplayMonitor(snapshots)) as ctl, \
                Upscaler(profile, engines_dir=engines_dir, threads=args.threads, controller=ctl,
                         max_open_engines=args.max_open_engines) as up:
            rows.append({"frame": 0, "rss_mb": round(rss_mb(), 1), "open_engines": len(up._engines),
                         "engines_opened": len(opened), "switches": 0, "fps": None})
            start = last = time.perf_counter()
            done = 0
            for i, out in enumerate(up.stream(frames())):
                now = time.perf_counter()
                tier = up.tier
                per_tier[tier][0] += 1
                per_tier[tier][1] += now - last
                last = now
                want = expected[tier, i % len(sizes), i % CONTENTS]
                if out.shape != want.shape or not np.array_equal(out, want):
                    failures.append(f"frame {i} (tier {tier}) differs from its reference: lost, repeated or out of "
                                    f"order")
                max_open = max(max_open, len(up._engines))
                done = i + 1
                if done % args.every == 0:
                    rows.append({"frame": done, "rss_mb": round(rss_mb(), 1), "open_engines": len(up._engines),
                                 "engines_opened": len(opened), "switches": len(ctl.events),
                                 "fps": round(done / (now - start), 2)})
                    print(f"frame {done}: RSS {rows[-1]['rss_mb']} MB, {len(up._engines)} engines open, "
                          f"{len(opened)} opened, {len(ctl.events)} switches, {rows[-1]['fps']} fps", flush=True)
            elapsed = time.perf_counter() - start
            switches = len(ctl.events)
        upscaler_module.open_engine = real_open

    limit = args.max_open_engines or len(tiers)
    if done != args.frames:
        failures.append(f"{done} frames came out of {args.frames}")
    if max_open > limit:
        failures.append(f"{max_open} engines were open at once (limit {limit})")
    if args.max_open_engines is None and len(opened) > len(tiers):
        failures.append(f"{len(opened)} engines opened for {len(tiers)} tiers: an engine was opened again")
    base = next((r for r in rows if r["frame"] == 1000), None)
    growth = None
    if base is not None:
        growth = 100 * (max(r["rss_mb"] for r in rows if r["frame"] >= 1000) - base["rss_mb"]) / base["rss_mb"]
        if growth >= 5:
            failures.append(f"RSS grew {growth:.1f} % after frame 1,000 (limit 5 %)")
    else:
        failures.append("fewer than 1,000 frames: the RSS growth bar cannot be judged")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/soak_stream.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sizes_txt = " and ".join(f"{w}x{h}" for h, w in sizes)
    lines = [f"# Soak: {args.frames:,} frames through Upscaler.stream with the adaptive controller", "",
             f"Measured {stamp} on {platform.machine()} ({os.cpu_count()} cores, shared), Python "
             f"{platform.python_version()}, ONNX Runtime {args.threads} thread(s). Command: `{command.strip()}`", "",
             f"Engines: {args.engines} (profile {profile.name}: "
             + ", ".join(f"{t.name} = {t.variant} t{t.tile}" for t in profile.tiers)
             + f"). Frames: {sizes_txt} alternating, {CONTENTS} contents cycled; replayed trace hot/cool every "
             f"{args.period} frames ({args.step_s} s of trace time per frame). max_open_engines: "
             f"{args.max_open_engines or 'default (one per tier)'}.", "",
             "| frame | RSS (MB) | engines open | engines opened so far | tier switches | fps so far |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['frame']:,} | {r['rss_mb']} | {r['open_engines']} | {r['engines_opened']} | {r['switches']} | "
              f"{'' if r['fps'] is None else r['fps']} |" for r in rows]
    lines += ["", "| tier | frames | fps |", "|---|---|---|"]
    lines += [f"| {name} | {n:,} | {n / t:.2f} |" for name, (n, t) in per_tier.items() if n]
    lines += ["", f"Result: {done:,} frames in {elapsed:.0f} s ({done / elapsed:.2f} fps overall), {switches} tier "
              f"switches, {len(opened)} engines opened, at most {max_open} open at once; RSS growth after frame "
              f"1,000: {'n/a' if growth is None else f'{growth:+.2f} %'} (bar < 5 %); every frame equal to its "
              f"reference, in order: {'yes' if not any('differs' in f for f in failures) else 'NO'}.",
              "", "PASS" if not failures else "FAIL: " + "; ".join(failures[:5])]
    md = "\n".join(lines) + "\n"
    print(md)
    stem = Path(args.out) if args.out else RESULTS / f"soak_stream_{args.engines}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps({
        "measured": stamp, "command": command.strip(), "engines": args.engines, "frames": args.frames,
        "sizes": sizes_txt, "rows": rows, "per_tier": {k: {"frames": n, "fps": round(n / t, 3) if n else None}
                                                        for k, (n, t) in per_tier.items()},
        "switches": switches, "engines_opened": len(opened), "max_open": max_open, "rss_growth_pct": growth,
        "elapsed_s": round(elapsed, 1), "failures": failures}, indent=2) + "\n")
    print(f"wrote {stem.with_suffix('.md')} and .json")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
