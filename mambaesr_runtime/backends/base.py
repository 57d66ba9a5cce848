"""What every backend shares: the check at its one entry point, and explicit teardown as a context manager.

A backend sets ``path`` (its artifact) and ``input_shape`` (N, 3, h, w), implements ``infer``, ``describe`` and
``close``, and calls :meth:`Backend.check_input` first thing in ``infer``.
"""

from __future__ import annotations

import numpy as np

from ..errors import BackendError


class Backend:
    def check_input(self, x) -> None:
        """Refuse anything but a float32 array of the engine's static shape, before any work."""
        if not isinstance(x, np.ndarray) or x.shape != self.input_shape or x.dtype != np.float32:
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise BackendError(f"{self.path.name} takes float32 {self.input_shape}, got {got}")

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
