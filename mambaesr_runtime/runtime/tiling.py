"""Overlapped tiling and seam-free blending: the numerics over :mod:`mambaesr_runtime.geometry`'s tile plans, no
I/O, no state between images.

Tiles are cut from the image as the plan places them (an image smaller than a tile is padded up to it: by
reflection, or with :data:`~mambaesr_runtime.geometry.PAD_VALUE` for an engine that treats it as outside the
image). Outputs are blended with a feathered
window: inside the overlap a tile's weight ramps down linearly towards its edge, so each output pixel is a convex
mix of the tiles covering it that favours the tile where it sits furthest from an edge (where the network saw most
context). Image borders that no neighbour shares keep full weight.
"""

from __future__ import annotations

import numpy as np

from ..geometry import Tile, TilePlan, plan_tiles


def pad_to_plan(img: np.ndarray, plan: TilePlan, pad_value: float | None = None) -> np.ndarray:
    """Pad an (H, W, ...) image at the bottom/right up to the plan's padded size: by reflection, or with
    ``pad_value`` (an engine's manifest ``pad_value``, see :data:`~mambaesr_runtime.geometry.PAD_VALUE`)."""
    ph, pw = plan.padded[0] - img.shape[0], plan.padded[1] - img.shape[1]
    if not ph and not pw:
        return img
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    if pad_value is not None:
        return np.pad(img, pad, mode="constant", constant_values=pad_value)
    return np.pad(img, pad, mode="reflect")


def extract(img: np.ndarray, plan: TilePlan, pad_value: float | None = None) -> np.ndarray:
    """(N, C, th, tw) float32 tiles from an (H, W, C) float image (padded as needed)."""
    padded = pad_to_plan(img, plan, pad_value)
    th, tw = plan.tile
    return np.stack([padded[t.y:t.y + th, t.x:t.x + tw].transpose(2, 0, 1) for t in plan.tiles]).astype(np.float32)


def _ramp(length: int, fade_start: bool, fade_end: bool, ramp: int) -> np.ndarray:
    """1 inside; linear fade over ``ramp`` pixels on the faded ends (never 0, so every pixel keeps some weight)."""
    w = np.ones(length, np.float64)
    if ramp > 0:
        fade = (np.arange(ramp) + 0.5) / ramp
        if fade_start:
            w[:ramp] = np.minimum(w[:ramp], fade)
        if fade_end:
            w[length - ramp:] = np.minimum(w[length - ramp:], fade[::-1])
    return w


class Blender:
    """Accumulates upscaled tiles with feathered weights, one row of tiles at a time.

    Tiles must arrive in the plan's order (row by row). Only a band one tile high is kept: when a tile of the next
    row arrives, the output rows above it are final (no later tile touches them) and are passed, normalised and
    cropped to the image, to ``emit(y0, rows)`` (``rows``: float32 (k, W*s, C) starting at output row ``y0``). So the
    blend needs memory for one tile row, whatever the image height. Without ``emit`` the rows are collected and
    ``result()`` returns the whole (H*s, W*s, C) image.

    The band is kept channels-first, the engines' layout, so adding a tile is two contiguous in-place passes; the
    (at most 16) distinct windows are made once per plan. Measured on the light tier, a 256x256 image: the blend
    went from ~19 % of the call to ~9 %.
    """

    def __init__(self, plan: TilePlan, scale: int, channels: int = 3, emit=None):
        self.plan, self.scale = plan, scale
        th = plan.tile[0]
        pw = plan.padded[1]
        self._sum = np.zeros((channels, th * scale, pw * scale), np.float32)
        self._weight = np.zeros((th * scale, pw * scale), np.float32)
        self._top = 0  # output row of the band's first row
        self._ys = sorted({t.y for t in plan.tiles})
        self._xs = sorted({t.x for t in plan.tiles})
        self._windows: dict = {}
        self._out = None
        if emit is None:
            self._out = np.empty((plan.h * scale, plan.w * scale, channels), np.float32)
            emit = self._store
        self._emit = emit

    def _store(self, y0: int, rows: np.ndarray) -> None:
        self._out[y0:y0 + rows.shape[0]] = rows

    def window(self, tile: Tile) -> np.ndarray:
        """The (th*s, tw*s) weight of ``tile``: fades only on sides shared with a neighbour."""
        key = (tile.y != self._ys[0], tile.y != self._ys[-1], tile.x != self._xs[0], tile.x != self._xs[-1])
        if key not in self._windows:
            s, ramp = self.scale, 2 * self.plan.overlap * self.scale
            th, tw = self.plan.tile
            wy = _ramp(th * s, key[0], key[1], ramp)
            wx = _ramp(tw * s, key[2], key[3], ramp)
            self._windows[key] = (wy[:, None] * wx[None, :]).astype(np.float32)
        return self._windows[key]

    def _advance(self, row: int) -> None:
        """Emit the final output rows [top, row) and slide the band down to start at ``row``."""
        k = row - self._top
        if k <= 0:
            return
        s = self.scale
        stop = min(row, self.plan.h * s)  # rows of reflection padding are dropped
        if stop > self._top:
            n, w = stop - self._top, self.plan.w * s
            rows = self._sum[:, :n, :w] / self._weight[None, :n, :w]
            self._emit(self._top, rows.transpose(1, 2, 0))
        band = self._weight.shape[0]
        if k < band:
            self._sum[:, :band - k] = self._sum[:, k:]
            self._weight[:band - k] = self._weight[k:]
        self._sum[:, max(0, band - k):] = 0
        self._weight[max(0, band - k):] = 0
        self._top = row

    def add(self, tile: Tile, out: np.ndarray) -> None:
        """``out``: (C, th*s, tw*s) network output for ``tile`` (used as scratch: it is overwritten)."""
        s = self.scale
        tw = self.plan.tile[1]
        if tile.y * s < self._top:
            raise ValueError("tiles must be added row by row, in the plan's order")
        self._advance(tile.y * s)
        x = tile.x * s
        w = self.window(tile)
        if not out.flags.writeable:  # a backend's reused, read-only buffer
            out = out.copy()
        np.multiply(out, w, out=out)
        self._sum[:, :, x:x + tw * s] += out
        self._weight[:, x:x + tw * s] += w

    def finish(self) -> None:
        """Emit the rows still in the band (call once, after the last tile)."""
        self._advance(self._top + self._weight.shape[0])

    def result(self) -> np.ndarray:
        self.finish()
        return self._out


class NonFiniteOutput(ArithmeticError):
    """The engine returned NaN or infinity for a tile: ``index`` (from 0) of ``total``, at LR ``(tile.y, tile.x)``
    of shape ``shape`` (h, w). The caller knows the engine and names it in the error it raises."""

    def __init__(self, index: int, total: int, tile: Tile, shape: tuple[int, int]):
        self.index, self.total, self.tile, self.shape = index, total, tile, shape
        super().__init__(f"tile {index + 1} of {total} (LR rows {tile.y}-{tile.y + shape[0] - 1}, columns "
                         f"{tile.x}-{tile.x + shape[1] - 1}) came out with NaN or infinite values")


def upscale_tiled(infer, img: np.ndarray, scale: int, tile: int | tuple[int, int], overlap: int,
                  batch: int = 1, progress=None, emit=None, pad_value: float | None = None) -> np.ndarray | None:
    """Upscale an (H, W, 3) float32 image in [0, 1] through ``infer`` (float32 (batch, 3, th, tw) -> (batch, 3,
    s*th, s*tw)), tile by tile, blended. The last batch is filled up with repeats so every call has the static
    shape; an image smaller than a tile is padded as :func:`pad_to_plan` says. ``progress(done, total)`` is called
    after each batch. An output that is not finite raises
    :class:`NonFiniteOutput` before it reaches the blend (a NaN would otherwise become a black patch).

    Returns the (H*s, W*s, 3) float32 result, or, with ``emit(y0, rows)``, streams the finished output rows to it
    (see :class:`Blender`) and returns ``None``: then memory grows with the tile size, not with the image.
    """
    plan = plan_tiles(img.shape[0], img.shape[1], tile, overlap)
    padded = pad_to_plan(img, plan, pad_value)
    th, tw = plan.tile
    blender = Blender(plan, scale, img.shape[2], emit)
    for start in range(0, len(plan.tiles), batch):
        group = plan.tiles[start:start + batch]
        chunk = np.stack([padded[t.y:t.y + th, t.x:t.x + tw].transpose(2, 0, 1) for t in group]).astype(np.float32)
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        out = infer(chunk)
        finite = np.isfinite(out[:real]).reshape(real, -1).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise NonFiniteOutput(start + bad, len(plan.tiles), group[bad], plan.tile)
        for i in range(real):
            blender.add(group[i], out[i])
        if progress is not None:
            progress(min(start + batch, len(plan.tiles)), len(plan.tiles))
    if emit is not None:
        blender.finish()
        return None
    return blender.result()
