"""Training packs: a compact, verifiable copy of the training and validation data for a machine that has neither the
data folder nor a network (a lent GPU receives only the checkout plus a few tens of MiB).

Layout of a pack folder::

    pack.json                 sha256 of every file, what each tile came from, what was left out and why
    train/<source>/<n>.webp   HR tiles, lossless WebP (~0.35 of the raw bytes)
    lr_cache/<key>_x<s>.png   their MATLAB-bicubic LR versions, named as ``load_pairs``' cache names them
    val/<Set>/HR/*.webp       validation sets, lossless, and their MATLAB-made LR files
    val/<Set>/LR_bicubic/X<s>/*.webp

Tiles are the training images cut into an even grid of cells of about ``tile`` pixels (multiples of the scale), each
at least ``min_tile`` on both sides so that large random crops fit; the most textured cells are kept first (flat
sky teaches a super-resolution model little), JPEG-derived sources count a little less, until the byte budget is
spent. Training verifies a pack's sha256 sums before it reads a file from it (:func:`verify_if_pack`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..fileio import sha256_file
from .data import (
    BenchmarkPrint,
    DataError,
    benchmark_copy,
    list_images,
    load_pairs,
    lr_cache_name,
    make_pair,
    read_rgb,
)

MANIFEST = "pack.json"
FORMAT = "mambaesr-training-pack"
#: Sources whose HR images were JPEG photos: their tiles rank a little lower at equal texture.
JPEG_DERIVED = {"BSD200": 0.7}
_WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]


@dataclass(frozen=True)
class Cell:
    source: str
    path: Path
    y: int
    x: int
    h: int
    w: int
    score: float


def grid_cells(h: int, w: int, tile: int, min_tile: int, scale: int) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) cells of an even grid over an h x w image, sides about ``tile``, multiples of ``scale`` and at
    least ``min_tile``; empty when the image is smaller than ``min_tile`` on a side."""
    def cuts(n: int) -> list[tuple[int, int]]:
        if n < min_tile:
            return []
        k = max(1, min(round(n / tile), n // min_tile))
        size = (n // k) // scale * scale
        return [(i * size, size) for i in range(k)]
    return [(y, x, ch, cw) for y, ch in cuts(h) for x, cw in cuts(w)]


def texture(rgb: np.ndarray) -> float:
    """Mean gradient magnitude of the gray image, in grey levels per pixel."""
    gray = rgb.astype(np.float32).mean(axis=2)
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


def _encode(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".webp", np.ascontiguousarray(rgb[:, :, ::-1]), _WEBP_LOSSLESS)
    if not ok:
        raise DataError("this OpenCV cannot write lossless WebP; install opencv-python(-headless) from PyPI")
    return buf.tobytes()


def make_pack(train_dirs, val_dirs, out: str | os.PathLike, budget_mib: float = 40.0, tile: int = 384,
              min_tile: int = 256, scale: int = 4, refuse: dict | None = None) -> dict:
    """Write a pack to ``out`` (replaced atomically: built in a temporary folder beside it, then renamed) and return
    its manifest. ``refuse``: benchmark sets (as ``load_pairs`` takes them) no training image may copy."""
    out = Path(out)
    budget = int(budget_mib * 2**20)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files: dict[str, str] = {}

        def put(rel: str, data: bytes) -> None:
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            files[rel] = hashlib.sha256(data).hexdigest()

        # Validation sets first: they must be whole, and they come out of the same budget.
        for folder in val_dirs:
            folder = Path(folder)
            for hr_path in list_images(folder / "HR"):
                put(f"val/{folder.name}/HR/{hr_path.stem}.webp", _encode(read_rgb(hr_path)))
                lr_path = folder / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}{hr_path.suffix}"
                lr = read_rgb(lr_path) if lr_path.is_file() else make_pair(read_rgb(hr_path), scale)[0]
                put(f"val/{folder.name}/LR_bicubic/X{scale}/{hr_path.stem}x{scale}.webp", _encode(lr))
        val_bytes = sum((work / rel).stat().st_size for rel in files)

        # Every training image is checked against the benchmarks (as training would) before it is cut.
        prints = [BenchmarkPrint.of(f"{set_name}/{name}", hr) for set_name, triples in (refuse or {}).items()
                  for name, _, hr in triples]
        cells, left, copies = [], {}, []
        for folder in train_dirs:
            folder = Path(folder)
            for path in list_images(folder, skip_test_sets=True):
                rgb = read_rgb(path)
                copy = benchmark_copy(rgb, prints) if prints else None
                if copy:
                    copies.append(f"{path} is {copy}")
                    continue
                grid = grid_cells(rgb.shape[0], rgb.shape[1], tile, min_tile, scale)
                if not grid:
                    left.setdefault(folder.name, {"images_too_small": 0, "tiles_over_budget": 0})
                    left[folder.name]["images_too_small"] += 1
                weight = JPEG_DERIVED.get(folder.name, 1.0)
                cells += [Cell(folder.name, path, y, x, h, w, weight * texture(rgb[y:y + h, x:x + w]))
                          for y, x, h, w in grid]
        if copies:
            raise DataError(f"training images copy benchmark images: {'; '.join(copies)}; remove them first")
        cells.sort(key=lambda c: -c.score)

        tiles, used, cache = [], val_bytes, work / "lr_cache"
        for n, cell in enumerate(cells):
            hr = read_rgb(cell.path)[cell.y:cell.y + cell.h, cell.x:cell.x + cell.w]
            data = _encode(hr)
            lr_size = cell.h * cell.w * 3 // (scale * scale) * 6 // 10  # a PNG of the LR: ~half its raw bytes
            if used + len(data) + lr_size > budget:
                left.setdefault(cell.source, {"images_too_small": 0, "tiles_over_budget": 0})
                left[cell.source]["tiles_over_budget"] += 1
                continue
            rel = f"train/{cell.source}/{n:05d}.webp"
            put(rel, data)
            used += len(data) + lr_size
            tiles.append({"file": rel, "source": str(cell.path.name), "folder": cell.source,
                          "y": cell.y, "x": cell.x, "h": cell.h, "w": cell.w, "texture": round(cell.score, 2)})
        # The LR of every tile, made once here (MATLAB bicubic is slow in NumPy) under load_pairs' cache names.
        load_pairs(work / "train", scale, cache_dir=cache)
        for path in sorted(cache.iterdir()):
            files[f"lr_cache/{path.name}"] = sha256_file(path)
        total = sum((work / rel).stat().st_size for rel in files)
        while total > budget and tiles:  # the LR estimate was short: drop the least textured tiles
            t = tiles.pop()
            lr_name = lr_cache_name(work / t["file"], scale)
            for rel in (t["file"], f"lr_cache/{lr_name}"):
                total -= (work / rel).stat().st_size
                (work / rel).unlink()
                del files[rel]
            left.setdefault(t["folder"], {"images_too_small": 0, "tiles_over_budget": 0})
            left[t["folder"]]["tiles_over_budget"] += 1

        per_folder: dict[str, dict] = {}
        for t in tiles:
            f = per_folder.setdefault(t["folder"], {"tiles": 0, "hr_megapixels": 0.0})
            f["tiles"] += 1
            f["hr_megapixels"] = round(f["hr_megapixels"] + t["h"] * t["w"] / 1e6, 2)
        manifest = {"format": FORMAT, "format_version": 1, "scale": scale, "tile": tile, "min_tile": min_tile,
                    "budget_mib": budget_mib, "bytes": total, "train_dirs": [str(d) for d in train_dirs],
                    "val_sets": [Path(d).name for d in val_dirs], "kept": per_folder, "left_out": left,
                    "tiles": tiles, "files": files}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
        return manifest
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def verify_pack(root: str | os.PathLike) -> dict:
    """The pack's manifest after checking every file's sha256 (and that no file is missing or extra); raises
    :class:`DataError` naming the first bad file and the fix."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{root / MANIFEST} is missing or not JSON ({exc}); re-make the pack with "
                        f"scripts/pack_training_data.py") from exc
    if manifest.get("format") != FORMAT:
        raise DataError(f"{root / MANIFEST} is not a training pack manifest")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST}
    extra, missing = sorted(present - set(manifest["files"])), sorted(set(manifest["files"]) - present)
    if missing or extra:
        raise DataError(f"training pack {root} is incomplete or was added to: missing {missing[:3]}, not in its "
                        f"manifest {extra[:3]}; copy the whole pack again or re-make it")
    for rel, digest in manifest["files"].items():
        if sha256_file(root / rel) != digest:
            raise DataError(f"training pack file {root / rel} does not match its sha256 in {MANIFEST} (damaged "
                            f"in the copy?); copy the pack again or re-make it")
    return manifest


_verified: set[Path] = set()


def verify_if_pack(folder: str | os.PathLike) -> None:
    """If ``folder`` lies in a training pack (a ``pack.json`` in it or up to three levels up), verify that pack once
    per process before anything is read from it."""
    folder = Path(folder).resolve()
    for root in [folder, *list(folder.parents)[:3]]:
        if (root / MANIFEST).is_file():
            if root not in _verified:
                verify_pack(root)
                _verified.add(root)
            return
