"""Model speed on ONNX Runtime (CPU) as ratios to the published peers, timed in the same process.

For each model: parameters, MACs per output pixel (matmul and conv MACs by torch's FLOP counter), the node count of
the simplified static ONNX the export ships, and the time of one call at each LR size next to RLFN and SPAN
(../shared/peers) on the same input: all contenders timed round-robin (one call each per round), the ratio is the
median over rounds of the per-round ratio. Then ONNX Runtime's profile on one runtime tile: the share of kernel time
per op type and the share spent only moving data (Transpose, Pad, Slice, Split, Concat, Gather, layout reorders...).

The int8 tier: each model's int8 QDQ graph at each size, made from that fp32 graph by the export's own quantization
(``mambaesr_runtime.export.int8_onnx``: the same node choice and calibration sample as ``mambaesr-export --precision
int8``), timed in the same round-robin; ``vs fp32`` is the median per-round speed-up over the fp32 graph of the same
model, and its PSNR against the fp32 graph on the calibration-independent parity tiles is in the table.

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

from mambaesr_runtime.export import int8_onnx
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
    """The simplified static ONNX of ``model`` for a ``size`` x ``size`` input (what mambaesr-export ships); one
    already in ``folder`` (``--work``) is reused."""
    raw, path = folder / f"{stem}_{size}_raw.onnx", folder / f"{stem}_{size}.onnx"
    if path.is_file():
        return path
    was = model.pad_aware
    model.set_pad_aware(model.engine_pad_value is not None)  # as export_tier exports it
    try:
        export_onnx(model, raw, size, size)
    finally:
        model.pad_aware = was
    simplify(raw, str(path))
    return path


def quantized(model, fp32_path: Path, size: int, calibration: Path | None) -> tuple[Path, dict]:
    """The int8 QDQ graph of ``fp32_path`` as the export makes it, and its parity numbers against fp32 (both kept
    beside it: a ``--work`` folder is reused)."""
    path = fp32_path.with_name(fp32_path.stem + "_int8.onnx")
    record = path.with_suffix(".json")
    if path.is_file() and record.is_file():
        return path, json.loads(record.read_text())
    sample = int8_onnx.calibration_sample(calibration, size, model.cfg.scale, model.engine_pad_value)
    info = int8_onnx.quantize_int8(fp32_path, path, sample)
    info["parity"] = int8_onnx.check_int8_parity(path, fp32_path, model.engine_pad_value, min_psnr=0.0)
    record.write_text(json.dumps(info))
    return path, info


def measure(models: dict, sizes: list[int], rounds: int, threads: int, profile_size: int | None,
            calibration: Path | None = None, int8_sizes: tuple[int, ...] = (), work: Path | None = None) -> dict:
    """Rows for ``models`` ({name: MambaESR}) next to the peers, and their int8 graphs at ``int8_sizes`` when
    ``calibration`` (a folder of training images) is given; graphs are made in ``work`` (reused) or a temporary
    folder. See the module docstring."""
    peer_files = peers.peer_paths()
    peer_sessions = {name: peers.session(path, threads) for name, path in peer_files.items()}
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory(prefix="mambaesr-bench-") as scratch:
        tmp = work or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        info = {name: {"params": count_parameters(m), "macs_per_out_px": macs_per_output_pixel(m)}
                for name, m in models.items()}
        for size in sizes:
            x = np.random.default_rng(size).random((1, 3, size, size), dtype=np.float32)
            fns = {name: peers.runner(s, x) for name, s in peer_sessions.items()}
            of_model, quant = {}, {}
            for name, model in models.items():
                path = exported(model, size, Path(tmp), name)
                info[name][f"nodes_{size}"] = len(onnx.load(path).graph.node)
                fns[name] = peers.runner(peers.session(path, threads), x)
                of_model[name] = name
                if size == profile_size:
                    profiles[name] = peers.op_profile(path, x, threads)
                if calibration is not None and size in int8_sizes:
                    q_path, quant[f"{name} int8"] = quantized(model, path, size, calibration)
                    quant[f"{name} int8"]["nodes"] = len(onnx.load(q_path).graph.node)
                    fns[f"{name} int8"] = peers.runner(peers.session(q_path, threads), x)
                    of_model[f"{name} int8"] = name
                    if size == profile_size:
                        profiles[f"{name} int8"] = peers.op_profile(q_path, x, threads)
            times = peers.round_robin(fns, rounds)
            for name in fns:
                base = of_model.get(name)
                row = {"model": name, "lr_size": size, "ms": 1000 * float(np.median(times[name])),
                       "x_rlfn": peers.median_ratio(times, name, "RLFN"),
                       "x_span": peers.median_ratio(times, name, "SPAN")}
                if base is not None:
                    row.update(params=info[base]["params"], macs_per_out_px=info[base]["macs_per_out_px"],
                               onnx_nodes=info[base][f"nodes_{size}"], precision="fp32")
                if name in quant:
                    parity = quant[name]["parity"]
                    row.update(precision="int8", onnx_nodes=quant[name]["nodes"],
                               speedup_vs_fp32=peers.median_ratio(times, base, name),
                               psnr_vs_fp32_db=parity["int8_vs_fp32_psnr_db"],
                               saturated_psnr_vs_fp32_db=parity["int8_vs_fp32_saturated_tile_psnr_db"],
                               quantized_nodes=quant[name]["node_counts"])
                rows.append(row)
    return {"rows": rows, "profiles": profiles}


def machine() -> dict:
    return {"cpu": peers.cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "malloc_env_set": "MALLOC_MMAP_THRESHOLD_" in os.environ}


def table(result: dict, threads: int, rounds: int, command: str, title: str = "Model speed (ONNX Runtime, CPU)",
          stamp: str | None = None) -> str:
    info = machine()
    stamp = stamp or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {title}", "",
             f"Measured {stamp} on {info['cpu']} ({info['cores']} cores), ONNX Runtime {info['onnxruntime']} CPU EP, "
             f"{threads} intra-op threads, batch 1; glibc malloc env (DESIGN §4) set: {info['malloc_env_set']}. "
             f"Command: `{command}`.",
             f"Every contender at a size is timed round-robin in one process ({rounds} rounds after a warm-up): "
             "the ratios are medians of per-round ratios and are what to quote; absolute times on these shared "
             "machines move by +-30 % between runs. Our graphs are the simplified static ONNX files the export "
             "ships (int8: their QDQ graphs as `mambaesr-export --precision int8` makes them; `speed-up` is the "
             "median per-round fp32 / int8 time of the same model, `PSNR vs fp32` over the real parity tiles, the "
             "saturated tile in brackets); the peers (../shared/peers) have dynamic shapes.", "",
             "| model | LR input | params | MACs / output px | ONNX nodes | ms | vs RLFN | vs SPAN | int8 speed-up "
             "| int8 PSNR vs fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        params = f"{r['params']:,}" if "params" in r else "-"
        macs = f"{r['macs_per_out_px']:,.0f}" if "macs_per_out_px" in r else "-"
        speed = f"**{r['speedup_vs_fp32']:.2f}x**" if "speedup_vs_fp32" in r else "-"
        psnr = (f"{r['psnr_vs_fp32_db']:.1f} dB ({r['saturated_psnr_vs_fp32_db']:.1f})" if "psnr_vs_fp32_db" in r
                else "-")
        lines.append(f"| {r['model']} | {r['lr_size']}x{r['lr_size']} | {params} | {macs} | {r.get('onnx_nodes', '-')} "
                     f"| {r['ms']:.1f} | {r['x_rlfn']:.2f}x | {r['x_span']:.2f}x | {speed} | {psnr} |")
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
    parser.add_argument("--calibration", type=Path, default=Path("../shared/data/train"),
                        help="training images the int8 graphs are calibrated on (default ../shared/data/train)")
    parser.add_argument("--no-int8", action="store_true", help="time the fp32 graphs only")
    parser.add_argument("--int8-sizes", type=int, nargs="+", default=[264],
                        help="LR sizes that get an int8 row (default: the cpu profile's tile; calibrating a larger "
                             "graph needs memory for every activation of a batch)")
    parser.add_argument("--work", type=Path, help="folder for the exported and quantized graphs, reused when "
                                                  "present (default: a temporary one)")
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
    result = measure(models, args.sizes, args.rounds, args.threads, args.profile_size or None,
                     None if args.no_int8 else args.calibration, tuple(args.int8_sizes), args.work)
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
