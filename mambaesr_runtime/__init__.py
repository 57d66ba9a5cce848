"""MambaESR: an edge x4 super-resolution runtime (ONNX Runtime / TensorRT) around a lightweight Mamba network.

The public API. Importing this package never imports torch: the model, export and training parts load it when used.
"""

from .errors import CheckpointError, ConfigError, DependencyError, ExportError, MambaESRError
from .model.config import VARIANTS, ModelConfig, variant

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DependencyError",
    "ExportError",
    "MambaESRError",
    "ModelConfig",
    "VARIANTS",
    "variant",
    "__version__",
]
