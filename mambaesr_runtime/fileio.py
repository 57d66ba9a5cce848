"""Small file helpers shared by every writer: content hashes and write-to-temp-then-rename."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    # Read once at import: os.umask can only be read by setting it, which would race with other threads later.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def package_dir(package: str) -> Path:
    """The folder of an installed package of ours, where its data files sit.

    ``importlib.resources.files`` needs Python 3.9; the device side runs on 3.8 (JetPack 5). Our packages install as
    plain folders (never zipped), so the package's own folder is what ``files()`` would return.
    """
    return Path(importlib.import_module(package).__file__).resolve().parent


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, write, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    An exception or an interruption leaves ``path`` as it was (absent or the previous version) and no temporary file.
    ``suffix`` lets writers that pick a format from the name (OpenCV) see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def probe_writable(folder: str | os.PathLike) -> None:
    """Raise ``OSError`` unless a file can be created in ``folder`` now (create and remove an empty temporary file).

    ``os.access`` cannot answer this: it says yes to root everywhere, including read-only mounts and ``/proc``.
    """
    fd, tmp = tempfile.mkstemp(prefix=".mambaesr-probe.", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def read_json(path: str | os.PathLike, what: str, fix: str, error: type[Exception]):
    """The parsed JSON of ``path``, or ``error`` naming ``what`` the file is, the problem (missing, unreadable, not
    JSON) and ``fix``: the shared first step of every JSON file the package reads back."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} not found; {fix}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what} {path} is not valid JSON ({exc}); {fix}") from exc


def atomic_write_json(path: str | os.PathLike, data, indent: int = 2) -> Path:
    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=indent)
            fh.write("\n")

    return atomic_write(path, write)
