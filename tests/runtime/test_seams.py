"""Seams, with the shipped student on real images: tiled output matches the whole-image output (>= 40 dB) and shows
no seam line: the mean absolute gradient across the tile edges is within 5 % of the gradient across the same lines
in the untiled output. (The reference is the untiled output at the same lines because a handful of rows and columns
of a real image carry content gradients that differ from the image average by +-20 %: measured 0.8-1.09 for our
tiles against all other block edges, which says more about the picture than about seams.) A naive tiler that pastes
tiles with hard edges fails the same test, so the test can fail."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mambaesr_runtime.geometry import plan_tiles
from mambaesr_runtime.model.checkpoint import load_checkpoint
from mambaesr_runtime.runtime.tiling import upscale_tiled
from mambaesr_runtime.runtime.upscaler import shipped_model

SCALE = 4


@pytest.fixture(scope="module")
def student():
    model, _ = load_checkpoint(shipped_model("student_x4.json"))

    def infer(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return infer


def _y(img):
    img = np.clip(img, 0, 1)
    return 16 + 65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]


def seam_ratio(out: np.ndarray, reference: np.ndarray, edges_y, edges_x) -> float:
    """Mean |gradient| of ``out`` across the given LR edges / the same for ``reference`` (the untiled output)."""
    def across(img):
        Y = _y(img)
        gx, gy = np.abs(np.diff(Y, axis=1)), np.abs(np.diff(Y, axis=0))
        cols = sorted({e * SCALE - 1 for e in edges_x if 0 < e * SCALE < Y.shape[1]})
        rows = sorted({e * SCALE - 1 for e in edges_y if 0 < e * SCALE < Y.shape[0]})
        return np.concatenate([gx[:, cols].ravel(), gy[rows, :].ravel()]).mean()

    return float(across(out) / across(reference))


def hard_paste(infer, img, TILE=64):
    """The deliberately unblended tiler: no overlap, tiles pasted edge to edge."""
    h, w, _ = img.shape
    out = np.zeros((h * SCALE, w * SCALE, 3), np.float32)
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            o = infer(img[y:y + TILE, x:x + TILE].transpose(2, 0, 1)[None].copy())[0].transpose(1, 2, 0)
            out[y * SCALE:y * SCALE + o.shape[0], x * SCALE:x * SCALE + o.shape[1]] = o
    return out, list(range(0, h, TILE)), list(range(0, w, TILE))


@pytest.mark.parametrize("name", ["barbara", "comic", "zebra"])
@pytest.mark.parametrize("TILE, OVERLAP", [(64, 8), (264, 4)])  # the GPU profiles' tiles; the CPU profile's
def test_tiles_blend_without_seams_and_hard_edges_are_caught(shared_data, student, name, TILE, OVERLAP):
    if TILE <= 64:
        lr = cv2.imread(str(shared_data / "benchmarks" / "Set14" / "LR_bicubic" / "X4" / f"{name}x4.png"))
    else:  # the LR files are 62-180 px: too few large tiles; the HR images (250-720 px) give 1-3 tiles per side
        lr = cv2.imread(str(shared_data / "benchmarks" / "Set14" / "HR" / f"{name}.png"))
    img = lr[:, :, ::-1].astype(np.float32) / 255
    whole = student(img.transpose(2, 0, 1)[None].copy())[0].transpose(1, 2, 0)
    tiled = upscale_tiled(student, img, SCALE, TILE, OVERLAP, batch=1)
    assert 10 * np.log10(1 / np.mean((tiled - whole) ** 2)) >= 40

    plan = plan_tiles(img.shape[0], img.shape[1], TILE, OVERLAP)
    edges_y = {t.y for t in plan.tiles} | {t.y + TILE for t in plan.tiles}
    edges_x = {t.x for t in plan.tiles} | {t.x + TILE for t in plan.tiles}
    assert abs(seam_ratio(tiled, whole, edges_y, edges_x) - 1) <= 0.05

    pasted, ys, xs = hard_paste(student, img, TILE)
    assert seam_ratio(pasted, whole, ys, xs) > 1.05  # the same test flags hard tile edges
