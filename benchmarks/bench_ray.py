"""Images per second of a folder run: single-process ``mambaesr-run`` vs ``mambaesr-run --ray`` on a local Ray
cluster with 1 and 2 worker processes (actors), on the same folder, in the same run, rounds interleaved.

    python benchmarks/bench_ray.py [--images 48] [--rounds 3] [--tier balanced]
    python benchmarks/bench_ray.py --page-only      rewrite the page from the saved .json (no measurement)

Every measurement is its own ``python -m mambaesr_runtime.cli.run`` process, timed from start to exit (what a user
waits for: interpreter start, engine load, and for --ray the local cluster's start, the probe and the actors'
engine loads), into a fresh output folder. For --ray runs the table also gives Ray's execution alone (from the
run's --json: actors starting and running, no cluster start). The folder: the first ``--images`` LR images of B100
(../shared/data/benchmarks/B100/LR_bicubic/X4, 120x80 each: one 264x264 tile of profile cpu). Medians over rounds;
the speed-up column is the median of per-round ratios (the load of a shared machine moves between rounds, and a
round's configurations run back to back).

Writes benchmarks/results/ray_scaleout.md (+ .json): the measured table, the machine, and the design for 100 nodes
(where the bottleneck moves), kept in this script so a rerun rewrites the same page.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
B100 = ROOT.parent / "shared" / "data" / "benchmarks" / "B100" / "LR_bicubic" / "X4"

#: (label, extra arguments): the configurations, each run once per round, in this order.
CONFIGS = [
    ("mambaesr-run, 1 process (ONNX Runtime's default threads)", []),
    ("mambaesr-run, 1 process, --threads 1", ["--threads", "1"]),
    ("--ray, 1 worker x 2 threads", ["--ray", "--ray-workers", "1", "--threads", "2"]),
    ("--ray, 1 worker x 1 thread", ["--ray", "--ray-workers", "1", "--threads", "1"]),
    ("--ray, 2 workers x 1 thread", ["--ray", "--ray-workers", "2", "--threads", "1"]),
]

HEADER = ("| Configuration | Wall (s) | Images/s | Speed-up vs 1 process (median of rounds) | Ray execution images/s "
          "| Per image on a worker (s) |")
DESIGN = """\
## 100 nodes, on paper: where the bottleneck moves

Not measured (one 2-core machine here); the arithmetic, with the choices the code makes and what would change.
Assume 1 million images of ~0.25 MP (a 4x output ~4 MP), 100 nodes with one GPU each running the student at
~30 images/s per node (a desktop GPU, TensorRT fp16, tile 128: a guess to size things, not a measurement), so
~3,000 images/s for the cluster and ~6 minutes of compute.

| Stage | What one machine does (here) | At 100 nodes, 3,000 images/s | Where it breaks first, and the fix |
|---|---|---|---|
| Listing (driver) | one `scandir` of SRC and of DST | S3 LIST: 1,000 keys per request, ~1,000 sequential requests per listing (~1 min each for SRC and DST) | fine once per run; a resume also reads the head and tail of every existing output (2 ranged GETs each, 16 threads on the driver): ~2 M requests, over an hour on S3. Skip that check on object stores (an object at its key is complete by construction) or run it as a Ray map |
| Path metadata | `read_binary_files(list of pending paths)` | Ray looks up each path's size again (parallel tasks, ~1 M HEADs) | pass the sizes the listing already has (a custom metadata provider), or read the folder with a path filter |
| Reads | read tasks asking for 0 CPU, bytes into the object store | inputs ~50-300 KB: 150-900 MB/s aggregate, ~3,000 GET/s | comfortable for S3/NFS; per-request latency is hidden by concurrent read tasks under Ray Data's backpressure |
| Engine load (per actor) | 0.5-2 s (ONNX Runtime, CPU) + the probe's one load | 100 actors load once each; TensorRT plans deserialize in seconds, but must be prebuilt per GPU model (`mambaesr-export`, engines on shared storage), else each node builds for minutes | amortized by long-lived actors (`workers=(min, max)` autoscaling); prebuild plans |
| Compute | the bottleneck here (see the table) | ~6 min for the whole archive at the assumed rate | scales with actors until the next two rows |
| Ledger | one synchronous + one fire-and-forget call per image to one actor | ~6,000 calls/s to one single-threaded actor: at its limit | shard it by a hash of the name (N ledger actors), or count starts in the task's retry metadata |
| Output writes | temp file + `os.link` on local disk | outputs ~4-8 MB PNG: 12-24 GB/s aggregate, 3,000 PUT/s | **the bottleneck at 100 nodes**: S3 serves ~3,500 PUT/s per prefix and one NFS server a few GB/s. Spread outputs over prefixes (hash subfolders), write WebP/JPEG (`--format`, 5-10x smaller), or more filers |
| Results rows | one row per image back to the driver (~300 B) | ~1 MB/s into one JSON-lines spool | fine; Parquet is written once at the end from the spool |
| Failures | a killed actor: Ray restarts it and retries its task; killed for good: the driver reruns what has no row | node loss: the same, plus lost read blocks rebuilt by lineage | the driver is the one point of failure: a dead driver loses that run's table (outputs are safe; a rerun resumes). Checkpoint the table periodically |

So on one machine the model is the bottleneck; at 100 nodes, with a GPU each, it moves to the output writes
(request rate per prefix and bytes per second of the store), then to the single ledger actor and the driver's
per-output checks on resume.
"""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed_run(src: Path, out: Path, tier: str, extra: list[str]) -> dict:
    """One CLI process: wall seconds, and for --ray the run's own numbers from its --json."""
    command = [sys.executable, "-m", "mambaesr_runtime.cli.run", str(src), "-o", str(out), "--tier", tier, "-q",
               "--json", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    entry = {"wall_s": wall, "done": report["done"]}
    if "ray" in report:
        entry["ray_images_per_s"] = report["ray"]["images_per_second"]
        entry["library_s"] = report["seconds"]
        entry["per_image_s"] = statistics.median(i["seconds"] for i in report["inputs"] if i["status"] == "done")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tier", default="balanced", help="tier of profile cpu (balanced: the shipped student)")
    parser.add_argument("--out", default=str(RESULTS / "ray_scaleout"))
    parser.add_argument("--page-only", action="store_true", help="rewrite the .md from the saved .json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.page_only:
        write_page(json.loads(out.with_suffix(".json").read_text()), out)
        return 0
    import onnxruntime
    import ray

    images = sorted(B100.glob("*.png"))[:args.images]
    if len(images) < args.images:
        raise SystemExit(f"need {args.images} images in {B100}; found {len(images)}")
    work = Path(tempfile.mkdtemp(prefix="bench_ray-"))
    src = work / "in"
    src.mkdir()
    for p in images:
        shutil.copy(p, src / p.name)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {label: [] for label, _ in CONFIGS}
    try:
        for r in range(args.rounds):
            for i, (label, extra) in enumerate(CONFIGS):
                entry = timed_run(src, work / f"out-{r}-{i}", args.tier, extra)
                runs[label].append(entry)
                print(f"round {r + 1}/{args.rounds}: {label}: {entry['wall_s']:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    rows = []
    for label, _ in CONFIGS:
        entries = runs[label]
        wall = statistics.median(e["wall_s"] for e in entries)
        row = {"config": label, "wall_s": round(wall, 2), "images_per_s": round(args.images / wall, 3),
               "rounds_wall_s": [round(e["wall_s"], 2) for e in entries]}
        if "ray_images_per_s" in entries[0]:
            row["ray_execution_images_per_s"] = round(statistics.median(e["ray_images_per_s"] for e in entries), 3)
            row["per_image_worker_s"] = round(statistics.median(e["per_image_s"] for e in entries), 3)
        rows.append(row)
    for row in rows:  # per round: this configuration's images/s over the single process's, that round
        ratios = [b / w for b, w in zip(rows[0]["rounds_wall_s"], row["rounds_wall_s"])]
        row["speedup_median_of_rounds"] = round(statistics.median(ratios), 3)
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
               "ray": ray.__version__, "onnxruntime": onnxruntime.__version__,
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in load_after]}
    data = {"date": datetime.date.today().isoformat(), "images": args.images, "rounds": args.rounds,
            "tier": args.tier, "folder": f"B100 LR x4, first {args.images} (120x80, one 264x264 tile each)",
            "machine": machine, "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    write_page(data, out)
    return 0


def write_page(data: dict, out: Path) -> None:
    machine, rows, n = data["machine"], data["rows"], data["images"]
    lines = [f"# Ray scale-out: images per second, single process vs a local Ray cluster ({data['date']})", "",
             f"`python benchmarks/bench_ray.py --images {n} --rounds {data['rounds']} --tier {data['tier']}`: "
             f"{data['folder']}, profile cpu tier {data['tier']}, each configuration a fresh `mambaesr-run` process "
             f"timed start to exit, median of {data['rounds']} interleaved rounds.", "",
             f"Machine: {machine['cpu']}, **{machine['cores']} cores**, shared with two training runs and another "
             f"job while this ran (load average {machine['load_average_before'][0]} before, "
             f"{machine['load_average_after'][0]} after): the absolute numbers are low and noisy, the ratios are "
             f"what to read. Ray {machine['ray']}, ONNX Runtime {machine['onnxruntime']}, Python "
             f"{machine['python']}. The local cluster has 2 CPUs, so 2 workers of 1 thread is the most it holds.",
             "", HEADER, "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['config']} | {row['wall_s']:.1f} | {row['images_per_s']:.2f} | "
                     f"{row['speedup_median_of_rounds']:.2f}x | {row.get('ray_execution_images_per_s', '')} | "
                     f"{row.get('per_image_worker_s', '')} |")
    lines += ["", "Wall: the whole command, including for --ray the local cluster's start (a few seconds), the probe "
              "(one engine load on a worker) and each actor's start and engine load. Ray execution: images "
              "written per second of Ray Data's execution alone (actors starting and running). Per image on a "
              "worker: decode, upscale, encode and publish of one image, median. Rounds (wall, s): " +
              "; ".join(f"{r['config']}: {r['rounds_wall_s']}" for r in rows) + "."]
    if data.get("reading"):  # written by hand into the .json after a run: what the numbers say
        lines += ["", data["reading"]]
    lines += ["", DESIGN]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines[lines.index(HEADER):][:len(rows) + 2]))


if __name__ == "__main__":
    sys.exit(main())
