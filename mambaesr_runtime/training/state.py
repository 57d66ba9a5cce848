"""What a training run carries from step to step and from one invocation to the next: the EMA of the weights and the
resume state, stored without pickles as ``train_state.safetensors`` (model and adapter parameters, EMA, AdamW moments,
torch RNG) and ``train_state.json`` (step, sampler RNG, curves, best score), each written atomically. The JSON names
the step the tensors belong to, so a save interrupted between the two files is detected instead of silently mixed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError, require_torch
from ..fileio import atomic_write, atomic_write_json
from .data import CropSampler


class EMA:
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



def trainables(model, distiller) -> list:
    """(name, parameter) of everything the optimiser updates: the model, then any distillation adapters."""
    named = [(f"model.{n}", p) for n, p in model.named_parameters()]
    if distiller is not None:
        named += [(f"adapters.{n}", p) for n, p in distiller.adapters.named_parameters()]
    return named



def save_state(path: Path, step: int, model, ema: EMA, opt, sampler: CropSampler, extra: dict, distiller=None):
    torch = require_torch()
    from safetensors.torch import save_file

    tensors = {}
    named = trainables(model, distiller)
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


def load_state(path: Path, model, ema: EMA, opt, sampler: CropSampler, device: str, distiller=None) -> dict:
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
    named = trainables(model, distiller)
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
