"""PSNR and SSIM by the one convention we use everywhere (the standard SR evaluation protocol).

- Both images are uint8 RGB (the SR output rounded and clipped to uint8 first).
- Compared on Y of MATLAB's ``rgb2ycbcr``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (R, G, B in [0, 255]),
  **kept in float** (as BasicSR does; rounding Y to uint8 as MATLAB does on uint8 input moves results by <= 0.02 dB).
  Gray images are treated as RGB with three equal channels (``Y = 16 + 219 v / 255``), as loaders that convert
  everything to RGB do; it gives our Set14 the ~26.09 dB bicubic value recorded in the issue (using the raw gray
  level instead would give 25.99 dB: the affine map scales that image's MSE).
- ``shave`` pixels (the scale) are cut from every border before comparing.
- PSNR = 10 log10(255^2 / MSE). SSIM: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, computed on
  the valid region (no padding), averaged.

Published numbers are comparable only under this protocol. Check (tests): MATLAB bicubic x4 gives Set5 28.42 /
0.8104 and B100 25.96 / 0.6675, the published bicubic values.
"""

from __future__ import annotations

import cv2
import numpy as np


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` in float64 on the [16, 235] scale, from a uint8 (H, W, 3) RGB image."""
    rgb = img.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _prepare(img: np.ndarray, ref: np.ndarray, shave: int, rgb_order: str) -> tuple[np.ndarray, np.ndarray]:
    if img.shape != ref.shape:
        raise ValueError(f"images differ in shape: {img.shape} vs reference {ref.shape}")
    if img.dtype != np.uint8 or ref.dtype != np.uint8:
        raise ValueError("metrics take uint8 images (round and clip the SR output to uint8 first)")
    if rgb_order not in ("rgb", "bgr"):
        raise ValueError(f"rgb_order must be 'rgb' or 'bgr', got {rgb_order!r}")
    if img.ndim == 3 and img.shape[2] == 3:
        if rgb_order == "bgr":
            img, ref = img[..., ::-1], ref[..., ::-1]
        a, b = rgb_to_y(img), rgb_to_y(ref)
    elif img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        gray_to_y = lambda g: 16.0 + 219.0 * g.reshape(g.shape[:2]).astype(np.float64) / 255.0
        a, b = gray_to_y(img), gray_to_y(ref)
    else:
        raise ValueError(f"metrics take gray or 3-channel images, got shape {img.shape}")
    if shave:
        if min(a.shape) <= 2 * shave:
            raise ValueError(f"image {a.shape} is too small to shave {shave} pixels from each border")
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    return a, b


def psnr_y(img: np.ndarray, ref: np.ndarray, shave: int = 4, rgb_order: str = "rgb") -> float:
    """PSNR (dB) on Y between uint8 images ``img`` and reference ``ref`` (see the module docstring)."""
    a, b = _prepare(img, ref, shave, rgb_order)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim_y(img: np.ndarray, ref: np.ndarray, shave: int = 4, rgb_order: str = "rgb") -> float:
    """SSIM on Y between uint8 images ``img`` and reference ``ref`` (see the module docstring)."""
    a, b = _prepare(img, ref, shave, rgb_order)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = cv2.getGaussianKernel(11, 1.5)
    window = g @ g.T

    def blur(x):  # 'valid' filtering: only windows that fit entirely inside the image
        return cv2.filter2D(x, -1, window, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
