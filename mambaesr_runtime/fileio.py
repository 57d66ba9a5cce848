"""Small file helpers shared by every writer: content hashes, temporary files beside their destination, and
publishing them (rename, or an exclusive move that never replaces a file it did not expect)."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import importlib
import json
import os
import sys
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


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes: ``NAME_MAX``, 255 on every common one
    (ext4, XFS, Btrfs, tmpfs, FAT's long names, NTFS); 255 when the folder cannot be asked (it does not exist yet)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf; a folder still to be made
        return 255


def name_too_long(path: str | os.PathLike) -> str | None:
    """Why ``path`` can never be created (its last part longer than the file system's ``NAME_MAX`` bytes), or
    ``None``: decided from the name alone, before any work is done for it."""
    path = Path(path)
    limit = name_max(path.parent if os.path.isdir(path.parent) else ".")
    for part in reversed(path.parts):  # the name first, then the folders above it (they may be created)
        size = len(os.fsencode(part))
        if size > limit:
            what = "file name" if part == path.name else f"folder name {part[:20]}..."
            return (f"the {what} is {size} bytes long and this file system takes at most {limit}: choose a shorter "
                    f"name")
    return None


def temporary_beside(path: str | os.PathLike, suffix: str = ".tmp") -> str:
    """Create an empty temporary file beside ``path`` and return its name: ``.<name>.<random><suffix>``, hidden, in
    the same folder (so publishing it is a rename or link, never a copy). The ``<name>`` part is shortened when the
    whole would pass ``NAME_MAX`` (a valid 243-byte output name would otherwise make a temporary name that can never
    be created); mkstemp's random part keeps it unique."""
    path = Path(path)
    limit = name_max(path.parent)
    room = limit - len(os.fsencode(suffix)) - 2 - 8  # the leading and trailing dots, mkstemp's 8 random characters
    name = path.name
    while name and len(os.fsencode(name)) > room:
        name = name[:-1]  # by characters, so a UTF-8 name is never cut inside one
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


#: Errors of ``link`` that mean "this file system has no hard links" (FAT/exFAT, some FUSE and network mounts),
#: not "the target exists".
_NO_HARD_LINKS = {errno.EPERM, errno.EACCES, errno.EMLINK, errno.EINVAL, errno.ENOSYS,
                  getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EOPNOTSUPP, errno.EXDEV}


def publish(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Move the finished temporary file ``tmp`` to ``path`` atomically.

    ``overwrite``: ``rename`` (an existing ``path`` is replaced in one step). Otherwise the move itself fails with
    ``FileExistsError`` when ``path`` exists, however late it appeared (another run writing the same output, a file
    created meanwhile): checking first and renaming after would replace it. The exclusive move is ``link(tmp,
    path)`` (POSIX, every Python, fails if ``path`` exists, publishes the complete file in one step) then
    ``unlink(tmp)``. Where the file system has no hard links (FAT, exFAT, some FUSE or network mounts), Linux's
    ``renameat2(RENAME_NOREPLACE)``; where that is missing too, an exclusive ``O_CREAT | O_EXCL`` reservation of
    ``path`` (which no other writer can then claim), replaced by ``tmp``. On Windows ``rename`` never replaces.
    ``tmp`` is left in place when this raises (the caller removes it).
    """
    tmp, path = os.fspath(tmp), os.fspath(path)
    if overwrite:
        os.replace(tmp, path)
        return
    if os.name == "nt":
        os.rename(tmp, path)  # FileExistsError when path exists
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if not _rename_noreplace(tmp, path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError when path exists
            os.close(fd)
            os.replace(tmp, path)
        return
    os.unlink(tmp)


def _rename_noreplace(tmp: str, path: str) -> bool:
    """``renameat2(tmp, path, RENAME_NOREPLACE)`` where the C library and the file system have it: True when
    done, False when unavailable; ``FileExistsError`` when ``path`` exists."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2  # glibc >= 2.28 (JetPack 5's Ubuntu 20.04 has 2.31)
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_noreplace = -100, 1
    if renameat2(at_fdcwd, os.fsencode(tmp), at_fdcwd, os.fsencode(path), rename_noreplace) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), path)
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # the file system does not take the flag
    raise OSError(err, os.strerror(err), path)


def atomic_write(path: str | os.PathLike, write, suffix: str = ".tmp", overwrite: bool = True) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it to ``path`` (:func:`publish`).

    An exception or an interruption leaves ``path`` as it was (absent or the previous version) and no temporary file.
    ``suffix`` lets writers that pick a format from the name (OpenCV) see the right extension. ``overwrite=False``:
    an existing ``path`` is never replaced, even one created while ``write`` ran (``FileExistsError``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, suffix)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any new file
        publish(tmp, path, overwrite)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def is_temporary(name: str, suffix: str | None = None) -> bool:
    """``name`` is a temporary of :func:`atomic_write` (``.<name>.<8 random characters><suffix>``, the
    ``<name>`` part maybe shortened to fit ``NAME_MAX``: :func:`temporary_beside`), which a killed
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
