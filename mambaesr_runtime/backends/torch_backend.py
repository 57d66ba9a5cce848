"""PyTorch backend: the reference model itself behind the engine protocol (development, parity checks, and desktop
GPUs without TensorRT). It is the only backend that imports torch, and only when it is opened."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError
from .base import Backend

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(Backend):
    """Runs a checkpoint on tiles of a fixed ``input_shape`` (N, 3, h, w), like an exported engine would.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... ``precision``: ``fp32``; ``fp16``/``bf16`` only on CUDA (CPU
    half-precision kernels are slow reference code: refused rather than silently crawling).
    """

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, input_shape: tuple[int, int, int, int],
                 device: str = "cpu", precision: str = "fp32"):
        from ..model.checkpoint import load_checkpoint

        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} is not one of {sorted(PRECISIONS)}")
        if precision != "fp32" and not device.startswith("cuda"):
            raise ConfigError(f"precision {precision} with the torch backend needs a CUDA device; use fp32 on "
                              f"{device}")
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("the torch backend was asked for CUDA but torch sees no GPU; use device cpu")
        model, info = load_checkpoint(checkpoint, device=device)
        self._torch, self._dtype = torch, getattr(torch, PRECISIONS[precision])
        self.model = model.eval().to(self._dtype)
        self.pad_value = model.engine_pad_value
        self.model.set_pad_aware(self.pad_value is not None)
        self.path, self.device, self.precision = Path(checkpoint), device, precision
        self.variant = info.get("variant")
        self.input_shape = tuple(input_shape)
        self.scale = model.cfg.scale
        self._lock = threading.Lock()  # torch modules are reentrant, but one GPU stream at a time keeps memory flat

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with self._lock, torch.no_grad():
            y = self.model(torch.from_numpy(x).to(self.device, self._dtype))
            return y.float().cpu().numpy()

    def describe(self) -> str:
        return f"torch {self.path.name} ({self.variant}) {self.input_shape} x{self.scale} {self.device} {self.precision}"

    def close_impl(self) -> None:
        with self._lock:  # not while another thread runs the model
            self.model = None
