"""Download the standard benchmark sets from their public sources, checked by sha256 and resumable, laid out as
``<dest>/<Set>/HR/*.png`` + ``<dest>/<Set>/LR_bicubic/X4/<name>x4.png`` (LR made locally, MATLAB-exact).

Sources are data (``dataset_sources.json``): per set, single files (``url``, ``sha256``, ``dest``) and/or archives
(``url``, ``sha256``, ``members``: archive path -> dest). A download goes to ``<file>.part`` and continues from where
it stopped (HTTP Range); it becomes the real file only once its sha256 matches. A file without a pinned checksum is
refused unless ``allow_unverified`` is set, and its computed sha256 is reported so that it can be pinned.
The library never prints: ``progress(message)`` receives what happens.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import cv2

from ..errors import MambaESRError
from ..fileio import atomic_write, package_dir, sha256_file
from ..imaging.imresize import imresize

CHUNK = 1 << 16


class DownloadError(MambaESRError):
    """A dataset file could not be fetched or did not match its checksum."""


def default_sources() -> dict:
    return json.loads((package_dir(__package__) / "dataset_sources.json").read_text())


def fetch(url: str, dest: Path, sha256: str | None, allow_unverified: bool = False, timeout: float = 60,
          progress=None) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, rename; return the file's sha256.

    A ``dest`` that already exists with the right checksum is kept without any request.
    """
    dest = Path(dest)
    if dest.is_file() and sha256 and sha256_file(dest) == sha256:
        return sha256
    if sha256 is None and not allow_unverified:
        raise DownloadError(f"{url} has no pinned sha256; pass --allow-unverified to fetch it anyway (only on a "
                            f"network you trust) and pin the checksum it prints")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
            if have and status != 206:  # the server ignored the range: start over
                have = 0
            if have and status == 206:
                total = response.headers.get("Content-Range", "")
                if progress:
                    progress(f"resuming {dest.name} at byte {have} ({total})")
            with open(part, "ab" if have else "wb") as fh:
                shutil.copyfileobj(response, fh, CHUNK)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part is complete
            pass
        else:
            raise DownloadError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot fetch {url}: {exc}; run again to resume from {part}") from exc
    got = sha256_file(part)
    if sha256 and got != sha256:
        part.unlink()
        raise DownloadError(f"{url}: sha256 {got} does not match the pinned {sha256}; the partial file was removed, "
                            f"run again to retry (if it keeps failing, the source changed)")
    os.replace(part, dest)
    if progress:
        progress(f"fetched {dest}" + ("" if sha256 else f" (unverified, sha256 {got})"))
    return got


def _extract(archive: Path, members: dict, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        missing = sorted(set(members) - names)
        if missing:
            raise DownloadError(f"archive {archive.name} lacks {missing[:3]} (it has {len(names)} entries)")
        for member, rel in members.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            with zf.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            os.replace(tmp, target)


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
    for name in names:
        spec, root = sources["sets"][name], dest / name
        for entry in spec.get("files", []):
            fetch(entry["url"], root / entry["dest"], entry.get("sha256"), allow_unverified, progress=progress)
        for entry in spec.get("archives", []):
            archive = dest / ".downloads" / Path(entry["url"]).name
            fetch(entry["url"], archive, entry.get("sha256"), allow_unverified, progress=progress)
            _extract(archive, entry["members"], root)
        made = make_lr(root, scale)
        if progress:
            progress(f"{name}: LR_bicubic/X{scale} made for {made} images")
        counts[name] = len(list((root / "HR").glob("*.png")))
    return counts
