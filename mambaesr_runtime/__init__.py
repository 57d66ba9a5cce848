"""MambaESR: an edge x4 super-resolution runtime (ONNX Runtime / TensorRT) around a lightweight Mamba network.

The public API. Importing this package never imports torch: the model, export and training parts load it when used.
"""

from .errors import CheckpointError, ConfigError, DependencyError, ExportError, MambaESRError
from .model.config import VARIANTS, ModelConfig, variant

__version__ = "0.1.0"

_LAZY = {"Upscaler": ("runtime.upscaler", "Upscaler"), "load_profile": ("profiles", "load_profile"),
         "DeviceProfile": ("profiles", "DeviceProfile")}


def __getattr__(name):
    # The runtime parts load ONNX Runtime and OpenCV; import them on first use, not with the package.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "ConfigError",
    "DependencyError",
    "DeviceProfile",
    "ExportError",
    "MambaESRError",
    "ModelConfig",
    "Upscaler",
    "__version__",
    "load_profile",
    "variant",
]
