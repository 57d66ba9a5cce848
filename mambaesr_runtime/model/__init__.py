"""The reference model (needs torch): config, scan, network, checkpoint io.

``config`` is importable without torch; the rest imports torch on first use of this package's members.
"""

from .config import DIRECTIONS, LAYOUT_DIRECTIONS, PARAM_BUDGETS, VARIANTS, ModelConfig, variant

__all__ = ["DIRECTIONS", "LAYOUT_DIRECTIONS", "PARAM_BUDGETS", "VARIANTS", "ModelConfig", "variant"]
