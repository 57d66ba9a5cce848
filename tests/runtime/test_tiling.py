"""Tiling geometry (property tests) and blending: full coverage, static tile shape, overlap, seam-free output."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mambaesr_runtime.geometry import PAD_VALUE, plan_tiles
from mambaesr_runtime.runtime.tiling import Blender, extract, upscale_tiled


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), tile=st.integers(4, 96), data=st.data())
def test_every_pixel_is_covered_by_whole_tiles_that_overlap_enough(h, w, tile, data):
    overlap = data.draw(st.integers(0, (tile - 1) // 2))
    plan = plan_tiles(h, w, tile, overlap)
    ph, pw = plan.padded
    assert ph == max(h, tile) and pw == max(w, tile)
    covered = np.zeros((ph, pw), bool)
    for t in plan.tiles:
        assert 0 <= t.y <= ph - tile and 0 <= t.x <= pw - tile  # always the engine's full static shape
        covered[t.y:t.y + tile, t.x:t.x + tile] = True
    assert covered.all()
    for axis_starts in (sorted({t.y for t in plan.tiles}), sorted({t.x for t in plan.tiles})):
        gaps = np.diff(axis_starts)
        assert (tile - gaps >= 2 * overlap).all()  # neighbours share at least 2 * overlap pixels


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (7, 5), (13, 97), (97, 13)])
def test_small_and_prime_sizes_reflect_pad_and_crop_back(h, w):
    img = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    plan = plan_tiles(h, w, 8, 2)
    tiles = extract(img, plan)
    assert tiles.shape[1:] == (3, 8, 8)
    # identity "network" at scale 1: tiling + blending must return the image exactly
    out = upscale_tiled(lambda x: x, img, 1, 8, 2, batch=3)
    np.testing.assert_allclose(out, img, rtol=0, atol=1e-6)


def test_a_pad_value_fills_what_overhangs_the_image_instead_of_reflection():
    img = np.random.default_rng(0).random((5, 7, 3), dtype=np.float32)
    plan = plan_tiles(5, 7, 8, 2)
    tiles = extract(img, plan, pad_value=PAD_VALUE)
    np.testing.assert_array_equal(tiles[0, :, :5, :7], img.transpose(2, 0, 1))
    assert (tiles[0, :, 5:, :] == PAD_VALUE).all() and (tiles[0, :, :, 7:] == PAD_VALUE).all()
    seen = []
    out = upscale_tiled(lambda x: seen.append(x.copy()) or x, img, 1, 8, 2, pad_value=PAD_VALUE)
    np.testing.assert_array_equal(out, img)
    assert (seen[0][0, :, 5:] == PAD_VALUE).all()


def test_nearest_upscale_through_tiles_equals_whole_image():
    img = np.random.default_rng(1).random((37, 53, 3), dtype=np.float32)
    nearest = lambda x: x.repeat(4, axis=2).repeat(4, axis=3)
    out = upscale_tiled(nearest, img, 4, 16, 3, batch=4)
    np.testing.assert_allclose(out, img.repeat(4, 0).repeat(4, 1), atol=1e-6)


def test_window_fades_only_towards_neighbours():
    plan = plan_tiles(40, 16, 16, 4)  # one column of tiles
    blender = Blender(plan, 2)
    first, last = blender.window(plan.tiles[0]), blender.window(plan.tiles[-1])
    assert first[0, :].min() == 1.0 and first[-1, :].max() < 0.1  # image edge kept, shared edge faded
    assert last[-1, :].min() == 1.0 and last[0, :].max() < 0.1
    assert (first > 0).all()


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="at least 1x1"):
        plan_tiles(0, 5, 8, 2)
    with pytest.raises(ValueError, match="less than half the tile"):
        plan_tiles(10, 10, 8, 4)


@settings(max_examples=100, deadline=None)
@given(h=st.integers(1, 120), w=st.integers(1, 60), tile=st.integers(6, 40), batch=st.integers(1, 5), data=st.data())
def test_streamed_rows_are_the_whole_image_in_order_exactly_once(h, w, tile, batch, data):
    overlap = data.draw(st.integers(0, (tile - 1) // 2))
    img = np.random.default_rng(h * 1000 + w).random((h, w, 3), dtype=np.float32)
    nearest = lambda x: x.repeat(2, axis=2).repeat(2, axis=3)
    whole = upscale_tiled(nearest, img, 2, tile, overlap, batch)
    pieces = []
    assert upscale_tiled(nearest, img, 2, tile, overlap, batch, emit=lambda y0, rows: pieces.append(
        (y0, rows.copy()))) is None
    starts = [y0 for y0, _ in pieces]
    assert starts[0] == 0 and all(b == a + r.shape[0] for (a, r), b in zip(pieces, starts[1:]))
    np.testing.assert_array_equal(np.concatenate([r for _, r in pieces]), whole)


def test_blend_memory_is_one_tile_row_whatever_the_image_height():
    short, tall = plan_tiles(64, 100, 32, 4), plan_tiles(4000, 100, 32, 4)
    a, b = Blender(short, 4, emit=lambda *_: None), Blender(tall, 4, emit=lambda *_: None)
    assert a._sum.shape == b._sum.shape == (3, 128, 400)  # 32 * 4 rows of 100 * 4 px: independent of height
