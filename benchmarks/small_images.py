"""A folder of small images through ``mambaesr-run``, with and without the tiers' small-image engines (issue 24).

Before: every image, however small, was padded to one whole 264x264 tile of the CPU profile's engine. Now a tier
with ``small_tile`` runs an image no larger than that on its engine exported at that tile (the same result for a
pad-aware engine: the outputs of the two runs are compared here, file by file). Each run is one CLI process on a
fresh folder of N crops of the shipped sample image (8x8 by default), ``--json`` for the per-file seconds; the two
profiles differ only in ``small_tile`` (removed for "before"). Rounds alternate; the median is reported.

    python benchmarks/small_images.py [--size 8] [--count 40] [--rounds 3] [--tier balanced]

Writes benchmarks/results/small_images.md (+ .json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def without_small_tile(src: Path, dst: Path) -> Path:
    """``src`` with every ``small_tile`` removed (the tiers as they were before issue 24)."""
    import re

    dst.write_text(re.sub(r", small_tile: \d+", "", src.read_text()))
    return dst


def run(folder: Path, out: Path, profile: Path, tier: str) -> tuple[float, float, dict]:
    """(wall seconds, summed per-file seconds, the --json report) of one CLI run; the checkout's code runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mambaesr_runtime.cli.run", str(folder), "-o", str(out), "-q",
                           "--json", "--profile", str(profile), "--tier", tier], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"mambaesr-run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    return wall, sum(i["seconds"] for i in report["inputs"]), report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8, help="side of each image, LR pixels (default 8)")
    parser.add_argument("--count", type=int, default=40, help="images in the folder (default 40)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tier", default="balanced", help="cpu profile tier (default balanced: the student)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mambaesr-small-"))
    sample = cv2.imread(str(ROOT / "mambaesr_runtime" / "data" / "sample.png"))
    rng = np.random.default_rng(24)
    folder = work / "in"
    folder.mkdir()
    for i in range(args.count):
        y, x = rng.integers(0, sample.shape[0] - args.size), rng.integers(0, sample.shape[1] - args.size)
        cv2.imwrite(str(folder / f"{i:03d}.png"), sample[y:y + args.size, x:x + args.size])
    profiles = {"after": ROOT / "profiles" / "cpu.yaml",
                "before": without_small_tile(ROOT / "profiles" / "cpu.yaml", work / "cpu_before.yaml")}
    times: dict = {k: [] for k in profiles}
    engines = {}
    for r in range(args.rounds):
        for kind, profile in profiles.items():
            wall, per_file, report = run(folder, work / f"{kind}{r}", profile, args.tier)
            times[kind].append((wall, per_file))
            engines[kind] = Path(report["engine"]["small_engine"] or report["engine"]["engine"]).name
    differ = 0
    for f in sorted(folder.iterdir()):
        a = cv2.imread(str(work / "before0" / f.name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(work / "after0" / f.name), cv2.IMREAD_UNCHANGED)
        differ += int((a != b).sum())
    rows = {}
    for kind, t in times.items():
        wall, per_file = statistics.median(w for w, _ in t), statistics.median(p for _, p in t)
        rows[kind] = {"wall_s": round(wall, 2), "per_file_s": round(per_file, 3),
                      "images_per_s": round(args.count / per_file, 1), "images_per_s_wall": round(args.count / wall, 2)}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    speedup = rows["after"]["images_per_s"] / rows["before"]["images_per_s"]
    md = "\n".join([
        "# A folder of small images: the small-image engines (issue 24)", "",
        f"Measured {stamp} on {platform.machine()} ({os.cpu_count()} cores, shared with other work), Python "
        f"{platform.python_version()}, OMP_NUM_THREADS=1. Command: `python benchmarks/small_images.py --size "
        f"{args.size} --count {args.count} --rounds {args.rounds} --tier {args.tier}`: one `mambaesr-run` process on "
        f"a folder of {args.count} {args.size}x{args.size} PNG crops of the shipped sample, profile cpu tier "
        f"{args.tier}, with and without `small_tile` (before: every image padded to a 264x264 tile), rounds "
        f"alternating, medians. Per file: the --json report's seconds (read, upscale, write), summed; wall: the "
        f"whole process (Python start, engine load) included.", "",
        "| | engine for these images | per-file seconds (sum) | images/s | wall s | images/s (wall) |",
        "|---|---|---|---|---|---|",
        *(f"| {kind} | {engines[kind]} | {rows[kind]['per_file_s']} | {rows[kind]['images_per_s']} | "
          f"{rows[kind]['wall_s']} | {rows[kind]['images_per_s_wall']} |" for kind in ("before", "after")), "",
        f"**{speedup:.0f}x the images per second.** Outputs: {differ} of "
        f"{args.count * args.size * args.size * 48} samples differ between the two runs (the pad-aware engines "
        f"give a padded image the whole-image result whatever the tile; floats agree within ~1e-7).", ""])
    print(md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "small_images.md").write_text(md)
    (RESULTS / "small_images.json").write_text(json.dumps({"measured": stamp, "args": vars(args), "rows": rows,
                                                           "samples_differing": differ}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
