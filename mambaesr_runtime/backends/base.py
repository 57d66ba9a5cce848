"""What every backend shares: one validated entry point and explicit, idempotent teardown (as Polygraphy's
``BaseRunner.infer`` -> ``infer_impl``).

A backend sets ``path`` (its artifact), ``input_shape`` (N, 3, h, w) and ``scale`` when it opens, and implements
``infer_impl`` (run a batch already checked), ``describe`` and ``close_impl`` (free what it holds). The public
:meth:`Backend.infer` refuses a closed backend and a batch of the wrong type or shape before any backend code runs,
so every backend behaves the same after :meth:`Backend.close`: a :class:`BackendError` that says so.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..fileio import sha256_file

_HASHES: dict = {}  # (real path, size, mtime_ns, inode) -> sha256: an unchanged file is hashed once per process
_HASHES_LOCK = threading.Lock()


def artifact_sha256(path: str | os.PathLike) -> str:
    """The sha256 of an engine file, cached by its identity and size + modification time (so re-opening the same
    file, e.g. on every tier switch, costs a stat; a replaced or edited file is hashed again)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _HASHES_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = sha256_file(path)
    with _HASHES_LOCK:
        _HASHES[key] = digest
    return digest


def verify_artifact(path: str | os.PathLike, manifest) -> None:
    """Refuse an engine file that is not the one its manifest describes (``manifest.artifact_sha256``): a file
    swapped under a shipped name would otherwise run, and be reported, as the manifest's variant."""
    path = Path(path)
    recorded = getattr(manifest, "artifact_sha256", None)
    if not recorded:
        return
    actual = artifact_sha256(path)
    if actual != recorded:
        raise BackendError(f"{path}: its sha256 {actual[:16]}... is not the {recorded[:16]}... recorded in "
                           f"{path.name}.manifest.json; the file was replaced or damaged. Restore it (reinstall the "
                           f"package for a shipped engine) or re-export it with mambaesr-export")


class Backend:
    """The engine protocol: ``infer(float32 (N, 3, h, w) in [0, 1]) -> float32 (N, 3, s*h, s*w)``."""

    name = "backend"
    """The backend's name as profiles spell it (``onnxruntime``, ``tensorrt``, ``torch``)."""
    path: Path
    input_shape: tuple
    """(N, 3, h, w): the batch of tiles every call takes."""
    scale: int
    dynamic = False
    """True for an engine whose height and width are free (a dynamic-shape ONNX file): ``input_shape`` is then the
    tile the caller chose and ``scale`` was measured by one probe run."""
    _closed = False

    def infer(self, x: np.ndarray) -> np.ndarray:
        """float32 ``input_shape`` in [0, 1] -> float32 (N, 3, s*h, s*w); a :class:`BackendError` for anything else
        or once the backend is closed."""
        if self._closed:
            raise BackendError(f"the {self.name} backend for {self.path.name} is closed; open a new one")
        self.check_input(x)
        return self.infer_impl(x)

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError
    pad_value: float | None = None
    """What the tiler fills a tile that overhangs the image with (``None``: reflection); see the manifest's
    ``pad_value``."""

    def check_input(self, x) -> None:
        """Refuse anything but a float32 array of the engine's static shape, before any work."""
        if not isinstance(x, np.ndarray) or x.shape != self.input_shape or x.dtype != np.float32:
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise BackendError(f"{self.path.name} takes float32 {self.input_shape}, got {got}")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release what the backend holds; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.close_impl()

    def close_impl(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
