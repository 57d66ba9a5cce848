"""Losses: pixel (L1 or Charbonnier) against HR, plus output distillation from a frozen teacher.

``total = (1 - alpha) * pixel(student, hr) + alpha * pixel(student, teacher)`` when a teacher is given (alpha = 0.2
is the seed paper's best), else ``pixel(student, hr)``. So alpha = 0 is plain training, and the distillation term is
exactly zero when the student reproduces the teacher.
"""

from __future__ import annotations

from ..errors import ConfigError, require_torch

PIXEL_LOSSES = ("l1", "charbonnier")


def pixel_loss(name: str, pred, target, eps: float = 1e-3):
    torch = require_torch()
    if name == "l1":
        return (pred - target).abs().mean()
    if name == "charbonnier":
        return torch.sqrt((pred - target) ** 2 + eps * eps).mean() - eps  # 0 at a perfect match
    raise ConfigError(f"unknown pixel loss {name!r}; valid losses are {PIXEL_LOSSES}")


def distillation_loss(name: str, student_out, hr, teacher_out=None, alpha: float = 0.0) -> dict:
    """``{'total', 'pixel', 'kd'}``: the weighted sum and its two parts (``kd`` is 0 without a teacher)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation weight alpha must be in [0, 1], got {alpha}")
    pixel = pixel_loss(name, student_out, hr)
    if teacher_out is None or alpha == 0.0:
        return {"total": pixel, "pixel": pixel, "kd": pixel.detach() * 0}
    kd = pixel_loss(name, student_out, teacher_out.detach())
    return {"total": (1 - alpha) * pixel + alpha * kd, "pixel": pixel, "kd": kd}
