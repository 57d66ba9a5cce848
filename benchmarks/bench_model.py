"""Speed of the scan and the full `student` / `fast` models: PyTorch eager CPU and ONNX Runtime CPU.

Prints a table and writes it to benchmarks/results/model_speed.md (+ .json). Median of --repeats timed runs after
one warm-up (all configurations timed round-robin, so they share the machine's conditions), at 64x64 and 128x128
LR tiles and a 256x256 LR input; parameters, MACs per output pixel (matmul and
conv MACs counted by torch's FLOP counter; elementwise work is not counted) and the exported ONNX node count.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824 \
        python benchmarks/bench_model.py

(The glibc settings keep PyTorch eager from returning and re-faulting large temporaries on every call: DESIGN §4.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.backends.onnxruntime import OrtBackend
from mambaesr_runtime.model.config import variant
from mambaesr_runtime.model.net import build_model, count_parameters
from mambaesr_runtime.model.scan import scan_2d

RESULTS = Path(__file__).resolve().parent / "results"
# Published conv models on this machine kind (issue 2's table: ORT CPU, 2 threads, fp32, 256x256 LR input, ms).
REFERENCE_256_MS = {"SPAN-ch28": 182, "RLFN": 669, "BSRN": 932, "IMDN": 2091}
TARGETS = {"student": ("<= 3x RLFN", 3 * REFERENCE_256_MS["RLFN"]), "fast": ("<= 1x RLFN", REFERENCE_256_MS["RLFN"])}


def round_robin_ms(fns: dict, repeats: int) -> dict:
    """Median ms per callable, timed round-robin (one call of each per round) so that every entry sees the same
    machine conditions: on these shared machines speed drifts by 20 % or more within minutes."""
    for fn in fns.values():
        fn()  # warm-up (ORT arenas, torch caches)
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(1000 * (time.perf_counter() - start))
    return {key: statistics.median(t) for key, t in times.items()}


class ScanOnly(nn.Module):
    """One mixer's scan (all four directions) with the student's widths, inputs derived from one tensor."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        k, h, n = len(cfg.directions), cfg.heads, cfg.state_dim
        self.proj = nn.Conv2d(cfg.inner_dim, k * (2 * n + h), 1)
        self.A = nn.Parameter(torch.rand(k, h) + 0.5)

    def forward(self, x):
        cfg = self.cfg
        b, d, H, W = x.shape
        k, h, n = len(cfg.directions), cfg.heads, cfg.state_dim
        B, C, dt = self.proj(x).reshape(b, k, 2 * n + h, H, W).split([n, n, h], dim=2)
        y = scan_2d(x.reshape(b, h, d // h, H, W), torch.sigmoid(dt), self.A, B, C, cfg.directions, cfg.chunk)
        return y.reshape(b, d, H, W)


def prepare(module: nn.Module, shape: tuple, threads: int, path: Path):
    """(torch eager callable, ORT callable, ONNX node count) for ``module`` on a random input of ``shape``."""
    module = module.eval()
    x = torch.rand(*shape)
    if isinstance(module, ScanOnly):
        with torch.no_grad():
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["lr"])
    else:
        export_onnx(module, path, shape[-2], shape[-1])
    backend = OrtBackend(path, threads)
    xn = x.numpy()

    def eager():
        with torch.no_grad():
            module(x)

    return eager, (lambda: backend.infer(xn)), len(onnx.load(path).graph.node)


def macs_per_output_pixel(model: nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, size, size))
    out_pixels = (size * model.cfg.scale) ** 2
    return counter.get_total_flops() / 2 / out_pixels


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "malloc_env_set": "MALLOC_MMAP_THRESHOLD_" in os.environ}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--out", type=Path, default=RESULTS / "model_speed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows, eager, ort_fns = [], {}, {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in ("student", "fast"):
            cfg = variant(name)
            model = build_model(cfg)
            params = count_parameters(model)
            macs = macs_per_output_pixel(model, 32)
            for what, module in (("scan", ScanOnly(cfg)), ("model", model)):
                for size in args.sizes:
                    shape = (1, cfg.inner_dim, size, size) if what == "scan" else (1, 3, size, size)
                    key = (name, what, size)
                    eager[key], ort_fns[key], nodes = prepare(module, shape, args.threads, tmp / f"{len(rows)}.onnx")
                    rows.append({"variant": name, "what": what, "lr_size": size,
                                 "params": params if what == "model" else None,
                                 "macs_per_out_px": macs if what == "model" else None, "onnx_nodes": nodes})
        ort_ms = round_robin_ms(ort_fns, args.repeats)
        eager_ms = round_robin_ms(eager, args.repeats)
    for r in rows:
        key = (r["variant"], r["what"], r["lr_size"])
        r.update(torch_eager_ms=eager_ms[key], ort_ms=ort_ms[key])
        print(f"{key[0]:8s} {key[1]:6s} {key[2]:4d}: torch {r['torch_eager_ms']:8.1f} ms  ORT {r['ort_ms']:8.1f} ms  "
              f"nodes {r['onnx_nodes']}", file=sys.stderr)
    info = machine()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/bench_model.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Model speed (CPU)",
        "",
        f"Measured {stamp} on {info['cpu']} ({info['cores']} cores), ONNX Runtime {info['onnxruntime']} "
        f"(CPU EP, {args.threads} intra-op threads), PyTorch {info['torch']} eager ({args.threads} threads), "
        f"Python {info['python']}; glibc malloc env from DESIGN §4 set: {info['malloc_env_set']}.",
        f"Command: `{command.strip()}`. Median of {args.repeats} runs after one warm-up, all rows timed round-robin "
        "(one call of each per round, ORT first, then torch) so that they share the machine's conditions; fp32; "
        "batch 1; random weights (speed does not depend on them). Shared machines are noisy: on this one the same "
        "session's median moved by up to ±20 % between runs minutes apart.",
        "",
        "| variant | part | LR input | params | MACs / output px | ONNX nodes | torch eager ms | ORT ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = "" if r["params"] is None else f"{r['params']:,}"
        macs = "" if r["macs_per_out_px"] is None else f"{r['macs_per_out_px']:,.0f}"
        lines.append(f"| {r['variant']} | {r['what']} | {r['lr_size']}x{r['lr_size']} | {params} | {macs} | "
                     f"{r['onnx_nodes']} | {r['torch_eager_ms']:.1f} | {r['ort_ms']:.1f} |")
    lines += ["", "## Against the published conv models (ORT CPU, 2 threads, 256x256 LR -> 1024x1024)", "",
              "| variant | ORT ms | target | target ms | vs RLFN (669 ms) | vs SPAN (182 ms) | met |", "|---|---|---|---|---|---|---|"]
    for name, (label, limit) in TARGETS.items():
        hit = [r for r in rows if r["variant"] == name and r["what"] == "model" and r["lr_size"] == 256]
        if hit:
            ms = hit[0]["ort_ms"]
            lines.append(f"| {name} | {ms:.0f} | {label} | {limit} | {ms / REFERENCE_256_MS['RLFN']:.2f}x | "
                         f"{ms / REFERENCE_256_MS['SPAN-ch28']:.2f}x | {'yes' if ms <= limit else 'NO'} |")
    lines += ["", "Reference times are the issue's measurements of the authors' weights on this machine kind: "
              + ", ".join(f"{k} {v} ms" for k, v in REFERENCE_256_MS.items()) + "."]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table)
    args.out.with_suffix(".json").write_text(json.dumps({"measured": stamp, "command": command.strip(),
                                                          "machine": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
