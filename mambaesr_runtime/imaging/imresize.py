"""MATLAB-compatible ``imresize(img, scale, 'bicubic')`` (antialiased when shrinking), in NumPy.

The benchmark LR files in ../shared/data are MATLAB outputs; this implementation reproduces them bit-for-bit, which
is its test. The degradation used for training and evaluation must be this one: published PSNR numbers assume it.

MATLAB's recipe: a cubic kernel (a = -0.5); when shrinking by ``s < 1`` the kernel is stretched to ``h(x) = s f(s x)``
(width ``4 / s``: antialiasing); output pixel ``x`` (1-based) samples the input at ``u = x / s + 0.5 (1 - 1 / s)``;
weights are normalised per output pixel; out-of-range taps mirror at the border (symmetric, edge repeated);
dimensions are resized one after the other, the one with the smaller scale first (rows first on ties).
For integer inputs each pass is rounded back to the input's type (round half away from zero, saturate), as
MATLAB's ``imresizemex`` does; floats stay floats.
"""

from __future__ import annotations

import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(in_len: int, out_len: int, scale: float, antialiasing: bool = True):
    """(weights (out_len, taps), 0-based indices (out_len, taps)) for one dimension, as MATLAB computes them."""
    width = 4.0
    if scale < 1 and antialiasing:
        kernel = lambda x: scale * _cubic(scale * x)
        width = width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, out_dtype) -> np.ndarray:
    weights, indices = _contributions(img.shape[axis], out_len, scale)
    moved = np.moveaxis(img, axis, 0).astype(np.float64)
    out = np.einsum("ot,ot...->o...", weights, moved[indices])
    out = np.moveaxis(out, 0, axis)
    if np.issubdtype(out_dtype, np.integer):
        info = np.iinfo(out_dtype)
        out = np.clip(np.floor(out + 0.5), info.min, info.max).astype(out_dtype)  # MATLAB: half away from zero
    return out


def imresize(img: np.ndarray, scale: float | None = None, output_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) image like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Give ``scale`` (output size ``ceil(scale * size)``, as MATLAB) or ``output_shape`` (H, W). uint8/uint16 in ->
    same type out; float in -> float64 out (no clipping).
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an (H, W) or (H, W, C) image, got shape {img.shape}")
    h, w = img.shape[:2]
    if output_shape is None:
        if scale is None or scale <= 0:
            raise ValueError("give a positive scale or an output_shape")
        scales = (float(scale), float(scale))
        output_shape = (math.ceil(scale * h), math.ceil(scale * w))
    else:
        scales = (output_shape[0] / h, output_shape[1] / w)
    out_dtype = img.dtype if np.issubdtype(img.dtype, np.integer) else np.float64
    out = img
    for axis in sorted((0, 1), key=lambda a: (scales[a], a)):
        out = _resize_axis(out, axis, output_shape[axis], scales[axis], out_dtype)
    return out
