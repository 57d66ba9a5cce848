"""Small images run on their tier's small-image engine (``small_tile``), not padded to a whole tile (issue 24),
with the same result: the shipped engines are pad-aware, so a padded image gets the whole-image result whatever
the tile (stated tolerance: 2e-7 in float, measured 1.2e-7; in uint8 a sample that lands on a rounding boundary
may move by 1: 1 of 49,152 in a 32x32 crop here).

Why not several small images in one tile, with padding between them: a scan carries its state along a whole line,
and the pad-aware mask gives the padding ``dt = 0``, i.e. no input but also no decay (exp(0) = 1): the state of an
image crosses the padding unchanged into the next image on the line. Measured with the shipped student: an 8x8
image beside another on the same rows of a 264 tile moved by up to 0.016 (4 levels of 255), whatever the gap."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from mambaesr_runtime.errors import BackendError
from mambaesr_runtime.profiles import load_profile
from mambaesr_runtime.runtime.tiling import upscale_tiled
from mambaesr_runtime.runtime.upscaler import Upscaler

#: How far the small engine's float output may be from the whole tile's for the same pixels: 8 ulp of a value in
#: [0.5, 1), the output's top octave (4.8e-7). The two graphs compute the same sums, but ONNX Runtime blocks its
#: convolutions per input shape, so the order of the additions differs. Measured: 1.2e-7 (2 ulp) on x86-64, 2.4e-7
#: (4 ulp) on aarch64 (NEON, scripts/foreign_check.sh arm64); a mask or padding fault moves pixels by 1e-3 and more.
FLOAT_ORDER = 8 * float(np.spacing(np.float32(0.5)))

SAMPLE = cv2.imread(str(__import__("mambaesr_runtime").__path__[0] + "/data/sample.png"))


def without_small(profile):
    return dataclasses.replace(profile, tiers=tuple(dataclasses.replace(t, small_tile=None) for t in profile.tiers))


@pytest.fixture(scope="module")
def cpu():
    return load_profile("cpu")


@pytest.mark.parametrize("tier", ["balanced", "light"])
def test_a_small_image_runs_on_the_small_engine_with_the_whole_tiles_result(cpu, tier):
    crops = [SAMPLE[y:y + h, x:x + w] for y, x, h, w in [(0, 0, 8, 8), (40, 50, 32, 32), (9, 3, 1, 1),
                                                         (20, 70, 13, 29)]]
    with Upscaler(cpu, tier=tier) as up, Upscaler(without_small(cpu), tier=tier) as whole:
        small, big = up.engine.small.backend, whole.engine.backend
        assert small.input_shape == (1, 3, 32, 32) and big.input_shape == (1, 3, 264, 264)
        assert "images up to 32x32" in up.describe() and up.summary()["small_tile"] == 32
        calls = []
        real = small.infer
        small.infer = lambda x: calls.append(x.shape) or real(x)
        for crop in crops:
            a8, b8 = up.upscale(crop).astype(int), whole.upscale(crop).astype(int)
            assert np.abs(a8 - b8).max() <= 1 and (a8 != b8).mean() < 1e-3  # a float at a rounding boundary
            rgb = crop[:, :, ::-1].astype(np.float32) / 255
            a = upscale_tiled(real, rgb, 4, 32, 4, pad_value=small.pad_value)
            b = upscale_tiled(big.infer, rgb, 4, 264, 4, pad_value=big.pad_value)
            assert np.abs(a - b).max() <= FLOAT_ORDER  # the same sums, blocked differently per shape
        assert len(calls) == len(crops)
        up.upscale(SAMPLE[:33, :8])  # one side over 32: the tier's own engine
        assert len(calls) == len(crops)


def test_a_missing_small_engine_is_an_error_when_the_tier_opens(cpu, tmp_path):
    """A profile that promises a small-image engine must have it, like any tier's engine (fail at construction)."""
    odd = dataclasses.replace(cpu, tiers=(dataclasses.replace(cpu.tiers[0], small_tile=40),))
    with pytest.raises(BackendError, match="no student_x4_t40_b1.onnx .* make it with mambaesr-export --device cpu"):
        Upscaler(odd, engines_dir=tmp_path)


def test_tile_or_overlap_overrides_that_leave_no_room_drop_the_small_engine(cpu):
    with Upscaler(cpu, overlap=16) as up:  # 2 x 16 >= 32: no 32x32 tile with this overlap
        assert up.engine.small is None
    with Upscaler(cpu, tile=264) as up:
        assert up.engine.small is not None
