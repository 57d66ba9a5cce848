"""Overlapped tiling and seam-free blending: the numerics over :mod:`mambaesr_runtime.geometry`'s tile plans, no
I/O, no state between images.

Tiles are cut from the image as the plan places them, one batch at a time (an image smaller than a tile is padded up
to it, tile by tile: by reflection, or with :data:`~mambaesr_runtime.geometry.PAD_VALUE` for an engine that treats
it as outside the image). Outputs are blended with a feathered window: inside the overlap a tile's weight ramps
down linearly towards its edge, so each output pixel is a convex mix of the tiles covering it that favours the tile
where it sits furthest from an edge (where the network saw most context). Image borders that no neighbour shares
keep full weight.

Working memory is bounded by the tile, not the image: the blend keeps only the output cells some tile still has to
reach (see :class:`Blender`), cut to the image (padding is never accumulated), and the tiles are cut lazily.
"""

from __future__ import annotations

import numpy as np

from ..geometry import Tile, TilePlan, plan_tiles

_F32 = 4  # bytes
#: Feathering windows a :class:`Blender` keeps made (a row or column of tiles uses three kinds).
WINDOWS_KEPT = 3


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


def cut_tile(img: np.ndarray, plan: TilePlan, tile: Tile, pad_value: float | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
    """The (C, th, tw) float32 input of ``tile``, cut from the unpadded (H, W, C) image: equal to the same window
    of :func:`pad_to_plan`'s image, without padding the whole image. (A tile overhangs the image only along an axis
    shorter than the tile, where it starts at 0 and spans all of it, so padding the cut reflects exactly as padding
    the image would.) ``out``: a (C, th, tw) float32 array to fill instead of a new one."""
    th, tw = plan.tile
    crop = img[tile.y:tile.y + th, tile.x:tile.x + tw]
    if crop.shape[:2] != (th, tw):
        pad = [(0, th - crop.shape[0]), (0, tw - crop.shape[1]), (0, 0)]
        crop = (np.pad(crop, pad, mode="constant", constant_values=pad_value) if pad_value is not None else
                np.pad(crop, pad, mode="reflect"))
    if out is None:
        out = np.empty((img.shape[2], th, tw), np.float32)
    out[...] = crop.transpose(2, 0, 1)
    return out


def extract(img: np.ndarray, plan: TilePlan, pad_value: float | None = None) -> np.ndarray:
    """(N, C, th, tw) float32: every tile of an (H, W, C) float image at once (padded as needed). For tests and
    small images; :func:`upscale_tiled` cuts one batch at a time."""
    out = np.empty((len(plan.tiles), img.shape[2], *plan.tile), np.float32)
    for i, t in enumerate(plan.tiles):
        cut_tile(img, plan, t, pad_value, out[i])
    return out


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


def _axis_cells(starts: list[int], tile: int, length: int, scale: int) -> tuple[list[tuple[int, int]], dict, list]:
    """Along one axis: the output intervals between consecutive tile edges, cut to the image (``length`` LR pixels),
    which of them each start covers (a range of indices), and how many starts cover each."""
    end = length * scale
    cuts = sorted({min(v * scale, end) for st in starts for v in (st, st + tile)} | {0, end})
    index = {c: k for k, c in enumerate(cuts)}
    spans = list(zip(cuts, cuts[1:]))  # cuts are distinct: every span is non-empty
    covers = {st: range(index[min(st * scale, end)], index[min((st + tile) * scale, end)]) for st in starts}
    count = [0] * (len(spans) + 1)
    for r in covers.values():  # a difference array: +1 where a start's range begins, -1 past its end
        count[r.start] += 1
        count[r.stop] -= 1
    for k in range(1, len(count)):
        count[k] += count[k - 1]
    return spans, covers, count[:-1]


class Blender:
    """Accumulates upscaled tiles with feathered weights and emits each part of the output once it is final.

    The output (cut to the image: padding is never accumulated) is divided into cells by the tile edges along
    each axis; a cell is covered by a fixed set of tiles, and once the last of them has been added it is
    normalised and passed to ``emit(y0, x0, block)`` (``block``: float32 (h, w, C) at output row ``y0``, column
    ``x0``) and dropped. So only the cells some tile still has to reach are held: along the traversal, one tile's
    neighbourhood and the overlap strip it shares with the next row (or column) of tiles. Tiles may arrive in any
    order; in :attr:`order` (the plan's rows, or its columns when that strip is smaller: a wide image one tile and
    a bit high) the memory is :attr:`peak_bytes`, which :func:`peak_blend_bytes` computes without allocating.
    Without ``emit`` the blocks are collected and ``result()`` returns the whole (H*s, W*s, C) image.

    Each output pixel is the sum of its tiles' weighted outputs in the order they were added, divided by the sum of
    their weights (float32, channels-first like the engines). Row by row this is the same arithmetic, in the same
    order, as the earlier one-tile-high band of the whole width, so the result is bit-identical to it; column by
    column it differs only where three or more tiles overlap (the order of a float32 sum), by rounding.
    """

    def __init__(self, plan: TilePlan, scale: int, channels: int = 3, emit=None):
        self.plan, self.scale, self.channels = plan, scale, channels
        self._ys = sorted({t.y for t in plan.tiles})
        self._xs = sorted({t.x for t in plan.tiles})
        th, tw = plan.tile
        self._rows, self._row_of, row_count = _axis_cells(self._ys, th, plan.h, scale)
        self._cols, self._col_of, col_count = _axis_cells(self._xs, tw, plan.w, scale)
        self._count = (row_count, col_count)
        # A tile overhangs the image only along an axis shorter than the tile (and then starts at 0): every tile's
        # part inside the image has this shape.
        self._crop = (min(th, plan.h) * scale, min(tw, plan.w) * scale)
        self.order, self.peak_bytes = _choose_order(self)
        self._cells: dict = {}  # (row span, column span) -> [sum (C, h, w), weight (h, w), tiles still to come]
        self._added: set = set()
        self._windows: dict = {}
        self._out = None
        if emit is None:
            self._out = np.empty((plan.h * scale, plan.w * scale, channels), np.float32)
            emit = self._store
        self._emit = emit

    def _store(self, y0: int, x0: int, block: np.ndarray) -> None:
        self._out[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] = block

    def window(self, tile: Tile) -> np.ndarray:
        """The weight of ``tile`` over its part inside the image (the whole (th*s, tw*s) for an image at least a
        tile large): fades only on sides shared with a neighbour.

        There are up to 9 kinds (first, inner or last along each axis), but a row (or column) of tiles uses 3, so
        the last :data:`WINDOWS_KEPT` made are kept. Each is the float64 product of the two ramps rounded to float32
        element by element (no float64 plane is allocated)."""
        key = (tile.y != self._ys[0], tile.y != self._ys[-1], tile.x != self._xs[0], tile.x != self._xs[-1])
        window = self._windows.pop(key, None)
        if window is None:
            s, ramp = self.scale, 2 * self.plan.overlap * self.scale
            th, tw = self.plan.tile
            wy = _ramp(th * s, key[0], key[1], ramp)[:self._crop[0]]
            wx = _ramp(tw * s, key[2], key[3], ramp)[:self._crop[1]]
            while len(self._windows) >= WINDOWS_KEPT:
                del self._windows[next(iter(self._windows))]  # the least recently used
            window = np.empty(self._crop, np.float32)
            np.multiply(wy[:, None], wx[None, :], out=window, dtype=np.float64, casting="unsafe")
        self._windows[key] = window
        return window

    def add(self, tile: Tile, out: np.ndarray) -> None:
        """``out``: (C, th*s, tw*s) network output for ``tile`` (used as scratch: it is overwritten)."""
        if tile in self._added or tile.y not in self._row_of or tile.x not in self._col_of:
            raise ValueError(f"tile {tile} is not in the plan or was added already")
        self._added.add(tile)
        s = self.scale
        h, w = self._crop
        weight = self.window(tile)
        if not out.flags.writeable:  # a backend's reused, read-only buffer
            out = out.copy()
        part = out[:, :h, :w]
        np.multiply(part, weight, out=part)
        y0, x0 = tile.y * s, tile.x * s
        for i in self._row_of[tile.y]:
            ra, rb = self._rows[i]
            for j in self._col_of[tile.x]:
                ca, cb = self._cols[j]
                if self._count[0][i] * self._count[1][j] == 1:  # this tile's alone: final now (0 + x is x)
                    block = part[:, ra - y0:rb - y0, ca - x0:cb - x0] / weight[None, ra - y0:rb - y0, ca - x0:cb - x0]
                    self._emit(ra, ca, block.transpose(1, 2, 0))
                    continue
                cell = self._cells.get((i, j))
                if cell is None:
                    cell = self._cells[(i, j)] = [np.zeros((self.channels, rb - ra, cb - ca), np.float32),
                                                  np.zeros((rb - ra, cb - ca), np.float32),
                                                  self._count[0][i] * self._count[1][j]]
                cell[0] += part[:, ra - y0:rb - y0, ca - x0:cb - x0]
                cell[1] += weight[ra - y0:rb - y0, ca - x0:cb - x0]
                cell[2] -= 1
                if not cell[2]:
                    del self._cells[(i, j)]
                    self._emit(ra, ca, (cell[0] / cell[1][None]).transpose(1, 2, 0))

    def finish(self) -> None:
        """Check that every tile has been added (every cell is then emitted already)."""
        if self._cells or len(self._added) != len(self.plan.tiles):
            raise ValueError(f"{len(self.plan.tiles) - len(self._added)} of {len(self.plan.tiles)} tiles were not "
                             f"added; the blend is incomplete")

    def result(self) -> np.ndarray:
        self.finish()
        return self._out


def _choose_order(blender: Blender) -> tuple[tuple[Tile, ...], int]:
    """(tile order, peak bytes of the blend in that order): the plan's rows, or its columns when they hold less."""
    rows = blender.plan.tiles
    best = (rows, _simulate(blender, rows))
    if len(blender._ys) > 1 and len(blender._xs) > 1:
        cols = tuple(sorted(rows, key=lambda t: (t.x, t.y)))
        by_columns = _simulate(blender, cols)
        if by_columns < best[1]:
            best = (cols, by_columns)
    return best


def _simulate(blender: Blender, order) -> int:
    """The peak bytes :meth:`Blender.add` holds when tiles arrive in ``order``: the open cells (sums and weights),
    the normalised block of the cell being emitted, the windows. Counted, not allocated (numpy's own; Python's
    bookkeeping, ~0.2 KB per open cell, is left out)."""
    rows, cols = blender._rows, blender._cols
    (row_count, col_count), c = blender._count, blender.channels
    remaining: dict = {}
    held = peak = 0
    for t in order:
        for i in blender._row_of[t.y]:
            for j in blender._col_of[t.x]:
                size = (rows[i][1] - rows[i][0]) * (cols[j][1] - cols[j][0])
                if row_count[i] * col_count[j] == 1:  # emitted straight from the tile: only its normalised block
                    peak = max(peak, held + c * size * _F32)
                    continue
                if (i, j) not in remaining:
                    remaining[(i, j)] = row_count[i] * col_count[j]
                    held += (c + 1) * size * _F32
                remaining[(i, j)] -= 1
                if not remaining[(i, j)]:
                    peak = max(peak, held + c * size * _F32)  # the normalised block, before the cell goes
                    held -= (c + 1) * size * _F32
                peak = max(peak, held)
    kinds = {(t.y != blender._ys[0], t.y != blender._ys[-1], t.x != blender._xs[0], t.x != blender._xs[-1])
             for t in blender.plan.tiles}
    # + the windows, and NumPy's buffers for making one in float64 (3 operands of 8192 elements)
    crop = blender._crop[0] * blender._crop[1]
    return peak + min(len(kinds), WINDOWS_KEPT) * _F32 * crop + 3 * min(crop, 8192) * 8


def peak_blend_bytes(h: int, w: int, scale: int, tile: int | tuple[int, int], overlap: int, channels: int = 3) -> int:
    """The most bytes a :class:`Blender` holds for an ``h`` x ``w`` image (in its own :attr:`~Blender.order`),
    computed from the plan alone."""
    return Blender(plan_tiles(h, w, tile, overlap), scale, channels, emit=lambda *_: None).peak_bytes


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
    s*th, s*tw)), tile by tile, blended. Tiles are cut one batch at a time, in the blend's order; the last batch is
    filled up with repeats so every call has the static shape; an image smaller than a tile is padded as
    :func:`pad_to_plan` says. ``progress(done, total)`` is called after each batch. An output that is not finite
    raises :class:`NonFiniteOutput` before it reaches the blend (a NaN would otherwise become a black patch).

    Returns the (H*s, W*s, 3) float32 result, or, with ``emit(y0, x0, block)``, passes each finished block of the
    output to it (see :class:`Blender`) and returns ``None``: then memory grows with the tile size, not with the
    image.
    """
    plan = plan_tiles(img.shape[0], img.shape[1], tile, overlap)
    blender = Blender(plan, scale, img.shape[2], emit)
    order, total = blender.order, len(plan.tiles)
    chunk = np.empty((batch, img.shape[2], *plan.tile), np.float32)
    for start in range(0, total, batch):
        group = order[start:start + batch]
        real = len(group)
        for i, t in enumerate(group):
            cut_tile(img, plan, t, pad_value, chunk[i])
        chunk[real:] = chunk[real - 1]
        out = infer(chunk)
        finite = np.isfinite(out[:real]).reshape(real, -1).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise NonFiniteOutput(start + bad, total, group[bad], plan.tile)
        for i in range(real):
            blender.add(group[i], out[i])
        if progress is not None:
            progress(min(start + batch, total), total)
    if emit is not None:
        blender.finish()
        return None
    return blender.result()
