"""The tiling geometry (foundation layer, pure integers): the one tile/overlap rule, the tile plan, and the two
constants every layer shares. Profiles validate tiers with :func:`check_tiling`, the artifact manifest names
:data:`PAD_VALUE`, the model derives its pad-aware mask from it, and ``runtime.tiling`` cuts and blends by
:func:`plan_tiles`.

Geometry is in LR pixels. Every tile has the engine's static shape ``(tile_h, tile_w)``; tiles lie inside the
(padded) image, the first starts at 0, the last ends at the image edge, and neighbours overlap by at least
``2 * overlap`` (``overlap`` is per side). An image smaller than a tile is padded up to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

#: What a tile that overhangs the image is filled with for a pad-aware engine (manifest ``pad_value``): below the
#: [0, 1] pixel range, so the network can tell the padding from the image and treat it as outside (its scans carry
#: state along whole lines: a reflected border leaked into the image and cost the fast tier 0.13 dB on Set5).
PAD_VALUE = -1.0

#: The smallest tile a profile tier (or a caller's tile override) may ask for: a smaller one would be mostly overlap
#: and padding. Engine files may have any static tile the rule below allows.
MIN_TILE = 8


@dataclass(frozen=True)
class Tile:
    """One tile: ``(y, x)`` top-left in the (padded) LR image, of the plan's ``tile`` shape."""

    y: int
    x: int


@dataclass(frozen=True)
class TilePlan:
    """Tiles for an ``(h, w)`` LR image; ``padded`` is the size after padding (>= the tile shape)."""

    h: int
    w: int
    tile: tuple[int, int]
    overlap: int
    padded: tuple[int, int]
    tiles: tuple[Tile, ...]


def check_tiling(tile: int | tuple[int, int], overlap: int, min_tile: int = 1, where: str = "") -> None:
    """The one tile/overlap rule (profiles, tier overrides, engine files and :func:`plan_tiles` all apply it): each
    side of the tile at least ``min_tile`` and the overlap per side ``>= 0`` and less than half the tile's shorter
    side, so that neighbouring tiles advance. A :class:`ConfigError` (a ``ValueError``) naming ``where`` otherwise."""
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
    prefix = f"{where}: " if where else ""
    if min(th, tw) < max(min_tile, 1):
        raise ConfigError(f"{prefix}tile {th}x{tw} is too small; a tile must be at least {max(min_tile, 1)} pixels")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0 or 2 * overlap >= min(th, tw):
        raise ConfigError(f"{prefix}overlap {overlap!r} must be an integer >= 0 and less than half the tile "
                          f"({th}x{tw})")


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - 2 * overlap
    n = math.ceil((length - tile) / stride) + 1
    # Spread evenly between 0 and length - tile: every overlap is >= 2 * overlap, none wastefully larger.
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def plan_tiles(h: int, w: int, tile: int | tuple[int, int], overlap: int) -> TilePlan:
    """Cover an ``h`` x ``w`` LR image with tiles of shape ``tile`` overlapping by ``overlap`` per side."""
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be at least 1x1, got {h}x{w}")
    check_tiling((th, tw), overlap)
    ph, pw = max(h, th), max(w, tw)
    tiles = tuple(Tile(y, x) for y in _starts(ph, th, overlap) for x in _starts(pw, tw, overlap))
    return TilePlan(h, w, (th, tw), overlap, (ph, pw), tiles)
