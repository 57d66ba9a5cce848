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
def test_streamed_blocks_cover_the_whole_image_exactly_once(h, w, tile, batch, data):
    overlap = data.draw(st.integers(0, (tile - 1) // 2))
    img = np.random.default_rng(h * 1000 + w).random((h, w, 3), dtype=np.float32)
    nearest = lambda x: x.repeat(2, axis=2).repeat(2, axis=3)
    whole = upscale_tiled(nearest, img, 2, tile, overlap, batch)
    seen = np.zeros(whole.shape[:2], int)
    pieced = np.full_like(whole, np.nan)

    def emit(y0, x0, block):
        seen[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] += 1
        pieced[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] = block

    assert upscale_tiled(nearest, img, 2, tile, overlap, batch, emit=emit) is None
    assert (seen == 1).all()
    np.testing.assert_array_equal(pieced, whole)


def band_blend(tiles_out, plan, scale):
    """The blend as it was before issue 24: a one-tile-high band of the whole padded width, tiles added in the
    plan's order (the reference the cell blend must equal bit for bit, row by row)."""
    th, tw = plan.tile
    ph, pw = plan.padded
    acc = np.zeros((3, ph * scale, pw * scale), np.float32)
    weight = np.zeros((ph * scale, pw * scale), np.float32)
    ref = Blender(plan_tiles(ph, pw, plan.tile, plan.overlap), scale)  # uncropped windows of the padded plan
    ref._ys, ref._xs = sorted({t.y for t in plan.tiles}), sorted({t.x for t in plan.tiles})
    for t, out in zip(plan.tiles, tiles_out):
        w = ref.window(t)
        y, x = t.y * scale, t.x * scale
        acc[:, y:y + th * scale, x:x + tw * scale] += out * w
        weight[y:y + th * scale, x:x + tw * scale] += w
    return (acc / weight[None]).transpose(1, 2, 0)[:plan.h * scale, :plan.w * scale]


@pytest.mark.parametrize("h, w", [(1, 70), (30, 30), (45, 100), (100, 45), (37, 53)])
def test_the_cell_blend_is_bit_identical_to_the_whole_width_band_row_by_row(h, w):
    plan = plan_tiles(h, w, 16, 3)
    rng = np.random.default_rng(h + w)
    outs = [rng.random((3, 32, 32), dtype=np.float32) for _ in plan.tiles]
    blender = Blender(plan, 2)  # tiles may come in any order; in the plan's (row by row) it is the band's arithmetic
    for t, o in zip(plan.tiles, outs):
        blender.add(t, o.copy())
    np.testing.assert_array_equal(blender.result(), band_blend(outs, plan, 2))


def test_column_order_differs_from_row_order_only_by_float_rounding():
    plan = plan_tiles(20, 200, 16, 2)  # one tile and a bit high, many wide: columns hold far less
    blender = Blender(plan, 2)
    assert blender.order != plan.tiles
    rng = np.random.default_rng(3)
    outs = {t: rng.random((3, 32, 32), dtype=np.float32) for t in plan.tiles}
    for t in blender.order:
        blender.add(t, outs[t].copy())
    np.testing.assert_allclose(blender.result(), band_blend([outs[t] for t in plan.tiles], plan, 2), rtol=1e-6)


def test_blend_memory_is_bounded_by_the_tile_not_the_image():
    """The blend holds only the cells some tile still has to reach, cut to the image: a 1-row strip holds a few
    rows of one tile's width, whatever its length, and a tall image one tile row."""
    strip, longer = plan_tiles(1, 2000, 32, 4), plan_tiles(1, 20000, 32, 4)
    a, b = Blender(strip, 4, emit=lambda *_: None), Blender(longer, 4, emit=lambda *_: None)
    assert a.peak_bytes == b.peak_bytes < 4 * 4 * (2 * 32 * 4) * 4 * 4  # < 2 tiles wide x 4 rows x 4 planes x 4 B
    short, tall = plan_tiles(64, 100, 32, 4), plan_tiles(4000, 100, 32, 4)
    c, d = Blender(short, 4, emit=lambda *_: None), Blender(tall, 4, emit=lambda *_: None)
    assert c.peak_bytes <= d.peak_bytes <= (4 * 128 * 400 + 9 * 128 * 128) * 4  # a tile row + <= 9 windows
    # wide and one tile and a bit high: blended by columns, so the held strip is not the whole width
    wide = Blender(plan_tiles(40, 20000, 32, 4), 4, emit=lambda *_: None)
    assert wide.peak_bytes < 4 * (40 * 4) * (3 * 32 * 4) * 4 + 9 * 128 * 128 * 4


@pytest.mark.parametrize("h, w", [(150, 250), (1, 900), (70, 600), (250, 150)])
def test_the_blend_allocates_what_peak_bytes_says(h, w):
    """peak_bytes (what the memory estimate counts) against what numpy really allocates (tracemalloc sees numpy's
    buffers), tiles arriving in the blender's order; the rest is Python's bookkeeping of the open cells."""
    import tracemalloc

    plan = plan_tiles(h, w, 64, 4)
    outs = [np.ones((3, 256, 256), np.float32) for _ in plan.tiles]
    tracemalloc.start()
    try:
        blender = Blender(plan, 4, emit=lambda *_: None)
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for t, out in zip(blender.order, outs):
            blender.add(t, out)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    blender.finish()
    # an upper bound but for Python's own objects and ufunc buffers (tens of KB), and a close one
    assert 0.75 * blender.peak_bytes <= peak <= 1.02 * blender.peak_bytes + 65536


def test_a_tile_twice_or_missing_is_refused():
    plan = plan_tiles(20, 20, 16, 2)
    blender = Blender(plan, 1)
    blender.add(plan.tiles[0], np.ones((3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="added already"):
        blender.add(plan.tiles[0], np.ones((3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="not added"):
        blender.result()
