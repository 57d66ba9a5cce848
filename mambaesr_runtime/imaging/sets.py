"""Benchmark and image folders as arrays: ``<Set>/HR`` (+ ``<Set>/LR_bicubic/X<s>``) -> (name, LR, HR) triples.

The evaluation protocol's inputs; training reads its image folders and validation sets through the same functions.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import MambaESRError
from .imresize import imresize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Sub-folders that hold common *test* sets (denoising/demosaicking/SR benchmarks). A folder search never pulls them
#: into training; name such a folder itself (``--train-dir .../Kodak``) to train on it anyway.
TEST_SET_FOLDERS = ("Kodak", "McMaster", "Set5", "Set14", "B100", "BSD100", "Urban100", "Manga109")


class DataError(MambaESRError):
    """Training or validation data is missing or unusable."""


def list_images(folder: str | os.PathLike, skip_test_sets: bool = False) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted). ``skip_test_sets``: leave out sub-folders named in
    :data:`TEST_SET_FOLDERS` (the folder itself is always read: naming it is asking for it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and not (skip_test_sets and set(p.relative_to(folder).parts[:-1]) & set(TEST_SET_FOLDERS)))
    if not files:
        raise DataError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 (H, W, 3) RGB from any 8-bit image file; gray is replicated, alpha dropped."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"cannot decode image {path}")
    if img.dtype != np.uint8:
        raise DataError(f"{path}: training reads 8-bit images, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img[:, :, ::-1])


def make_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) with HR mod-cropped to a multiple of ``scale`` and LR = MATLAB bicubic downscale of it."""
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    if h == 0 or w == 0:
        raise DataError(f"image of size {hr.shape[:2]} is smaller than the scale {scale}")
    hr = np.ascontiguousarray(hr[:h, :w])
    return imresize(hr, 1 / scale), hr


def lr_size_error(lr_path, lr_wh: tuple[int, int], hr_path, hr_wh: tuple[int, int], scale: int) -> str | None:
    """Why an x``scale`` LR of (w, h) ``lr_wh`` cannot be the LR of an HR of ``hr_wh`` (each side must be the HR side
    // ``scale``), or None. A wrong LR would otherwise be scored against a crop of its HR: a PSNR that means
    nothing."""
    want = (hr_wh[0] // scale, hr_wh[1] // scale)
    if tuple(lr_wh) == want:
        return None
    return (f"{lr_path} is {lr_wh[0]}x{lr_wh[1]}, but its HR {hr_path} is {hr_wh[0]}x{hr_wh[1]}, so an x{scale} LR "
            f"must be {want[0]}x{want[1]} (each side // {scale}); replace it with the set's real LR_bicubic/X{scale} "
            f"file, or remove it to have the LR made from the HR")


def load_benchmark(folder: str | os.PathLike, scale: int = 4) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) uint8 RGB triples of a ``<Set>/HR`` + ``<Set>/LR_bicubic/X<s>`` folder (LR made if absent;
    one of the wrong size is refused, :func:`lr_size_error`)."""
    folder = Path(folder)
    out = []
    for hr_path in list_images(folder / "HR"):
        hr = read_rgb(hr_path)
        lr_path = folder / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}{hr_path.suffix}"
        if lr_path.is_file():
            lr = read_rgb(lr_path)
            error = lr_size_error(lr_path, lr.shape[1::-1], hr_path, hr.shape[1::-1], scale)
            if error:
                raise DataError(error)
            hr = hr[:lr.shape[0] * scale, :lr.shape[1] * scale]
        else:
            lr, hr = make_pair(hr, scale)
        out.append((hr_path.stem, lr, hr))
    return out
