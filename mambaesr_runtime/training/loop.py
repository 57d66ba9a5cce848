"""The training loop: AdamW, warmup + cosine, gradient clipping, EMA, AMP on GPU, optional distillation from a frozen
teacher, validation PSNR with early stopping, a wall-clock budget, and exact resume.

Everything a resume needs is stored without pickles: ``train_state.safetensors`` (model, EMA, AdamW moments, torch
RNG) and ``train_state.json`` (step, sampler RNG, curves, best score), each written atomically; the JSON names the
step the tensors belong to, so a save interrupted between the two files is detected instead of silently mixed.
The library never prints: progress goes to ``logging`` and to the optional ``progress`` callback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, require_torch
from ..evaluation.benchmark import score_set, torch_runner
from ..imaging.sets import load_benchmark
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import VARIANTS
from ..model.config import variant as get_variant
from ..typed import from_dict
from .data import CropSampler, load_pairs
from .losses import PIXEL_LOSSES, FeatureDistiller, PerceptualLoss, distillation_loss
from .pack import verify_if_pack
from .records import RunRecord
from .state import EMA, load_state, save_state, trainables

log = logging.getLogger(__name__)
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Every field lands in the run's ``config.json``."""

    kind: str
    """Run name prefix (``teacher``, ``student``, ``fast``...): ``runs/<kind>_<timestamp>/``."""
    variant: str
    """Model variant from the variant table."""
    train_dirs: tuple[str, ...]
    """HR image folders to train on."""
    val_dirs: tuple[str, ...] = ()
    """Benchmark folders (``<Set>/HR`` + ``<Set>/LR_bicubic/X<s>``) for validation; never B100 (no tuning on it)."""
    model_overrides: dict = dataclasses.field(default_factory=dict)
    """Fields of the variant's :class:`ModelConfig` replaced for this run (architecture studies), e.g.
    ``{"num_blocks": 4}``; the checkpoint records the full resulting config."""
    guard_dirs: tuple[str, ...] = ()
    """More benchmark folders the weights will be reported on: a training image that copies one of their images (or
    of a validation image) is refused."""
    scale: int = 4
    patch: int = 48
    """LR crop size."""
    batch: int = 16
    steps: int = 10_000
    """Optimiser steps; 0: as many as ``time_budget_s`` allows (the cosine's horizon is fixed from the median time
    of the first 40 steps, keeping a tenth of the budget for validation and the final save)."""
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.01
    """Cosine decays the learning rate to ``lr * min_lr_ratio`` at ``steps``."""
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss: str = "l1"
    teacher: str | None = None
    """Checkpoint of a frozen teacher for output distillation."""
    alpha: float = 0.2
    """Distillation weight (the seed paper's best: 0.2)."""
    feature_weight: float = 0.0
    """Weight of feature distillation (student blocks -> teacher blocks through 1x1 adapters); needs a teacher."""
    perceptual_weight: float = 0.0
    """Weight (beta) of the VGG19 perceptual loss; needs ``vgg_weights``."""
    vgg_weights: str | None = None
    """Local safetensors file with torchvision's VGG19 ``features`` weights (never downloaded)."""
    eval_every: int = 500
    early_stop_patience: int = 0
    """Stop after this many evaluations without a better validation PSNR (0: never)."""
    time_budget_s: float | None = None
    """Wall-clock budget of this invocation; the run stops cleanly (saved, evaluated) before it runs out."""
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    """``auto``: bf16 autocast on CUDA, off on CPU."""
    max_images: int | None = None
    val_max_images: int | None = None
    cache_dir: str | None = None
    """Where LR versions of the training images are cached (keyed by file content)."""
    channels_last: bool = False
    """Keep the model and batches in channels-last memory (the same maths; measured ~12 % faster per step for the
    conv-heavy line layout on this CPU)."""
    compile: bool = False
    """Train through ``torch.compile`` (the first compile takes minutes; keep ``TORCHINDUCTOR_CACHE_DIR``)."""
    init: str | None = None
    """Checkpoint whose weights start the run (fine-tuning: fresh optimiser, schedule and EMA); must be the same
    variant and scale."""

    def __post_init__(self):
        problems = []
        if self.variant not in VARIANTS:
            problems.append(f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        if self.loss not in PIXEL_LOSSES:
            problems.append(f"loss must be one of {PIXEL_LOSSES}, got {self.loss!r}")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if not 0 <= self.alpha <= 1:
            problems.append(f"alpha must be in [0, 1], got {self.alpha}")
        for name in ("patch", "batch", "eval_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or (self.steps == 0 and not self.time_budget_s):
            problems.append(f"steps must be >= 1, or 0 with a time budget (as many as fit), got {self.steps}")
        if not self.train_dirs:
            problems.append("train_dirs is empty: give at least one HR image folder")
        if self.feature_weight and not self.teacher:
            problems.append("feature_weight > 0 needs a teacher checkpoint")
        if self.feature_weight < 0 or self.perceptual_weight < 0:
            problems.append("loss weights must be >= 0")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return from_dict(cls, data, "training config", tuple_fields=("train_dirs", "val_dirs", "guard_dirs"))

    def model_config(self):
        """The :class:`ModelConfig` this run trains: the variant at ``scale`` with ``model_overrides`` applied."""
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.model_overrides.items()}
        try:
            return get_variant(self.variant, scale=self.scale, **overrides)
        except TypeError as exc:  # dataclasses.replace names the unknown field
            raise ConfigError(f"invalid model override {sorted(self.model_overrides)}: {exc}") from exc


def lr_at(cfg: TrainConfig, step: int, total: int | None = None) -> float:
    """Linear warmup to ``cfg.lr``, then cosine down to ``cfg.lr * cfg.min_lr_ratio`` at ``total`` (default
    ``cfg.steps``)."""
    total = total or cfg.steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * t))


def resolve_device(name: str) -> str:
    torch = require_torch()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but this PyTorch build sees no CUDA GPU; use device='cpu'")
    return name


def evaluate_model(model, benchmarks: dict, scale: int, device: str) -> dict:
    """{set: {'psnr', 'ssim', 'images'}} for whole-image torch inference (fp32), by the evaluation protocol."""
    model.eval()
    run = torch_runner(model, device)
    return {name: score_set(run, triples, scale, bicubic=False) for name, triples in benchmarks.items()}


def thin_curve(entries: list, recent: int = 2000, every: int = 10) -> list:
    """Per-step training entries with the older part thinned to every ``every``-th step (the latest ``recent`` kept
    whole): long runs' records (and the resume state kept in git) stay small and still show the whole curve."""
    if len(entries) <= recent:
        return entries
    old, new = entries[:-recent], entries[-recent:]
    return [e for e in old if e["step"] % every == 0] + new


def _param_groups(model, distiller, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on conv/linear weights only. Norm gains, biases and the scan's own parameters
    (``A_log``, ``dt_bias``, ``D``: decay rates and skips, not feature detectors) are not pulled towards 0."""
    decay, no_decay = [], []
    for name, p in trainables(model, distiller):
        (decay if p.ndim >= 2 and not name.endswith(("A_log", "dt_bias")) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class _Run:
    """Everything one invocation of :func:`train` works with; the steps below read and update it."""

    cfg: TrainConfig
    record: RunRecord
    device: str
    amp_dtype: object
    benchmarks: dict
    teacher: object
    perceptual: object
    model: object
    forward: object
    eval_model: object
    sampler: CropSampler
    distiller: object
    trainable: list
    opt: object
    ema: EMA
    start_wall: float
    step: int = 0
    curves: dict = field(default_factory=lambda: {"train": [], "val": []})
    best: float = -math.inf
    stale: int = 0
    horizon: int | None = None
    """The step the schedule ends at; ``None`` until the first steps' times size it (steps = 0, a time budget)."""
    elapsed_before: float = 0.0
    """Wall time of the earlier invocations of a resumed run."""

    @property
    def best_or_none(self) -> float | None:
        return None if self.best == -math.inf else self.best

    def wall_s(self) -> float:
        return self.elapsed_before + time.monotonic() - self.start_wall


def _inputs(cfg: TrainConfig, device: str) -> tuple:
    """(validation sets, training pairs, teacher, perceptual loss): every input, checked before a run folder exists."""
    for folder in (*cfg.train_dirs, *cfg.val_dirs, *cfg.guard_dirs):
        verify_if_pack(folder)  # a training pack's sha256 sums are checked before anything is read from it
    benchmarks = {Path(d).name: load_benchmark(d, cfg.scale)[:cfg.val_max_images] for d in cfg.val_dirs}
    guarded = {**{Path(d).name: load_benchmark(d, cfg.scale) for d in cfg.guard_dirs if d not in cfg.val_dirs},
               **{Path(d).name: load_benchmark(d, cfg.scale) for d in cfg.val_dirs}}
    pairs = load_pairs(cfg.train_dirs, cfg.scale, cfg.cache_dir, cfg.max_images, refuse=guarded)
    teacher = None
    if cfg.teacher:
        teacher, _ = load_checkpoint(cfg.teacher, device=device)
        if teacher.cfg.scale != cfg.scale:
            raise ConfigError(f"teacher {cfg.teacher} is x{teacher.cfg.scale}, the run is x{cfg.scale}")
        teacher.requires_grad_(False)
    perceptual = PerceptualLoss(cfg.vgg_weights, device) if cfg.perceptual_weight else None
    return benchmarks, pairs, teacher, perceptual


def _open_record(cfg: TrainConfig, runs_root, resume) -> RunRecord:
    """The run folder: a new one, or the resumed run's, whose training config must be this one."""
    record = RunRecord.resume(resume) if resume else RunRecord.create(runs_root, cfg.kind)
    # Compared as stored (JSON: tuples become lists); the budget belongs to an invocation, not to the run.
    same = lambda d: {k: v for k, v in json.loads(json.dumps(d)).items() if k != "time_budget_s"}
    # A run started before a field existed stored no value for it: read it back through TrainConfig so the new
    # field takes its default (the value that run effectively trained with).
    if resume and same(TrainConfig.from_dict(record.config().get("train", {})).to_dict()) != same(cfg.to_dict()):
        raise ConfigError(f"the run in {record.path} was started with another training config; resume it with the "
                          f"same settings (see its config.json), or start a new run")
    return record


def _start(cfg: TrainConfig, runs_root, resume, start_wall: float) -> _Run:
    """Inputs, run folder, model (initialised or resumed), optimiser, EMA and sampler, in the order that makes a
    resumed run draw exactly what an uninterrupted one would."""
    torch = require_torch()
    from ..model.net import build_model

    device = resolve_device(cfg.device)
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if device.startswith("cuda") else "off")
    benchmarks, pairs, teacher, perceptual = _inputs(cfg, device)
    record = _open_record(cfg, runs_root, resume)
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model_config()
    model = build_model(model_cfg).to(device)
    if cfg.init and not resume:  # a resumed run restores its own weights below
        start, _ = load_checkpoint(cfg.init, device=device)
        if start.cfg != model_cfg:
            raise ConfigError(f"init={cfg.init} is a {start.cfg} model; this run trains {cfg.variant} "
                              f"({model_cfg}): start from a checkpoint of the same variant and scale")
        model.load_state_dict(start.state_dict())
        log.info("weights initialised from %s", cfg.init)
    if not resume:
        record.write_config({"train": cfg.to_dict(), "model": model_cfg.to_dict(), "device": device, "amp": amp,
                             "torch": torch.__version__,
                             "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None})
    record.attach_log()

    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sampler = CropSampler(pairs, cfg.scale, cfg.patch, cfg.batch, cfg.seed, device)
    distiller = FeatureDistiller(model, teacher, device) if cfg.feature_weight else None
    run = _Run(cfg=cfg, record=record, device=device,
               amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp), benchmarks=benchmarks,
               teacher=teacher, perceptual=perceptual, model=model, forward=None, eval_model=None, sampler=sampler,
               distiller=distiller,
               trainable=list(model.parameters()) + (list(distiller.adapters.parameters()) if distiller else []),
               opt=torch.optim.AdamW(_param_groups(model, distiller, cfg.weight_decay), lr=cfg.lr,
                                     betas=(0.9, 0.99)),
               ema=EMA(model, cfg.ema_decay), start_wall=start_wall, horizon=cfg.steps or None)
    run.eval_model = build_model(model_cfg).to(device)
    run.forward = torch.compile(model) if cfg.compile else model
    if resume:
        info = load_state(record.path / "train_state", model, run.ema, run.opt, sampler, device, distiller)
        run.step, run.curves, run.stale = info["step"], info["curves"], info["stale"]
        run.horizon = info.get("horizon", run.horizon)
        run.best = -math.inf if info["best"] is None else info["best"]
        run.elapsed_before = info["elapsed_s"]
        log.info("resumed %s at step %d", record.path, run.step)
    log.info("training %s (%s, %d params) on %s, amp %s, %d training pairs", cfg.kind, cfg.variant,
             sum(p.numel() for p in model.parameters()), device, amp, len(pairs))
    return run


def _save(run: _Run, reason: str) -> None:
    """model_last, the resume state and the metrics, as of ``run.step``."""
    cfg, record = run.cfg, run.record
    run.curves["train"] = thin_curve(run.curves["train"])
    run.ema.copy_to(run.eval_model)
    summary = {"data": list(cfg.train_dirs), "steps": run.step, "device": run.device,
               "hardware": record.config().get("gpu") or "cpu", "wall_time_s": round(run.wall_s(), 1),
               "best_val_psnr": run.best_or_none, "distilled_from": cfg.teacher}
    save_checkpoint(run.eval_model, record.path / "model_last", variant=cfg.variant, training=summary)
    save_state(record.path / "train_state", run.step, run.model, run.ema, run.opt, run.sampler,
               {"curves": run.curves, "best": run.best_or_none, "stale": run.stale, "horizon": run.horizon,
                "elapsed_s": run.wall_s()}, run.distiller)
    record.write_metrics({"curves": run.curves, "best_val_psnr": run.best_or_none, "steps": run.step,
                          "stopped": reason})
    log.info("saved step %d (%s)", run.step, reason)


def _validate(run: _Run) -> float | None:
    """The EMA weights' mean validation PSNR (None without validation sets); a new best is saved as model_best."""
    cfg = run.cfg
    if not run.benchmarks:
        return None
    run.ema.copy_to(run.eval_model)
    res = evaluate_model(run.eval_model, run.benchmarks, cfg.scale, run.device)
    score = float(np.mean([r["psnr"] for r in res.values()]))
    run.curves["val"].append({"step": run.step, **{k: {"psnr": v["psnr"], "ssim": v["ssim"]} for k, v in res.items()},
                              "mean_psnr": score})
    if score > run.best:
        run.best, run.stale = score, 0
        save_checkpoint(run.eval_model, run.record.path / "model_best", variant=cfg.variant,
                        training={"data": list(cfg.train_dirs), "steps": run.step, "val": run.curves["val"][-1],
                                  "distilled_from": cfg.teacher})
    else:
        run.stale += 1
    log.info("step %d validation %s", run.step, {k: round(v["psnr"], 3) for k, v in res.items()})
    return score


def _train_step(run: _Run, scaler) -> dict:
    """One optimiser step at the schedule's learning rate; returns the step's curve entry."""
    torch = require_torch()
    cfg = run.cfg
    lr = lr_at(cfg, run.step, run.horizon or 10**9)
    for group in run.opt.param_groups:
        group["lr"] = lr
    lr_batch, hr_batch = run.sampler.sample()
    if cfg.channels_last:
        lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=run.device.split(":")[0], dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        out = run.forward(lr_batch)
        teacher_out = run.teacher(lr_batch) if run.teacher is not None else None
        losses = distillation_loss(cfg.loss, out.float(), hr_batch,
                                   None if teacher_out is None else teacher_out.float(), cfg.alpha)
        if run.distiller is not None:
            losses["feature"] = run.distiller.loss()
            losses["total"] = losses["total"] + cfg.feature_weight * losses["feature"]
        if run.perceptual is not None:
            losses["perceptual"] = run.perceptual(out.float(), hr_batch)
            losses["total"] = losses["total"] + cfg.perceptual_weight * losses["perceptual"]
    run.opt.zero_grad(set_to_none=True)
    scaler.scale(losses["total"]).backward()
    scaler.unscale_(run.opt)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.trainable, cfg.grad_clip)
    scaler.step(run.opt)
    scaler.update()
    run.ema.update(run.model, run.step)
    run.step += 1
    return {"step": run.step, "lr": lr, "loss": losses["total"].item(), "pixel": losses["pixel"].item(),
            "kd": losses["kd"].item(), "grad_norm": grad_norm.item(),
            **{k: losses[k].item() for k in ("feature", "perceptual") if k in losses}}


def train(cfg: TrainConfig, runs_root: str | os.PathLike = "runs", resume: str | os.PathLike | None = None,
          progress=None, stop_after: int | None = None) -> Path:
    """Run (or resume) one training run; returns its run folder.

    ``progress(dict)`` is called after every step. ``stop_after``: end this invocation (saved, resumable) after that
    many steps, e.g. to train on a CPU in slices.

    The steps: :func:`_start` (inputs, run folder, model, optimiser, resume state), then :func:`_train_step` until
    the schedule's horizon, a pause, the time budget, early stopping or a non-finite loss, with :func:`_validate`
    and :func:`_save` every ``eval_every`` steps and once at the end.
    """
    torch = require_torch()
    run = _start(cfg, runs_root, resume, time.monotonic())
    # fp16 needs loss scaling (its gradients underflow); bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(run.device.split(":")[0], enabled=run.amp_dtype == torch.float16)
    step_times, reason = [], "finished"
    eval_cost, first_step = 0.0, run.step
    while run.horizon is None or run.step < run.horizon:
        t0 = time.monotonic()
        if stop_after is not None and run.step - first_step >= stop_after:
            reason = "paused"
            break
        if cfg.time_budget_s is not None:
            need = (np.median(step_times) if step_times else 0) + eval_cost + 1.0
            if t0 - run.start_wall + need > cfg.time_budget_s:
                reason = "time budget"
                break
        entry = _train_step(run, scaler)
        run.curves["train"].append(entry)
        step_times.append(time.monotonic() - t0)
        if not math.isfinite(entry["loss"]):
            reason = "non-finite loss"
            log.error("non-finite loss at step %d; stopping (lower the learning rate or use the charbonnier loss)",
                      run.step)
            break
        if run.horizon is None and len(step_times) >= 45:  # steps = 0: as many as fit, the first 5 were warm-up
            left = cfg.time_budget_s - (time.monotonic() - run.start_wall)
            run.horizon = run.step + max(1, int(0.9 * left / float(np.median(step_times[5:]))))
            log.info("%d steps fit in the time budget: the schedule ends at step %d", run.horizon - run.step,
                     run.horizon)
        if run.step % cfg.eval_every == 0 or run.step == run.horizon:
            t_eval = time.monotonic()
            _validate(run)
            _save(run, "checkpoint")
            eval_cost = time.monotonic() - t_eval
            if cfg.early_stop_patience and run.stale >= cfg.early_stop_patience:
                reason = "early stopping"
                break
        if progress is not None:
            progress({**entry, "best_val_psnr": run.best_or_none, "of": run.horizon or 0})
    if not run.curves["val"] or run.curves["val"][-1]["step"] != run.step:
        _validate(run)
    _save(run, reason)
    run.record.plot_curves(run.curves)
    log.info("run %s ended at step %d: %s", run.record.path, run.step, reason)
    run.record.detach_log()
    return run.record.path
