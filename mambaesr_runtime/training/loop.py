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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, require_torch
from ..evaluation.benchmark import score_set, torch_runner
from ..evaluation.sets import load_benchmark
from ..fileio import atomic_write, atomic_write_json
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import VARIANTS
from ..model.config import variant as get_variant
from ..typed import from_dict
from .data import CropSampler, load_pairs
from .losses import PIXEL_LOSSES, FeatureDistiller, PerceptualLoss, distillation_loss
from .pack import verify_if_pack
from .records import RunRecord

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
        raise ConfigError("device 'cuda' was asked for but this PyTorch build sees no CUDA GPU; use --device cpu")
    return name


def evaluate_model(model, benchmarks: dict, scale: int, device: str) -> dict:
    """{set: {'psnr', 'ssim', 'images'}} for whole-image torch inference (fp32), by the evaluation protocol."""
    model.eval()
    run = torch_runner(model, device)
    return {name: score_set(run, triples, scale, bicubic=False) for name, triples in benchmarks.items()}


class _EMA:
    """Exponential moving average of the parameters.

    The decay at step ``t`` is ``min(decay, (1 + t) / (10 + t))`` (timm's ModelEmaV2 warm-up): the average spans
    about the last ``(t + 10) / 9`` steps, i.e. the latest ~11 % of the run, until that window reaches
    ``1 / (1 - decay)`` steps (1,000 for 0.999, at step ~9,000). Deliberate: in short CPU runs the weights of the
    first steps never dominate the average.
    """

    def __init__(self, model, decay: float):
        self.decay = decay
        self.params = [p.detach().clone() for p in model.parameters()]

    def update(self, model, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.params, model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)

    def copy_to(self, model):
        for e, p in zip(self.params, model.parameters()):
            p.data.copy_(e)


def _trainables(model, distiller) -> list:
    """(name, parameter) of everything the optimiser updates: the model, then any distillation adapters."""
    named = [(f"model.{n}", p) for n, p in model.named_parameters()]
    if distiller is not None:
        named += [(f"adapters.{n}", p) for n, p in distiller.adapters.named_parameters()]
    return named


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
    for name, p in _trainables(model, distiller):
        (decay if p.ndim >= 2 and not name.endswith(("A_log", "dt_bias")) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save_state(path: Path, step: int, model, ema: _EMA, opt, sampler: CropSampler, extra: dict, distiller=None):
    torch = require_torch()
    from safetensors.torch import save_file

    tensors = {}
    named = _trainables(model, distiller)
    for n, p in named:
        tensors[n] = p.detach().cpu().contiguous()
    for (n, _), e in zip(named, ema.params):
        tensors[f"ema.{n[len('model.'):]}"] = e.cpu().contiguous()
    for n, p in named:
        state = opt.state.get(p, {})
        if state:  # AdamW's moments and its per-parameter step count
            tensors[f"opt.{n}.exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
            tensors[f"opt.{n}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
            tensors[f"opt.{n}.step"] = torch.as_tensor(state["step"]).detach().cpu().reshape(1)
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.torch_cuda"] = torch.cuda.get_rng_state()
    atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(tensors, tmp, metadata={"step": str(step)}))
    atomic_write_json(path.with_suffix(".json"), {"step": step, "sampler_rng": sampler.state(), **extra}, indent=1)


def _load_state(path: Path, model, ema: _EMA, opt, sampler: CropSampler, device: str, distiller=None) -> dict:
    torch = require_torch()
    from safetensors import safe_open

    meta_path, tensor_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
    if not meta_path.is_file() or not tensor_path.is_file():
        raise CheckpointError(f"no training state at {path} (.json + .safetensors); start a new run instead")
    info = json.loads(meta_path.read_text())
    with safe_open(str(tensor_path), framework="pt", device="cpu") as fh:
        if fh.metadata().get("step") != str(info["step"]):
            raise CheckpointError(f"training state {tensor_path} is from step {fh.metadata().get('step')} but its "
                                  f"JSON says step {info['step']}: the last save was interrupted; delete both files "
                                  f"to resume from the previous run record, or start over")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safetensors' handle is not iterable
    named = _trainables(model, distiller)
    with torch.no_grad():
        for n, p in named:
            p.copy_(tensors[n].to(device))
        for (n, _), e in zip(named, ema.params):
            e.copy_(tensors[f"ema.{n[len('model.'):]}"].to(device))
    for n, p in named:
        if f"opt.{n}.exp_avg" in tensors:
            opt.state[p] = {"step": tensors[f"opt.{n}.step"].reshape(()).clone(),
                            "exp_avg": tensors[f"opt.{n}.exp_avg"].to(device),
                            "exp_avg_sq": tensors[f"opt.{n}.exp_avg_sq"].to(device)}
    torch.set_rng_state(tensors["rng.torch_cpu"])
    if "rng.torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"])
    sampler.set_state(info["sampler_rng"])
    return info


def train(cfg: TrainConfig, runs_root: str | os.PathLike = "runs", resume: str | os.PathLike | None = None,
          progress=None, stop_after: int | None = None) -> Path:
    """Run (or resume) one training run; returns its run folder.

    ``progress(dict)`` is called after every step. ``stop_after``: end this invocation (saved, resumable) after that
    many steps, e.g. to train on a CPU in slices.
    """
    torch = require_torch()
    from ..model.net import build_model

    start_wall = time.monotonic()
    device = resolve_device(cfg.device)
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if device.startswith("cuda") else "off")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    # Inputs first (data, teacher, VGG weights): a missing one must fail before a run folder is created.
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
    record = RunRecord.resume(resume) if resume else RunRecord.create(runs_root, cfg.kind)
    # Compared as stored (JSON: tuples become lists); the budget belongs to an invocation, not to the run.
    same = lambda d: {k: v for k, v in json.loads(json.dumps(d)).items() if k != "time_budget_s"}
    # A run started before a field existed stored no value for it: read it back through TrainConfig so the new
    # field takes its default (the value that run effectively trained with).
    if resume and same(TrainConfig.from_dict(record.config().get("train", {})).to_dict()) != same(cfg.to_dict()):
        raise ConfigError(f"the run in {record.path} was started with another training config; resume it with the "
                          f"same settings (see its config.json), or start a new run")
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model_config()
    model = build_model(model_cfg).to(device)
    if cfg.init and not resume:  # a resumed run restores its own weights below
        start, _ = load_checkpoint(cfg.init, device=device)
        if start.cfg != model_cfg:
            raise ConfigError(f"--init {cfg.init} is a {start.cfg} model; this run trains {cfg.variant} "
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
    trainable = list(model.parameters()) + (list(distiller.adapters.parameters()) if distiller else [])
    opt = torch.optim.AdamW(_param_groups(model, distiller, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    ema = _EMA(model, cfg.ema_decay)
    eval_model = build_model(model_cfg).to(device)

    forward = torch.compile(model) if cfg.compile else model
    step, curves, best, stale, elapsed_before = 0, {"train": [], "val": []}, -math.inf, 0, 0.0
    horizon = cfg.steps or None  # None: set from the first steps' times (steps = 0, a time budget)
    if resume:
        info = _load_state(record.path / "train_state", model, ema, opt, sampler, device, distiller)
        step, curves, stale = info["step"], info["curves"], info["stale"]
        horizon = info.get("horizon", horizon)
        best = -math.inf if info["best"] is None else info["best"]
        elapsed_before = info["elapsed_s"]
        log.info("resumed %s at step %d", record.path, step)
    log.info("training %s (%s, %d params) on %s, amp %s, %d training pairs", cfg.kind, cfg.variant,
             sum(p.numel() for p in model.parameters()), device, amp, len(pairs))

    def save(reason: str):
        curves["train"] = thin_curve(curves["train"])
        ema.copy_to(eval_model)
        summary = {"data": list(cfg.train_dirs), "steps": step, "device": device,
                   "hardware": record.config().get("gpu") or "cpu",
                   "wall_time_s": round(elapsed_before + time.monotonic() - start_wall, 1),
                   "best_val_psnr": None if best == -math.inf else best, "distilled_from": cfg.teacher}
        save_checkpoint(eval_model, record.path / "model_last", variant=cfg.variant, training=summary)
        _save_state(record.path / "train_state", step, model, ema, opt, sampler,
                    {"curves": curves, "best": None if best == -math.inf else best, "stale": stale, "horizon": horizon,
                     "elapsed_s": elapsed_before + time.monotonic() - start_wall}, distiller)
        record.write_metrics({"curves": curves, "best_val_psnr": None if best == -math.inf else best,
                              "steps": step, "stopped": reason})
        log.info("saved step %d (%s)", step, reason)

    def validate() -> float | None:
        nonlocal best, stale
        if not benchmarks:
            return None
        ema.copy_to(eval_model)
        res = evaluate_model(eval_model, benchmarks, cfg.scale, device)
        score = float(np.mean([r["psnr"] for r in res.values()]))
        curves["val"].append({"step": step, **{k: {"psnr": v["psnr"], "ssim": v["ssim"]} for k, v in res.items()},
                              "mean_psnr": score})
        if score > best:
            best, stale = score, 0
            save_checkpoint(eval_model, record.path / "model_best", variant=cfg.variant,
                            training={"data": list(cfg.train_dirs), "steps": step, "val": curves["val"][-1],
                                      "distilled_from": cfg.teacher})
        else:
            stale += 1
        log.info("step %d validation %s", step, {k: round(v["psnr"], 3) for k, v in res.items()})
        return score

    # fp16 needs loss scaling (its gradients underflow); bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=amp == "fp16")
    step_times, reason = [], "finished"
    eval_cost, first_step = 0.0, step
    while horizon is None or step < horizon:
        t0 = time.monotonic()
        if stop_after is not None and step - first_step >= stop_after:
            reason = "paused"
            break
        if cfg.time_budget_s is not None:
            spent = t0 - start_wall
            need = (np.median(step_times) if step_times else 0) + eval_cost + 1.0
            if spent + need > cfg.time_budget_s:
                reason = "time budget"
                break
        lr = lr_at(cfg, step, horizon or 10**9)
        for group in opt.param_groups:
            group["lr"] = lr
        lr_batch, hr_batch = sampler.sample()
        if cfg.channels_last:
            lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype, enabled=amp_dtype is not None):
            out = forward(lr_batch)
            teacher_out = teacher(lr_batch) if teacher is not None else None
            losses = distillation_loss(cfg.loss, out.float(), hr_batch,
                                       None if teacher_out is None else teacher_out.float(), cfg.alpha)
            if distiller is not None:
                losses["feature"] = distiller.loss()
                losses["total"] = losses["total"] + cfg.feature_weight * losses["feature"]
            if perceptual is not None:
                losses["perceptual"] = perceptual(out.float(), hr_batch)
                losses["total"] = losses["total"] + cfg.perceptual_weight * losses["perceptual"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        ema.update(model, step)
        step += 1
        entry = {"step": step, "lr": lr, "loss": losses["total"].item(), "pixel": losses["pixel"].item(),
                 "kd": losses["kd"].item(), "grad_norm": grad_norm.item(),
                 **{k: losses[k].item() for k in ("feature", "perceptual") if k in losses}}
        curves["train"].append(entry)
        step_times.append(time.monotonic() - t0)
        if not math.isfinite(entry["loss"]):
            reason = "non-finite loss"
            log.error("non-finite loss at step %d; stopping (lower --lr or use --loss charbonnier)", step)
            break
        if horizon is None and len(step_times) >= 45:  # steps = 0: as many as fit, the first 5 were warm-up
            left = cfg.time_budget_s - (time.monotonic() - start_wall)
            horizon = step + max(1, int(0.9 * left / float(np.median(step_times[5:]))))
            log.info("%d steps fit in the time budget: the schedule ends at step %d", horizon - step, horizon)
        if step % cfg.eval_every == 0 or step == horizon:
            t_eval = time.monotonic()
            validate()
            save("checkpoint")
            eval_cost = time.monotonic() - t_eval
            if cfg.early_stop_patience and stale >= cfg.early_stop_patience:
                reason = "early stopping"
                break
        if progress is not None:
            progress({**entry, "best_val_psnr": None if best == -math.inf else best, "of": horizon or 0})
    if not curves["val"] or curves["val"][-1]["step"] != step:
        validate()
    save(reason)
    record.plot_curves(curves)
    log.info("run %s ended at step %d: %s", record.path, step, reason)
    record.detach_log()
    return record.path
