"""Per-frame overhead of the adaptive tier policy and controller, against the time of one fast-tier frame.

Prints a table and writes benchmarks/results/policy_overhead.md (+ .json). Each row is the median (and 99th
percentile) of --calls single timed calls, after a warm-up:

- ``policy.decide`` alone (pure function, one realistic snapshot);
- ``AdaptiveController.before_frame + after_frame`` with a frame-mode replay (sampled in the call, deterministic);
- the same with a live psutil monitor on the background sampler (the default for live monitors: the call only
  reads the newest snapshot);
- the same sampling psutil inside the call (``background=False``), to show what the sampler thread saves;
- ``PsutilMonitor.sample`` alone.

The frame it is compared with: ``--frame-ms`` if given, else one ONNX Runtime call of the fast tier's engine from
``mambaesr_runtime/weights/`` (``*fast*.onnx``); when no fast-tier ONNX is shipped yet, the student's engine is
timed instead and the table says so (a student call is slower, so the overhead share is then understated: see the
model_speed table for fast vs student). One engine call (a batch of tiles) is the smallest unit between which the
policy runs, so the share is an upper bound for a whole frame, which takes one or more calls.

Switch latency, through the real ``Upscaler`` of the profile on the shipped sample (128x128 LR): the first frame on
the lighter tier right after a switch, with its engine opened at that moment (cold: a fresh Upscaler each time) or
opened before (warm: ``Upscaler.warm()``, what a long-running stream gets after the first visit), next to a steady
frame on each tier.

    python benchmarks/bench_policy.py [--device cpu] [--frame-ms 40] [--calls 20000] [--switches 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mambaesr_runtime.profiles import load_profile
from mambaesr_runtime.runtime.adaptive import AdaptiveController
from mambaesr_runtime.runtime.monitor import PsutilMonitor, ReplayMonitor, Telemetry
from mambaesr_runtime.runtime.policy import TierPolicy

RESULTS = Path(__file__).resolve().parent / "results"
WEIGHTS = Path(__file__).resolve().parents[1] / "mambaesr_runtime" / "weights"


def timed_us(fn, calls: int) -> tuple[float, float]:
    """(median, p99) of ``calls`` single timed calls of ``fn``, in µs, after ``calls // 10`` warm-up calls."""
    for _ in range(max(1, calls // 10)):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1000.0)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def engine_frame_ms(threads: int, repeats: int) -> tuple[float, str]:
    """Median ms of one ORT call of the fast-tier engine (else the student's), and what was timed."""
    from mambaesr_runtime.backends.onnxruntime import OrtBackend

    candidates = sorted(WEIGHTS.glob("*fast*.onnx")) or sorted(WEIGHTS.glob("*student*.onnx"))
    if not candidates:
        raise SystemExit(f"no ONNX engine in {WEIGHTS}; pass --frame-ms")
    path = candidates[0]
    note = "" if "fast" in path.name else " (no fast-tier ONNX shipped yet: the student's engine, slower than fast)"
    with OrtBackend(path, threads) as backend:
        x = np.random.default_rng(0).random(backend.input_shape, dtype=np.float32)
        backend.infer(x)  # warm-up: ORT arena and kernels
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            backend.infer(x)
            times.append(1000 * (time.perf_counter() - start))
    n, _, h, w = backend.input_shape
    return statistics.median(times), f"ORT CPU, {threads} threads: one call of {path.name} ({n} tiles of {h}x{w}){note}"


def switch_latency(profile_name: str, threads: int, repeats: int) -> list[tuple[str, float]]:
    """(what, median ms) for a steady frame on the first two tiers and the first frame after a cold / warm switch."""
    import cv2

    from mambaesr_runtime.runtime.upscaler import Upscaler

    img = cv2.imread(str(WEIGHTS.parent / "data" / "sample.png"), cv2.IMREAD_UNCHANGED)
    first, second = (t.name for t in load_profile(profile_name).tiers[:2])
    cold, warm, steady = [], [], {first: [], second: []}
    for _ in range(repeats):
        with Upscaler(profile_name, threads=threads) as up:
            up.upscale(img)  # the first tier is warm
            start = time.perf_counter()
            up.use_tier(second)  # opens the engine now
            up.upscale(img)
            cold.append(1000 * (time.perf_counter() - start))
    with Upscaler(profile_name, threads=threads) as up:
        up.warm()
        for name in (first, second):
            up.use_tier(name)
            up.upscale(img)  # first call of a session pays ORT's lazy initialisation
        for _ in range(repeats):
            for name in (first, second):
                up.use_tier(name)
                start = time.perf_counter()
                up.upscale(img)
                ms = 1000 * (time.perf_counter() - start)
                steady[name].append(ms)
                if name == second:
                    warm.append(ms)
    med = statistics.median
    return [(f"steady frame, tier {first}", med(steady[first])), (f"steady frame, tier {second}", med(steady[second])),
            (f"first frame after switching {first} -> {second}, cold engine (opened at the switch)", med(cold)),
            (f"first frame after switching {first} -> {second}, warm engine (opened before)", med(warm))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device profile whose thresholds and tiers are used")
    parser.add_argument("--frame-ms", type=float, help="fast-tier frame time to compare with (default: measure)")
    parser.add_argument("--calls", type=int, default=20000, help="timed calls per row (default 20000)")
    parser.add_argument("--threads", type=int, default=2, help="ORT threads for the frame measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed engine calls for the frame measurement")
    parser.add_argument("--switches", type=int, default=5, help="repetitions of the switch-latency measurement")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    profile = load_profile(args.device)
    policy = TierPolicy(profile)
    snapshot = Telemetry(time.monotonic(), temps_c={"cpu": 60.0, "gpu": 57.0}, power_w=8.0, mem_free_mb=6000.0,
                         cpu_percent=40.0, latency_ms=120.0, source="bench")
    state = policy.initial_state()
    trace = [Telemetry(i * 0.05, temps_c={"cpu": 60.0 + (i % 7)}, mem_free_mb=6000.0) for i in range(500)]
    rows = []

    def frame(ctl):
        def call():
            ctl.before_frame()
            ctl.after_frame(10.0)
        return call

    rows.append(("policy.decide (pure)", *timed_us(lambda: policy.decide(snapshot, state), args.calls)))
    with AdaptiveController(profile, ReplayMonitor(trace, loop=True)) as ctl:
        rows.append(("controller, replay sampled per frame", *timed_us(frame(ctl), args.calls)))
    with AdaptiveController(profile, PsutilMonitor()) as ctl:
        rows.append((f"controller, psutil on the background sampler ({profile.telemetry.interval_s:g} s)",
                     *timed_us(frame(ctl), args.calls)))
    with AdaptiveController(profile, PsutilMonitor(), background=False) as ctl:
        rows.append(("controller, psutil sampled in the call (background=False)",
                     *timed_us(frame(ctl), max(1, args.calls // 10))))
    monitor = PsutilMonitor()
    rows.append(("PsutilMonitor.sample alone", *timed_us(monitor.sample, max(1, args.calls // 10))))

    if args.frame_ms is not None:
        frame_ms, frame_what = args.frame_ms, "given with --frame-ms"
    else:
        frame_ms, frame_what = engine_frame_ms(args.threads, args.repeats)

    header = "| what | median µs | p99 µs | share of one frame |"
    lines = [header, "|---|---|---|---|"]
    for what, median, p99 in rows:
        lines.append(f"| {what} | {median:.1f} | {p99:.1f} | {100 * median / (1000 * frame_ms):.4f} % |")
    switch_rows = switch_latency(profile.name, args.threads, args.switches)
    lines += ["", "| switch latency (128x128 LR sample -> 512x512) | median ms |", "|---|---|"]
    lines += [f"| {what} | {ms:.0f} |" for what, ms in switch_rows]
    table = "\n".join(lines)
    cpu = platform.processor() or platform.machine()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    context = (f"Measured {when} on {cpu} ({os.cpu_count()} cores), Python {platform.python_version()}, device "
               f"profile `{profile.name}` (tiers {[t.name for t in profile.tiers]}). Frame: {frame_ms:.1f} ms, "
               f"{frame_what}.")
    print(context)
    print(table)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        command = "python benchmarks/bench_policy.py " + " ".join(argv if argv is not None else sys.argv[1:])
        md = (f"# Adaptive policy overhead per frame\n\n{context}\nCommand: `{command.strip()}`. Median and 99th "
              f"percentile of single timed calls after a warm-up ({args.calls} calls; the in-call psutil rows "
              f"{max(1, args.calls // 10)}). One `before_frame` + `after_frame` pair is what the upscaler adds per "
              f"frame. One engine call is the smallest unit between frames, so the share is an upper bound for a "
              f"frame of several calls. The machine is a shared VM, so p99 is noisy.\n\n"
              f"{table}\n\nSwitch latency: median of {args.switches}; cold = the other tier's engine is opened at the "
              f"switch (a fresh Upscaler each time), warm = opened before by Upscaler.warm(); the Upscaler keeps "
              f"every opened engine, so only a tier's first visit can be cold.\n")
        (RESULTS / "policy_overhead.md").write_text(md)
        (RESULTS / "policy_overhead.json").write_text(json.dumps({
            "measured": when, "machine": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "device_profile": profile.name, "frame_ms": frame_ms, "frame": frame_what, "calls": args.calls,
            "rows": [{"what": w, "median_us": m, "p99_us": p, "share_of_frame": m / (1000 * frame_ms)}
                     for w, m, p in rows],
            "switch_latency_ms": [{"what": w, "median_ms": m} for w, m in switch_rows]}, indent=2) + "\n")
        print(f"wrote {RESULTS / 'policy_overhead.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
