"""Cutting micrographs into fixed-size tiles and stitching per-tile predictions back.

Micrographs come in any size but the network and the stored tfds features want a fixed tile; tiles
overlap so that predictions near a tile edge (where the receptive field is truncated) are averaged
with better-placed neighbours. Positions are ``(y, x)`` of a tile's top-left corner in the (possibly
reflect-padded) image; the last tile on each axis sits flush with the edge instead of running past it.
"""

from __future__ import annotations

import numpy as np

Position = tuple[int, int]


def _axis_starts(n: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis: a regular stride, then one tile flush with the far edge."""
    if n <= tile:
        return [0]
    return list(range(0, n - tile, stride)) + [n - tile]


def tile_positions(h: int, w: int, tile: int, overlap: int = 0) -> list[Position]:
    """Top-left corners of tiles that cover an ``h x w`` image, row-major.

    Images smaller than ``tile`` along an axis get a single tile at 0 (``extract_tiles`` pads them).
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    stride = tile - overlap
    return [(y, x) for y in _axis_starts(h, tile, stride) for x in _axis_starts(w, tile, stride)]


def pad_to_tile(image: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pads the bottom/right of ``image`` so both spatial sides are at least ``tile``.

    Reflection (rather than zeros) keeps the padded area micrograph-like, so it does not look like a
    giant dark grain to the network. Axes of length 1 cannot be reflected and are edge-padded.
    """
    h, w = image.shape[:2]
    ph, pw = max(tile - h, 0), max(tile - w, 0)
    if ph == 0 and pw == 0:
        return image
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(image, pad, mode=mode)


def extract_tiles(image: np.ndarray, tile: int, overlap: int = 0) -> tuple[np.ndarray, list[Position]]:
    """Cuts ``image [H, W, ...]`` into ``tiles [T, tile, tile, ...]`` plus their ``(y, x)`` positions."""
    image = np.asarray(image)
    positions = tile_positions(image.shape[0], image.shape[1], tile, overlap)
    padded = pad_to_tile(image, tile)
    tiles = np.stack([padded[y : y + tile, x : x + tile] for y, x in positions])
    return tiles, positions


def blend_window(tile: int, blend: str = "hann") -> np.ndarray:
    """Per-pixel weight ``[tile, tile]`` of one tile when stitching.

    'hann' tapers towards the tile border so overlapping tiles cross-fade and seams vanish; it is the
    interior of a (tile + 2)-point Hann window, strictly positive, so pixels covered by a single tile
    (image borders) keep a well-defined weight. 'mean' weighs every pixel equally.
    """
    if blend == "mean":
        return np.ones((tile, tile), np.float64)
    if blend == "hann":
        w1 = np.hanning(tile + 2)[1:-1]
        return np.outer(w1, w1)
    raise ValueError(f"unknown blend {blend!r}; expected 'hann' or 'mean'")


def stitch(
    tiles: np.ndarray,
    positions: list[Position],
    out_hw: tuple[int, int],
    tile: int,
    blend: str = "hann",
) -> np.ndarray:
    """Weighted average of overlapping ``tiles [T, tile, tile, ...]`` into ``[H, W, ...]``.

    Accumulates in float64 so that 'mean' on identical overlaps reproduces the input bit-for-bit
    (k * x and its division by k are exact for float32 x). Returns float32 for integer input,
    otherwise the input's floating dtype.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim < 3 or tiles.shape[1:3] != (tile, tile):
        raise ValueError(f"tiles must be [T, {tile}, {tile}, ...], got {tiles.shape}")
    if len(positions) != tiles.shape[0]:
        raise ValueError(f"{tiles.shape[0]} tiles but {len(positions)} positions")
    h, w = out_hw
    ph, pw = max(h, tile), max(w, tile)
    extra = tiles.shape[3:]
    acc = np.zeros((ph, pw) + extra, np.float64)
    wsum = np.zeros((ph, pw), np.float64)
    win = blend_window(tile, blend)
    win_b = win.reshape(win.shape + (1,) * len(extra))
    for t, (y, x) in zip(tiles, positions):
        if y < 0 or x < 0 or y + tile > ph or x + tile > pw:
            raise ValueError(f"tile at {(y, x)} falls outside the {ph}x{pw} canvas")
        acc[y : y + tile, x : x + tile] += t.astype(np.float64) * win_b
        wsum[y : y + tile, x : x + tile] += win
    wsum = wsum[:h, :w]
    if np.any(wsum == 0):
        raise ValueError("tiles do not cover the whole output; use positions from tile_positions")
    out = acc[:h, :w] / wsum.reshape(wsum.shape + (1,) * len(extra))
    dtype = tiles.dtype if np.issubdtype(tiles.dtype, np.floating) else np.float32
    return out.astype(dtype)
