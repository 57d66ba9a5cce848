"""One exception family. Every message says what is wrong and how to fix it."""

from __future__ import annotations


class MambaESRError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MambaESRError, ValueError):
    """A model config, variant name or profile value is invalid."""


class CheckpointError(MambaESRError):
    """A checkpoint file is missing, unreadable, corrupt or does not match the model it is loaded into."""


class ExportError(MambaESRError):
    """Exporting or verifying an ONNX graph failed."""


class BackendError(MambaESRError):
    """An engine could not be opened, does not suit this device, or was given input it cannot take."""


class DependencyError(MambaESRError, ImportError):
    """An optional dependency needed for the requested operation is not installed."""


class MonitorError(MambaESRError):
    """A telemetry source cannot be opened here (no NVIDIA driver, unreadable trace, unknown source name)."""


def require_torch():
    """Import torch or explain which extra installs it (the runtime itself never needs torch)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise DependencyError(
            "this operation needs PyTorch, which the runtime install leaves out; "
            "install it with: pip install 'torch==2.13.0' (or pip install -e '.[torch]')"
        ) from exc
    return torch


def describe_failure(name: object, exc: BaseException) -> str:
    """One line for an input that failed (a folder run's report, a row of the distributed results table): our
    errors already name the file (the name is added when not); anything else gets the file's name and its kind."""
    name = str(name)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MambaESRError):
        return text if name in text else f"{name}: {text}"
    if isinstance(exc, MemoryError):
        return f"{name}: out of memory while processing it; free memory, lower max_output_megapixels or crop it"
    return f"{name}: failed with {type(exc).__name__}: {text[-300:]}"
