#!/usr/bin/env python3
"""Copy a trained checkpoint into mambaesr_runtime/weights/ with its training summary, export the ONNX engine of
the CPU profile's tier for its variant (mambaesr-export's pipeline: simplified, verified, with a manifest), and
evaluate what ships (the ONNX, through the tiled runtime path).

    python scripts/ship_weights.py runs/student_<stamp>/model_best --name student_x4 \
        --sets ../shared/data/benchmarks/{Set5,Set14,B100} --results benchmarks/results/student_x4

Maintenance tool: run it when new weights are trained; commit the weights, the ONNX and the results it writes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import cv2

from mambaesr_runtime.evaluation import benchmark
from mambaesr_runtime.export.pipeline import export_tier, tool_versions
from mambaesr_runtime.model.checkpoint import load_checkpoint, save_checkpoint
from mambaesr_runtime.profiles import load_profile

WEIGHTS = Path(__file__).resolve().parents[1] / "mambaesr_runtime" / "weights"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--name", required=True, help="e.g. student_x4")
    p.add_argument("--profile", default="cpu", help="export the tier of this profile that uses the variant")
    p.add_argument("--sets", nargs="+", required=True)
    p.add_argument("--results", required=True, help="folder for results.md/json and crops.png")
    p.add_argument("--note", default="", help="a sentence stored in the training summary")
    args = p.parse_args(argv)

    model, info = load_checkpoint(args.checkpoint)
    run = Path(args.checkpoint).resolve().parent
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    last = json.loads((run / "model_last.json").read_text()).get("training", {}) if (run / "model_last.json").is_file() else {}
    val = (info.get("training") or {}).get("val", {})
    summary = {
        "data": config.get("train", {}).get("train_dirs"),
        "steps": (info.get("training") or {}).get("steps"),
        "run_steps": metrics.get("steps"),
        "hardware": config.get("gpu") or f"CPU: {cpu_name()}",
        "wall_time_s": last.get("wall_time_s"),
        "validation": {k: v for k, v in val.items() if k != "step"},
        "distilled_from": config.get("train", {}).get("teacher"),
        "train_config": config.get("train"),
        "note": args.note,
    }
    base = WEIGHTS / args.name
    save_checkpoint(model, base, variant=info.get("variant"), training=summary)
    profile = load_profile(args.profile)
    tier = next(t for t in profile.tiers if t.variant == info.get("variant"))
    # The same pipeline as mambaesr-export: simplified, verified against PyTorch, with its manifest.
    art = export_tier(model.eval(), base.with_suffix(".safetensors"), profile, tier, WEIGHTS, tool_versions(),
                      force=True)
    if tier.small() is not None:  # and the tier's engine for small images (issue 24)
        export_tier(model.eval(), base.with_suffix(".safetensors"), profile, tier.small(), WEIGHTS, tool_versions(),
                    force=True)
    onnx_path = art.onnx
    sets = {Path(s).name: s for s in args.sets}
    result = benchmark.evaluate(onnx_path, sets, overlap=tier.overlap)
    result["model"] = f"mambaesr_runtime/weights/{onnx_path.name}"
    sheet = benchmark.crop_sheet(onnx_path, args.sets[0], overlap=tier.overlap)
    out = benchmark.write_report(result, args.results, sheet)
    if (run / "curves.png").is_file():
        cv2.imwrite(str(out / "curves.png"), cv2.imread(str(run / "curves.png")))
    print(benchmark.markdown_table(result))
    print(f"shipped {base}.safetensors/.json and {onnx_path}; report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
