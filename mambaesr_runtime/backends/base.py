"""What every backend shares: the check at its one entry point, and explicit teardown as a context manager.

A backend sets ``path`` (its artifact) and ``input_shape`` (N, 3, h, w), implements ``infer``, ``describe`` and
``close``, and calls :meth:`Backend.check_input` first thing in ``infer``.
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
    #: What the tiler fills a tile that overhangs the image with (``None``: reflection); see the manifest's
    #: ``pad_value``.
    pad_value: float | None = None

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
