"""Small file helpers shared by every writer: content hashes and write-to-temp-then-rename."""

from __future__ import annotations

import errno
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


def atomic_write(path: str | os.PathLike, write, suffix: str = ".tmp", exclusive: bool = False) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    An exception or an interruption leaves ``path`` as it was (absent or the previous version) and no temporary file.
    ``suffix`` lets writers that pick a format from the name (OpenCV) see the right extension. The temporary is named
    ``.<name>.<random><suffix>`` (:func:`is_temporary` tells one); only a killed process (SIGKILL) can leave one.

    ``exclusive``: publish only if ``path`` does not exist, atomically (a hard link, which fails if the target
    exists, then the temporary unlinked): of two writers racing for one name exactly one wins, and the loser gets
    ``FileExistsError`` with ``path`` untouched. On a filesystem without hard links (FAT, some network mounts) it
    falls back to check-then-rename, which is still atomic but not exclusive under a race.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any new file
        if exclusive:
            _publish_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


#: errno values of os.link on a filesystem that has no hard links (not a failure of the link itself).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


def _publish_exclusive(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)


def is_temporary(name: str, suffix: str | None = None) -> bool:
    """``name`` is a temporary of :func:`atomic_write` (``.<name>.<8 random characters><suffix>``), which a killed
    writer may leave behind: never an input, never a finished output."""
    if not name.startswith(".") or name.count(".") < 3:
        return False
    stem = name[:-len(suffix)] if suffix and name.endswith(suffix) else os.path.splitext(name)[0]
    random = stem.rsplit(".", 1)[-1]
    return len(random) == 8 and all(c.isalnum() or c == "_" for c in random)


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
