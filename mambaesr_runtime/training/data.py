"""Training data: HR image folders -> (LR, HR) pairs with the MATLAB bicubic degradation -> random aligned crops.

Pairs are made once per image (and cached on disk when a cache folder is given, keyed by file content), kept in memory
as uint8, and, on a GPU, kept on the device so that crops are cut there. Sampling is deterministic for a seed, and its
state (a NumPy bit generator) is JSON-able, so a resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import require_torch
from ..fileio import atomic_write
from ..imaging.sets import DataError, list_images, make_pair, read_rgb


def thumbnail(img: np.ndarray, size: int = 16) -> np.ndarray:
    """Zero-mean, unit-norm gray ``size`` x ``size`` thumbnail: survives rescaling, recompression and small crops."""
    gray = cv2.resize(img.astype(np.float32).mean(axis=2), (size, size), interpolation=cv2.INTER_AREA).ravel()
    gray -= gray.mean()
    norm = np.linalg.norm(gray)
    return gray / norm if norm > 0 else gray


#: Thumbnail correlation above which a training image counts as a copy of a benchmark image (Set5 ``woman`` and its
#: source photo, scaled by 0.715: 0.991; unrelated natural images rarely pass 0.8 at 16 x 16).
COPY_CORRELATION = 0.95


@dataclass(frozen=True)
class BenchmarkPrint:
    """What a training image is compared with: one benchmark image's label, pixels, aspect and thumbnails."""

    label: str
    pixels: np.ndarray
    aspect: float
    thumbs: tuple

    @classmethod
    def of(cls, label: str, hr: np.ndarray) -> BenchmarkPrint:
        # as stored, and mirrored both ways (a rotated copy is matched by transposing the candidate)
        return cls(label, hr, hr.shape[0] / hr.shape[1], (thumbnail(hr), thumbnail(hr[::-1]), thumbnail(hr[:, ::-1])))


def benchmark_copy(hr: np.ndarray, benchmarks: list) -> str | None:
    """Label (``set/name``) of the benchmark image that ``hr`` is a copy of (same pixels, or the same picture
    rescaled, re-encoded, rotated by 90 degrees or flipped), else None. ``benchmarks``: :class:`BenchmarkPrint`
    (or ``(set, name, hr)`` triples)."""
    prints = [b if isinstance(b, BenchmarkPrint) else BenchmarkPrint.of(f"{b[0]}/{b[1]}", b[2]) for b in benchmarks]
    for cand in (hr, hr.transpose(1, 0, 2)):
        aspect, thumb = cand.shape[0] / cand.shape[1], None
        for ref in prints:
            if not 0.97 < aspect / ref.aspect < 1.03:
                continue
            if cand.shape == ref.pixels.shape and np.array_equal(cand, ref.pixels):
                return ref.label
            thumb = thumbnail(cand) if thumb is None else thumb
            if max(float(thumb @ t) for t in ref.thumbs) > COPY_CORRELATION:
                return ref.label
    return None


def lr_cache_name(path: Path, scale: int) -> str:
    """File name of the cached LR version of ``path``: keyed by the file's content, so a changed file is re-made."""
    return f"{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:24]}_x{scale}.png"


def load_pairs(folders, scale: int, cache_dir: str | os.PathLike | None = None,
               max_images: int | None = None, refuse: dict | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) uint8 RGB pairs for every image under ``folders``; LR cached in ``cache_dir`` when given.

    ``refuse``: ``{set name: [(name, LR, HR), ...]}`` of benchmark sets that training must not see: a training image
    that is a copy of one of them (see :func:`benchmark_copy`) is an error naming both.
    """
    guard = [BenchmarkPrint.of(f"{set_name}/{name}", hr) for set_name, triples in (refuse or {}).items()
             for name, _, hr in triples]
    copies = []
    files = [f for folder in ([folders] if isinstance(folders, (str, os.PathLike)) else folders)
             for f in list_images(folder, skip_test_sets=True)]
    pairs = []
    for path in files[:max_images]:
        hr = read_rgb(path)
        copy = benchmark_copy(hr, guard) if guard else None
        if copy:
            copies.append(f"{path} is {copy}")
            continue
        lr = None
        if cache_dir is not None:
            cached = Path(cache_dir) / lr_cache_name(path, scale)
            if cached.is_file():
                lr = cv2.imread(str(cached), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
        if lr is None:
            lr, _ = make_pair(hr, scale)
            if cache_dir is not None:
                bgr = np.ascontiguousarray(lr[:, :, ::-1])
                atomic_write(cached, lambda tmp: cv2.imwrite(tmp, bgr), suffix=".png")
        h, w = lr.shape[0] * scale, lr.shape[1] * scale
        pairs.append((np.ascontiguousarray(lr), np.ascontiguousarray(hr[:h, :w])))
    if copies:
        raise DataError(f"{len(copies)} training image(s) are copies of benchmark images the run validates or reports "
                        f"on: {'; '.join(copies)}. Remove them from the training folders: scores on a set that was "
                        f"trained on mean nothing")
    return pairs


@dataclass
class CropSampler:
    """Random aligned (LR, HR) crops with flips and 90-degree rotations, drawn on ``device``.

    ``patch`` is the LR crop size. An image is drawn with probability proportional to its number of crop positions
    (then a position uniformly), so every possible crop of the data set is equally likely: drawing images uniformly
    gave DIV2K + Flickr2K 1.6 % of the crops for 28 % of the pixels, and the small JPEG-derived BSD images 54 %.
    ``state()``/``set_state()`` capture the NumPy bit generator for exact resume.
    """

    pairs: list
    scale: int
    patch: int
    batch: int
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        torch = require_torch()
        small = [lr.shape[:2] for lr, _ in self.pairs if min(lr.shape[:2]) < self.patch]
        self.pairs = [(lr, hr) for lr, hr in self.pairs if min(lr.shape[:2]) >= self.patch]
        if not self.pairs:
            raise DataError(f"no training image is at least {self.patch} LR pixels on each side "
                            f"({len(small)} smaller ones skipped); lower the patch size")
        # uint8, channels first, on the device: crops are cut there, no host round trip per batch.
        self._lr = [torch.from_numpy(lr).permute(2, 0, 1).contiguous().to(self.device) for lr, _ in self.pairs]
        self._hr = [torch.from_numpy(hr).permute(2, 0, 1).contiguous().to(self.device) for _, hr in self.pairs]
        positions = np.array([(lr.shape[0] - self.patch + 1) * (lr.shape[1] - self.patch + 1) for lr, _ in self.pairs],
                             dtype=np.float64)
        self._cumulative = np.cumsum(positions) / positions.sum()
        self._rng = np.random.default_rng(self.seed)

    def state(self) -> dict:
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    def sample(self):
        """(lr, hr) float32 batches in [0, 1]: (batch, 3, patch, patch) and (batch, 3, s*patch, s*patch)."""
        torch = require_torch()
        p, s = self.patch, self.scale
        lrs, hrs = [], []
        for _ in range(self.batch):
            i = min(int(np.searchsorted(self._cumulative, self._rng.random(), side="right")), len(self._lr) - 1)
            lr, hr = self._lr[i], self._hr[i]
            y = int(self._rng.integers(lr.shape[1] - p + 1))
            x = int(self._rng.integers(lr.shape[2] - p + 1))
            lr_c = lr[:, y:y + p, x:x + p]
            hr_c = hr[:, y * s:(y + p) * s, x * s:(x + p) * s]
            hflip, vflip, rot = (bool(v) for v in self._rng.integers(2, size=3))
            for t in range(2):
                crop = (lr_c, hr_c)[t]
                if hflip:
                    crop = crop.flip(-1)
                if vflip:
                    crop = crop.flip(-2)
                if rot:
                    crop = crop.transpose(-1, -2)
                (lrs if t == 0 else hrs).append(crop)
        return torch.stack(lrs).float() / 255.0, torch.stack(hrs).float() / 255.0
