"""The seed's pipeline: teacher -> distilled student -> distilled fast tier -> evaluation, under one time budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..imaging.sets import load_benchmark
from ..model.checkpoint import load_checkpoint
from .loop import TrainConfig, evaluate_model, resolve_device, train
from .records import RunRecord

#: Share of the pipeline's budget given to each stage (the rest is the final evaluation).
BUDGET_SHARES = {"teacher": 0.4, "student": 0.3, "fast": 0.2}


def run_pipeline(base: TrainConfig, eval_dirs: tuple[str, ...] = (), runs_root: str | os.PathLike = "runs",
                 variants: dict | None = None, time_budget_s: float | None = None, progress=None) -> Path:
    """Train the teacher, then the student and the fast tier distilled from it, then evaluate both on
    ``eval_dirs``. ``base`` supplies the shared settings (data, patch, batch, steps, alpha...); ``variants``
    overrides the model per stage (e.g. ``{"teacher": "tiny"}`` for a smoke run). Returns the pipeline's run folder,
    whose ``metrics.json`` and ``results.md`` hold the evaluation and the stage run folders."""
    variants = {"teacher": "teacher", "student": "student", "fast": "fast", **(variants or {})}
    record = RunRecord.create(runs_root, "pipeline")
    record.write_config({"base": base.to_dict(), "variants": variants, "eval_dirs": list(eval_dirs),
                         "time_budget_s": time_budget_s})
    stages = {}
    teacher_ckpt = None
    for stage in ("teacher", "student", "fast"):
        budget = None if time_budget_s is None else BUDGET_SHARES[stage] * time_budget_s
        cfg = TrainConfig.from_dict({**base.to_dict(), "kind": stage, "variant": variants[stage],
                                     "teacher": teacher_ckpt if stage != "teacher" else None,
                                     "time_budget_s": budget})
        run = train(cfg, runs_root=runs_root, progress=progress)
        stages[stage] = str(run)
        if stage == "teacher":
            teacher_ckpt = str(run / ("model_best" if (run / "model_best.json").is_file() else "model_last"))
    device = resolve_device(base.device)
    benches = {Path(d).name: load_benchmark(d, base.scale) for d in eval_dirs}
    results = {}
    for stage in ("student", "fast"):
        run = Path(stages[stage])
        ckpt = run / ("model_best" if (run / "model_best.json").is_file() else "model_last")
        model, info = load_checkpoint(ckpt, device=device)
        results[stage] = {"checkpoint": str(ckpt), "steps": info["training"]["steps"],
                          "sets": {k: {"psnr": v["psnr"], "ssim": v["ssim"]}
                                   for k, v in evaluate_model(model, benches, base.scale, device).items()}}
    record.write_metrics({"stages": stages, "evaluation": results})
    lines = ["| model | steps | " + " | ".join(benches) + " |", "|---|---|" + "---|" * len(benches)]
    for stage, r in results.items():
        cells = " | ".join(f"{r['sets'][k]['psnr']:.2f} / {r['sets'][k]['ssim']:.4f}" for k in benches)
        lines.append(f"| {stage} | {r['steps']} | {cells} |")
    table = "\n".join(lines)
    (record.path / "results.md").write_text(f"PSNR-Y / SSIM, x{base.scale}, shave {base.scale} (torch, full image)\n\n"
                                            f"{table}\n")
    (record.path / "stages.json").write_text(json.dumps(stages, indent=2) + "\n")
    return record.path
