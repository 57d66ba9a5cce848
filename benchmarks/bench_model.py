"""Model speed on ONNX Runtime (CPU) as ratios to the published peers, timed in the same process.

For each model: parameters, MACs per output pixel (matmul and conv MACs by torch's FLOP counter), the node count of
the simplified static ONNX the export ships, and the time of one call at each LR size next to RLFN and SPAN
(../shared/peers) on the same input: all contenders timed round-robin (one call each per round), the ratio is the
median over rounds of the per-round ratio. Then ONNX Runtime's profile on one runtime tile: the share of kernel time
per op type and the share spent only moving data (Transpose, Pad, Slice, Split, Concat, Gather, layout reorders...).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824 \\
        python benchmarks/bench_model.py [--checkpoint CKPT ...] [--rounds 7]

Default models: the shipped student and fast checkpoints. Writes benchmarks/results/model_speed.md (+ .json).
(The glibc settings keep large temporaries mapped between calls: DESIGN §4; the runtime sets the same.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers

from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.export.pipeline import simplify
from mambaesr_runtime.model.checkpoint import load_checkpoint
from mambaesr_runtime.model.net import count_parameters

RESULTS = Path(__file__).resolve().parent / "results"
SHIPPED = Path(__file__).resolve().parents[1] / "mambaesr_runtime" / "weights"


def macs_per_output_pixel(model, size: int = 64) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 2 / (size * model.cfg.scale) ** 2


def exported(model, size: int, folder: Path, stem: str) -> Path:
    """The simplified static ONNX of ``model`` for a ``size`` x ``size`` input (what mambaesr-export ships)."""
    raw, path = folder / f"{stem}_{size}_raw.onnx", folder / f"{stem}_{size}.onnx"
    was = model.pad_aware
    model.set_pad_aware(model.engine_pad_value is not None)  # as export_tier exports it
    try:
        export_onnx(model, raw, size, size)
    finally:
        model.pad_aware = was
    simplify(raw, str(path))
    return path


def measure(models: dict, sizes: list[int], rounds: int, threads: int, profile_size: int | None) -> dict:
    """Rows for ``models`` ({name: MambaESR}) next to the peers; see the module docstring."""
    peer_files = peers.peer_paths()
    peer_sessions = {name: peers.session(path, threads) for name, path in peer_files.items()}
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory(prefix="mambaesr-bench-") as tmp:
        info = {name: {"params": count_parameters(m), "macs_per_out_px": macs_per_output_pixel(m)}
                for name, m in models.items()}
        for size in sizes:
            x = np.random.default_rng(size).random((1, 3, size, size), dtype=np.float32)
            fns = {name: peers.runner(s, x) for name, s in peer_sessions.items()}
            for name, model in models.items():
                path = exported(model, size, Path(tmp), name)
                info[name][f"nodes_{size}"] = len(onnx.load(path).graph.node)
                fns[name] = peers.runner(peers.session(path, threads), x)
                if size == profile_size:
                    profiles[name] = peers.op_profile(path, x, threads)
            times = peers.round_robin(fns, rounds)
            for name in fns:
                ours = name in models
                rows.append({"model": name, "lr_size": size, "ms": 1000 * float(np.median(times[name])),
                             "x_rlfn": peers.median_ratio(times, name, "RLFN"),
                             "x_span": peers.median_ratio(times, name, "SPAN"),
                             **({"params": info[name]["params"], "macs_per_out_px": info[name]["macs_per_out_px"],
                                 "onnx_nodes": info[name][f"nodes_{size}"]} if ours else {})})
    return {"rows": rows, "profiles": profiles}


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "malloc_env_set": "MALLOC_MMAP_THRESHOLD_" in os.environ}


def table(result: dict, threads: int, rounds: int, command: str, title: str = "Model speed (ONNX Runtime, CPU)",
          stamp: str | None = None) -> str:
    info = machine()
    stamp = stamp or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {title}", "",
             f"Measured {stamp} on {info['cpu']} ({info['cores']} cores), ONNX Runtime {info['onnxruntime']} CPU EP, "
             f"{threads} intra-op threads, fp32, batch 1; glibc malloc env (DESIGN §4) set: {info['malloc_env_set']}. "
             f"Command: `{command}`.",
             f"Every contender at a size is timed round-robin in one process ({rounds} rounds after a warm-up): "
             "the ratios are medians of per-round ratios and are what to quote; absolute times on these shared "
             "machines move by +-30 % between runs. Our graphs are the simplified static ONNX files the export "
             "ships; the peers (../shared/peers) have dynamic shapes.", "",
             "| model | LR input | params | MACs / output px | ONNX nodes | ms | vs RLFN | vs SPAN |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        params = f"{r['params']:,}" if "params" in r else "-"
        macs = f"{r['macs_per_out_px']:,.0f}" if "macs_per_out_px" in r else "-"
        lines.append(f"| {r['model']} | {r['lr_size']}x{r['lr_size']} | {params} | {macs} | {r.get('onnx_nodes', '-')} "
                     f"| {r['ms']:.1f} | {r['x_rlfn']:.2f}x | {r['x_span']:.2f}x |")
    for name, prof in result["profiles"].items():
        lines += ["", f"## {name}: ONNX Runtime kernel time by op type (one {result.get('profile_size', '')} tile)",
                  "", f"Data movement (Transpose, Pad, Slice, Split, Concat, Gather, reorders, resizes): "
                  f"**{100 * prof['data_movement_share']:.1f} %** of kernel time.", "",
                  "| op | share | nodes |", "|---|---|---|"]
        for op, v in list(prof["ops"].items())[:12]:
            lines.append(f"| {op} | {100 * v['share']:.1f} % | {v['nodes']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", type=Path,
                        help="checkpoint to time (repeatable; default: the shipped student and fast)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[264, 512],
                        help="LR input sizes (default: the cpu profile's tile, 264, and a 512x512 image)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile-size", type=int, default=264, help="input of the op profile (0: none)")
    parser.add_argument("--out", type=Path, default=RESULTS / "model_speed")
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5: a median of fewer rounds is not a measurement here")
    torch.set_num_threads(args.threads)
    ckpts = args.checkpoint or [SHIPPED / "student_x4", SHIPPED / "fast_x4"]
    models = {}
    for ckpt in ckpts:
        model, meta = load_checkpoint(ckpt)
        models[meta.get("variant") or Path(ckpt).stem] = model
    result = measure(models, args.sizes, args.rounds, args.threads, args.profile_size or None)
    result["profile_size"] = f"{args.profile_size}x{args.profile_size}"
    command = "python benchmarks/bench_model.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(result, args.threads, args.rounds, command.strip())
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "machine": machine(),
                                                          **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
