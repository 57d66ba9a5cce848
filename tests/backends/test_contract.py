"""The backend contract, the same for every backend (TensorRT through its stand-in): ``infer`` takes float32 of the
engine's shape and returns (N, 3, s*h, s*w); anything else, and any call after ``close()``, is a ``BackendError``
raised by the base class before backend code runs; ``close()`` is idempotent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_tensorrt_backend import _plan

from mambaesr_runtime.backends.base import Backend
from mambaesr_runtime.backends.onnxruntime import OrtBackend
from mambaesr_runtime.backends.tensorrt import TrtBackend
from mambaesr_runtime.backends.torch_backend import TorchBackend
from mambaesr_runtime.errors import BackendError
from mambaesr_runtime.export.onnx_export import export_onnx
from mambaesr_runtime.model.checkpoint import save_checkpoint
from tinymodels import untrained


def _onnxruntime(tmp_path):
    torch.manual_seed(0)
    return OrtBackend(export_onnx(untrained("tiny"), tmp_path / "tiny.onnx", 16, 16))


def _torch(tmp_path):
    weights, _ = save_checkpoint(untrained("tiny"), tmp_path / "tiny_x4", variant="tiny")
    return TorchBackend(weights, (1, 3, 16, 16))


def _tensorrt(tmp_path):
    plan, trt, cuda, _ = _plan(tmp_path, "10")
    return TrtBackend(plan, trt=trt, cuda=cuda)


@pytest.fixture(params=[_onnxruntime, _torch, _tensorrt], ids=["onnxruntime", "torch", "tensorrt"])
def backend(request, tmp_path):
    with request.param(tmp_path) as b:
        yield b


def test_infer_takes_the_engine_shape_and_returns_the_scaled_batch(backend):
    assert isinstance(backend, Backend) and backend.name in ("onnxruntime", "torch", "tensorrt")
    assert backend.input_shape == (1, 3, 16, 16) and backend.scale == 4 and not backend.closed
    y = backend.infer(np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32))
    assert y.shape == (1, 3, 64, 64) and y.dtype == np.float32 and np.isfinite(y).all()
    assert backend.name in backend.describe()


@pytest.mark.parametrize("bad", [np.zeros((1, 3, 16, 16), np.float64), np.zeros((2, 3, 16, 16), np.float32),
                                 np.zeros((1, 3, 8, 8), np.float32), [[0.0]]], ids=["float64", "batch", "size", "list"])
def test_wrong_input_is_refused_before_the_backend_runs(backend, bad, monkeypatch):
    monkeypatch.setattr(backend, "infer_impl", lambda x: pytest.fail("the backend ran a bad input"))
    with pytest.raises(BackendError, match=r"takes float32 \(1, 3, 16, 16\), got"):
        backend.infer(bad)


def test_every_backend_behaves_the_same_after_close(backend):
    backend.close()
    backend.close()  # idempotent
    assert backend.closed
    with pytest.raises(BackendError, match=f"the {backend.name} backend for .* is closed; open a new one"):
        backend.infer(np.zeros((1, 3, 16, 16), np.float32))
