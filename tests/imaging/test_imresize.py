"""imresize reproduces MATLAB's bicubic x4 downscaling bit-for-bit (the benchmark LR files are MATLAB outputs)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mambaesr_runtime.imaging.imresize import imresize


def _pairs(root, name):
    hr_dir = root / "benchmarks" / name / "HR"
    return [(p, hr_dir.parent / "LR_bicubic" / "X4" / f"{p.stem}x4.png") for p in sorted(hr_dir.glob("*.png"))]


@pytest.mark.parametrize("name, count", [("Set5", 5), ("Set14", 14)])
def test_reproduces_matlab_lr_files_bit_for_bit(shared_data, name, count):
    pairs = _pairs(shared_data, name)
    assert len(pairs) == count
    for hr_path, lr_path in pairs:
        hr = cv2.imread(str(hr_path), cv2.IMREAD_UNCHANGED)
        lr = cv2.imread(str(lr_path), cv2.IMREAD_UNCHANGED)
        out = imresize(hr, 0.25)
        assert out.dtype == np.uint8 and out.shape == lr.shape, hr_path.name
        differing = int((out != lr).sum())
        assert differing == 0, f"{hr_path.name}: {differing} pixels differ from MATLAB's output"


def test_integer_passes_round_like_matlab(shared_data):
    """Rounding only at the end (not after each pass) would miss MATLAB's output: the test above can fail."""
    hr_path, lr_path = _pairs(shared_data, "Set5")[0]
    hr = cv2.imread(str(hr_path), cv2.IMREAD_UNCHANGED)
    lr = cv2.imread(str(lr_path), cv2.IMREAD_UNCHANGED)
    once = np.clip(np.floor(imresize(hr.astype(np.float64), 0.25) + 0.5), 0, 255).astype(np.uint8)
    assert (once != lr).sum() > 0


def test_shapes_scales_and_types():
    img = (np.arange(7 * 9 * 3) % 256).astype(np.uint8).reshape(7, 9, 3)
    assert imresize(img, 4).shape == (28, 36, 3)
    assert imresize(img, 0.5).shape == (4, 5, 3)  # MATLAB: ceil(scale * size)
    assert imresize(img[..., 0], output_shape=(3, 20)).shape == (3, 20)
    assert imresize(img.astype(np.uint16) * 200, 2).dtype == np.uint16
    assert imresize(img.astype(np.float32) / 255, 2).dtype == np.float64


def test_constant_image_stays_constant_and_weights_sum_to_one():
    img = np.full((13, 11), 77, dtype=np.uint8)
    for scale in (0.25, 0.5, 3, 4):
        assert (imresize(img, scale) == 77).all()


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="expects an"):
        imresize(np.zeros((2, 2, 2, 2)), 2)
    with pytest.raises(ValueError, match="positive scale"):
        imresize(np.zeros((4, 4)), 0)
