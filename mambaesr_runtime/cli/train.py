"""``mambaesr-train``: train a teacher, a distilled student or the fast tier, run the whole pipeline, or summarise.

    mambaesr-train student --teacher runs/teacher_.../model_best --time-budget 25m
    mambaesr-train pipeline --time-budget 25m
    mambaesr-train resume runs/latest --time-budget 25m
    mambaesr-train summary
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from ..errors import MambaESRError
from .flags import for_cli
from .signals import describe, exit_code, guarded_main

#: The training arguments the library's errors name, and the flags that set them here.
FLAGS = {"device": "--device", "init": "--init", "vgg_weights": "--vgg-weights"}
from ..model.config import VARIANTS
from ..training.losses import PIXEL_LOSSES  # torch-free: the loss functions import torch themselves

SHARED = Path("../shared/data")
# Kodak and McMaster are common test sets: never trained on by default (see training.data.TEST_SET_FOLDERS).
DEFAULT_TRAIN = [str(SHARED / "train" / d)
                 for d in ("T91", "BSD200", "DIV2K", "Flickr2K", "DIV2K_valid_crop256", "Unsplash")]
DEFAULT_VAL = [str(SHARED / "benchmarks" / d) for d in ("Set5", "Set14")]
DEFAULT_EVAL = DEFAULT_VAL + [str(SHARED / "benchmarks" / "B100")]


def parse_override(text: str) -> tuple[str, object]:
    """'num_blocks=4' -> ('num_blocks', 4): the value is read as JSON (numbers, true/false, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"cannot read model override {text!r}; use KEY=VALUE, e.g. num_blocks=4")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def parse_duration(text: str) -> float:
    """'90', '90s', '25m', '1.5h' -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"cannot read duration {text!r}; use e.g. 90s, 25m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", choices=sorted(VARIANTS), help="model variant (default: the stage's own)")
    p.add_argument("--train-dir", action="append", dest="train_dirs", help="HR folder (repeatable)")
    p.add_argument("--val-dir", action="append", dest="val_dirs", help="benchmark folder for validation")
    p.add_argument("--guard-dir", action="append", dest="guard_dirs",
                   help="benchmark folder the weights will be reported on: training images copying it are refused "
                        "(default: Set5, Set14 and B100 where present)")
    p.add_argument("--arch", action="append", type=parse_override, default=[], metavar="KEY=VALUE",
                   help="replace one field of the variant's model config (repeatable), e.g. --arch num_blocks=4")
    p.add_argument("--steps", type=int, default=10_000, help="optimiser steps (0: as many as --time-budget allows)")
    p.add_argument("--compile", action="store_true", help="train through torch.compile (keep TORCHINDUCTOR_CACHE_DIR)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory (faster for conv layouts)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48, help="LR crop size")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200, dest="warmup_steps")
    p.add_argument("--loss", default="l1", choices=list(PIXEL_LOSSES),
                   help="pixel loss (mse: a final fine-tune stage at a low learning rate)")
    p.add_argument("--alpha", type=float, default=0.2, help="output distillation weight")
    p.add_argument("--feature-weight", type=float, default=0.0, help="feature distillation weight (needs a teacher)")
    p.add_argument("--perceptual-weight", type=float, default=0.0, help="VGG19 perceptual loss weight (beta)")
    p.add_argument("--vgg-weights", help="local safetensors file of torchvision's VGG19 features (never downloaded)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--early-stop", type=int, default=0, dest="early_stop_patience")
    p.add_argument("--time-budget", type=parse_duration, dest="time_budget_s", help="e.g. 25m")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int)
    p.add_argument("--val-max-images", type=int)
    p.add_argument("--cache-dir", default="runs/cache", help="LR cache (default runs/cache)")
    p.add_argument("--runs", default="runs", help="run records root (default runs)")
    p.add_argument("--init", help="start from this checkpoint's weights (fine-tuning; fresh optimiser and schedule)")


def _config(args, kind: str, variant: str, teacher=None):
    from ..training.loop import TrainConfig

    return TrainConfig(kind=kind, variant=args.variant or variant, train_dirs=tuple(args.train_dirs or DEFAULT_TRAIN),
                       val_dirs=tuple(args.val_dirs or DEFAULT_VAL),
                       guard_dirs=tuple(args.guard_dirs or [d for d in DEFAULT_EVAL if Path(d).is_dir()]),
                       model_overrides=dict(args.arch), steps=args.steps, batch=args.batch,
                       patch=args.patch, lr=args.lr, warmup_steps=args.warmup_steps, loss=args.loss,
                       teacher=teacher, alpha=args.alpha, feature_weight=args.feature_weight,
                       perceptual_weight=args.perceptual_weight, vgg_weights=args.vgg_weights,
                       eval_every=args.eval_every,
                       early_stop_patience=args.early_stop_patience, time_budget_s=args.time_budget_s,
                       device=args.device, amp=args.amp, seed=args.seed, max_images=args.max_images,
                       val_max_images=args.val_max_images, cache_dir=args.cache_dir,
                       init=getattr(args, "init", None), compile=args.compile,
                       channels_last=args.channels_last)


def _progress(entry: dict) -> None:
    best = entry.get("best_val_psnr")
    print(f"\rstep {entry['step']}/{entry['of']}  loss {entry['loss']:.4f}  lr {entry['lr']:.2e}"
          + (f"  best val {best:.2f} dB" if best else ""), end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    return guarded_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="mambaesr-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in ("teacher", "student", "fast"):
        p = sub.add_parser(kind, help=f"train the {kind}")
        _add_training_args(p)
        if kind != "teacher":
            p.add_argument("--teacher", help="teacher checkpoint for distillation (omit to train without)")
    p = sub.add_parser("pipeline", help="teacher -> distilled student -> distilled fast -> evaluation")
    _add_training_args(p)
    p.add_argument("--eval-dir", action="append", dest="eval_dirs", help="benchmark folder for the final evaluation")
    p.add_argument("--teacher-variant", default="teacher")
    p = sub.add_parser("resume", help="continue a run from its last saved state")
    p.add_argument("run", help="run folder (runs/<kind>_<timestamp> or runs/latest)")
    p.add_argument("--time-budget", type=parse_duration, dest="time_budget_s")
    p = sub.add_parser("summary", help="one line about the latest run (its latest average PSNR)")
    p.add_argument("--runs", default="runs")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        from ..training import loop, pipeline, records

        if args.command == "summary":
            print(records.latest_summary(args.runs))
            return 0
        if args.command == "resume":
            run = records.RunRecord.resume(args.run)
            cfg = loop.TrainConfig.from_dict({**run.config()["train"], "time_budget_s": args.time_budget_s})
            path = loop.train(cfg, resume=run.path, progress=_progress)
            print(file=sys.stderr)
        elif args.command == "pipeline":
            base = _config(args, "pipeline", "student")
            path = pipeline.run_pipeline(base, tuple(args.eval_dirs or DEFAULT_EVAL), args.runs,
                                         {"teacher": args.teacher_variant, **({"student": args.variant,
                                          "fast": args.variant} if args.variant else {})},
                                         args.time_budget_s, progress=_progress)
            print(file=sys.stderr)
            print((path / "results.md").read_text())
        else:
            cfg = _config(args, args.command, args.command, getattr(args, "teacher", None))
            path = loop.train(cfg, runs_root=args.runs, progress=_progress)
            print(file=sys.stderr)
        print(f"run record: {path}")
        metrics = json.loads((Path(path) / "metrics.json").read_text())
        if metrics.get("stopped"):
            print(f"stopped: {metrics['stopped']} at step {metrics['steps']}")
        return 0
    except MambaESRError as exc:
        print(f"\nerror: {for_cli(exc, FLAGS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl+C, SIGTERM or SIGHUP
        print(f"\n{describe(exc)}: the last saved state is intact; continue with mambaesr-train resume runs/latest",
              file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
