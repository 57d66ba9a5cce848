"""Download the standard benchmark sets from their public sources, checked by sha256 and resumable, laid out as
``<dest>/<Set>/HR/*.png`` + ``<dest>/<Set>/LR_bicubic/X4/<name>x4.png`` (LR made locally, MATLAB-exact).

Sources are data (``dataset_sources.json``): per set, single files (``url``, ``sha256``, ``dest``) and/or archives
(``url``, ``sha256``, ``members``: archive path -> dest). A download goes to ``<file>.part`` and continues from where
it stopped (HTTP Range); it becomes the real file only once its sha256 matches. A file without a pinned checksum is
refused unless ``allow_unverified`` is set, and its computed sha256 is reported so that it can be pinned.
A sources file is untrusted: every destination it names (set, file, archive member) must resolve inside ``dest``,
partial files are never opened through a link, extracted members go through ``mkstemp`` temporaries, and a transfer
must deliver the length the server announced. The library never prints: ``progress(message)`` receives what happens.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import cv2

from ..errors import MambaESRError
from ..fileio import atomic_write, package_dir, sha256_file
from ..imaging.imresize import imresize

CHUNK = 1 << 16


class DownloadError(MambaESRError):
    """A dataset file could not be fetched or did not match its checksum."""


def default_sources() -> dict:
    return json.loads((package_dir(__package__) / "dataset_sources.json").read_text())


def _part_fd(part: Path) -> tuple[int, int]:
    """Open ``part`` for appending without following links: (fd, bytes already there). A missing part is created
    with O_EXCL; an existing one must be a plain file of ours (not a link, not a hard link to another file), or a
    planted link would get the download written into its target."""
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            fd = os.open(part, flags)
        except OSError as exc:  # ELOOP: a symbolic link (O_NOFOLLOW)
            raise DownloadError(f"{part} is not a plain file ({exc.strerror}); a partial download must be one. "
                                f"Remove it and run again") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise DownloadError(f"{part} is not a plain file of its own (a device, or a hard link to another file); "
                            f"remove it and run again")
    return fd, st.st_size


def _expected_size(response, have: int) -> int | None:
    """The complete file's size the server announced (Content-Range total, or offset + Content-Length), if any."""
    if response.status == 206:
        rng = response.headers.get("Content-Range", "")
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", rng.strip())
        if match is None or int(match.group(1)) != have:
            raise DownloadError(f"{response.url}: asked for bytes {have}- and the server answered Content-Range "
                                f"{rng!r}; remove the .part file and run again")
        if match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit():
        return have + int(length)
    return None


def fetch(url: str, dest: Path, sha256: str | None, allow_unverified: bool = False, timeout: float = 60,
          progress=None) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, rename; return the file's sha256.

    A ``dest`` that already exists with the right checksum is kept without any request. The part file is opened
    without following links and created exclusively; a transfer shorter (or longer) than the server announced is
    an error that keeps the part for the next run to resume, so a dropped connection never becomes the final file
    (with or without a pinned checksum) and never loses what was fetched.
    """
    dest = Path(dest)
    if sha256 and dest.is_file() and not dest.is_symlink() and sha256_file(dest) == sha256:
        return sha256
    if sha256 is None and not allow_unverified:
        raise DownloadError(f"{url} has no pinned sha256; pass allow_unverified=True to fetch it anyway (only on a "
                            f"network you trust) and pin the checksum it prints")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fd, have = _part_fd(part)
    try:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:  # the server ignored the range: start over
                    os.ftruncate(fd, 0)
                    have = 0
                elif have and progress:
                    progress(f"resuming {dest.name} at byte {have} ({response.headers.get('Content-Range', '')})")
                expected = _expected_size(response, have)
                with os.fdopen(os.dup(fd), "ab") as fh:
                    shutil.copyfileobj(response, fh, CHUNK)
        except urllib.error.HTTPError as exc:
            if not (exc.code == 416 and have):  # 416 with a part: nothing left to fetch, the part is complete
                raise DownloadError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from exc
            expected = None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"cannot fetch {url}: {exc!r}; run again to resume from {part}") from exc
        got_size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if expected is not None and got_size != expected:
        raise DownloadError(f"{url}: the transfer ended at byte {got_size} of the {expected} the server announced; "
                            f"run again to resume from {part}")
    got = sha256_file(part)
    if sha256 and got != sha256:
        part.unlink()
        raise DownloadError(f"{url}: sha256 {got} does not match the pinned {sha256}; the partial file was removed, "
                            f"run again to retry (if it keeps failing, the source changed)")
    os.replace(part, dest)  # rename replaces a link at dest itself, never its target
    if progress:
        progress(f"fetched {dest}" + ("" if sha256 else f" (unverified, sha256 {got})"))
    return got


def inside(root: Path, rel, what: str) -> Path:
    """``root / rel`` for a relative path from a sources file, refused unless it stays inside ``root``: no absolute
    paths, no ``..``, and (once its folder exists) no folder that is a link leading out of ``root``."""
    if not isinstance(rel, str) or not rel.strip():
        raise DownloadError(f"{what} {rel!r} is not a file path; give a path relative to the destination folder")
    posix = PurePosixPath(rel.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(rel).drive or ".." in posix.parts:
        raise DownloadError(f"{what} {rel!r} leaves the destination folder (absolute, or with '..'); a sources file "
                            f"may only name paths inside the destination folder")
    return root.joinpath(*posix.parts)


def _kept_inside(path: Path, base: Path, what: str) -> Path:
    """Create ``path``'s folder and check that, with every link resolved, it lies inside ``base``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    real, real_base = os.path.realpath(path.parent), os.path.realpath(base)
    if real != real_base and not real.startswith(real_base.rstrip(os.sep) + os.sep):
        raise DownloadError(f"{what} {path} resolves to {real}, outside {real_base} (a link in the way); remove the "
                            f"link and run again")
    return path


def _extract(archive: Path, members: dict, root: Path, base: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        missing = sorted(set(members) - names)
        if missing:
            raise DownloadError(f"archive {archive.name} lacks {missing[:3]} (it has {len(names)} entries)")
        for member, rel in members.items():
            target = _kept_inside(inside(root, rel, f"member {member!r} destination"), base, "member destination")

            def write(tmp, member=member):
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)

            atomic_write(target, write)  # a temporary file made by mkstemp: no predictable name to plant a link on


def make_lr(set_dir: Path, scale: int = 4) -> int:
    """Write ``LR_bicubic/X<s>/<name>x<s>.png`` for every HR image that lacks one; returns how many were made."""
    made = 0
    lr_dir = set_dir / "LR_bicubic" / f"X{scale}"
    for hr_path in sorted((set_dir / "HR").glob("*.png")):
        out = lr_dir / f"{hr_path.stem}x{scale}.png"
        if out.is_file():
            continue
        hr = cv2.imread(str(hr_path), cv2.IMREAD_UNCHANGED)
        if hr is None:
            raise DownloadError(f"{hr_path} is not a readable image")
        h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        lr = imresize(hr[:h, :w], 1 / scale)
        atomic_write(out, lambda tmp: cv2.imwrite(tmp, lr), suffix=".png")
        made += 1
    return made


def download_sets(names, dest: str | os.PathLike, sources: dict | None = None, scale: int = 4,
                  allow_unverified: bool = False, progress=None) -> dict:
    """Fetch the sets ``names`` into ``dest``; returns {set: number of HR images}."""
    sources = sources or default_sources()
    dest = Path(dest)
    unknown = sorted(set(names) - set(sources["sets"]))
    if unknown:
        raise DownloadError(f"unknown sets {unknown}; available: {sorted(sources['sets'])}")
    counts = {}
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec, root = sources["sets"][name], inside(dest, name, "set name")
        for entry in spec.get("files", []):
            target = _kept_inside(inside(root, entry["dest"], "file destination"), dest, "file destination")
            fetch(entry["url"], target, entry.get("sha256"), allow_unverified, progress=progress)
        for entry in spec.get("archives", []):
            file_name = urllib.parse.urlsplit(entry["url"]).path.rsplit("/", 1)[-1]
            if file_name in ("", ".", "..") or file_name.startswith("."):
                raise DownloadError(f"archive URL {entry['url']} does not end in a file name")
            archive = _kept_inside(dest / ".downloads" / file_name, dest, "archive download")
            fetch(entry["url"], archive, entry.get("sha256"), allow_unverified, progress=progress)
            _extract(archive, entry["members"], root, dest)
        made = make_lr(root, scale)
        if progress:
            progress(f"{name}: LR_bicubic/X{scale} made for {made} images")
        counts[name] = len(list((root / "HR").glob("*.png")))
    return counts
