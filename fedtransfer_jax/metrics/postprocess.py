"""Morphological clean-up of predicted boundary maps before grain statistics are taken.

A network's boundary map has the defects that matter most for grain statistics: 1-2 px gaps
(which merge two grains), isolated specks inside grains (harmless for counting but noisy),
uneven width, and tiny spurious "grains" enclosed by noise.  Each step below fixes one of these
and is off when its parameter is 0/False.  Steps run in this order:

1. closing (``close_radius``)        - bridge small gaps;
2. fragment removal (``min_fragment_px``) - drop small boundary pieces that separate no grains;
3. small-grain merging (``min_grain_area``) - dissolve grains below an area into neighbours;
4. thinning (``thin``)               - skeletonise to 1-px lines (topology preserving);
5. dilation (``dilate_to``)          - re-thicken to a chosen width.

Merging runs before thinning/dilation (rather than last) so the final width is the one asked
for and is not eaten into by the merge.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from fedtransfer_jax.metrics.boundary import as_bool_map
from fedtransfer_jax.metrics.grains import grains_from_boundary

__all__ = [
    "close_gaps",
    "dilate_to_width",
    "merge_small_grains",
    "postprocess_boundary",
    "remove_small_fragments",
    "thin_lines",
]

_GRAIN_STRUCTURE = ndimage.generate_binary_structure(2, 1)  # grains: 4-connected
_BOUNDARY_STRUCTURE = ndimage.generate_binary_structure(2, 2)  # boundary pieces: 8-connected


def _round_footprint(radius: int) -> np.ndarray:
    """Disk of radius ``radius + 0.5``: radius 1 is the full 3x3 square.

    A strict disk of radius 1 is a cross, and closing with a cross does not bridge a 1-px gap
    in a straight line; the half-pixel extension does, while larger radii stay round.
    """
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= (r + 0.5) ** 2


def close_gaps(boundary: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing with a round footprint; bridges gaps up to about ``2 * radius`` px.

    The erosion treats outside-the-image as boundary (``border_value=1``), so lines touching
    the image edge are not eaten away (scipy's closing would erode them at the edge).
    """
    b = as_bool_map(boundary, "boundary")
    if radius <= 0:
        return b.copy()
    fp = _round_footprint(radius)
    dilated = ndimage.binary_dilation(b, structure=fp)
    return ndimage.binary_erosion(dilated, structure=fp, border_value=1)


def remove_small_fragments(boundary: np.ndarray, min_fragment_px: int) -> np.ndarray:
    """Drop 8-connected boundary pieces under ``min_fragment_px`` pixels that separate no grains.

    A piece "separates grains" when its 4-neighbours belong to two or more different grains
    (4-connected interior components), e.g. a small closed ring around a tiny grain or a short
    wall; removing it would change the grain topology, so it is kept (small grains are the job
    of ``merge_small_grains``).  A speck inside one grain touches a single grain and goes.
    """
    b = as_bool_map(boundary, "boundary")
    if min_fragment_px <= 0 or not b.any():
        return b.copy()
    comps, n_comp = ndimage.label(b, structure=_BOUNDARY_STRUCTURE)
    sizes = np.bincount(comps.ravel(), minlength=n_comp + 1)
    small = sizes < min_fragment_px
    small[0] = False
    if not small.any():
        return b.copy()
    grains, _ = ndimage.label(~b, structure=_GRAIN_STRUCTURE)
    # Collect (fragment id, neighbouring grain id) pairs over the four 4-neighbour shifts.
    pairs = []
    h, w = b.shape
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        src = comps[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        nbr = grains[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
        sel = small[src] & (nbr > 0)
        pairs.append(np.stack([src[sel], nbr[sel]], axis=1))
    pairs_arr = np.unique(np.concatenate(pairs, axis=0), axis=0)
    n_neighbours = np.zeros(n_comp + 1, dtype=np.int64)
    if pairs_arr.size:
        n_neighbours = np.bincount(pairs_arr[:, 0], minlength=n_comp + 1)
    remove = small & (n_neighbours <= 1)
    return b & ~remove[comps]


def _local_label_span(labels: np.ndarray, radius: int) -> np.ndarray:
    """True where the square window of ``radius`` around a pixel contains two or more labels."""
    size = 2 * radius + 1
    hi = ndimage.maximum_filter(labels, size=size, mode="nearest")
    lo = ndimage.minimum_filter(labels, size=size, mode="nearest")
    return hi != lo


def merge_small_grains(boundary: np.ndarray, min_grain_area: int) -> np.ndarray:
    """Dissolve grains with fewer than ``min_grain_area`` interior pixels into their neighbours.

    The merged tiling comes from ``grains_from_boundary(min_area=...)`` (small grains and all
    boundary pixels go to the nearest surviving grain).  A boundary pixel survives only if it
    still lies between two different grains of that tiling: its window of radius ``r`` holds two
    labels, where ``r`` is the typical boundary half-width (95th percentile of the distance of a
    boundary pixel to the interior, at least 1; a percentile so junctions and blobs do not
    inflate it).  A thick blob keeps a band of ``2r + 1`` px around the line between its grains.  Boundary bands around a dissolved grain then disappear, except for
    stubs of at most ``r`` px where they meet a surviving boundary.  Dangling boundary ends that
    separate nothing (spurs longer than ``r``) are removed too.  Small grains whose surrounding
    boundary must stay (holes inside a thick band between two large grains) become boundary.
    """
    b = as_bool_map(boundary, "boundary")
    if min_grain_area <= 0 or not b.any() or b.all():
        return b.copy()
    merged = grains_from_boundary(b, connectivity=4, assign_boundary=True, min_area=min_grain_area)
    depth = ndimage.distance_transform_edt(b)
    radius = max(1, int(np.ceil(np.percentile(depth[b], 95))))
    out = b & _local_label_span(merged, radius)
    # Pockets: a small grain inside a band that must stay (e.g. a hole in a thick boundary
    # between two large grains) is still enclosed after the step above; fill it in as boundary.
    grains, n = ndimage.label(~out, structure=_GRAIN_STRUCTURE)
    if n > 1:
        areas = np.bincount(grains.ravel(), minlength=n + 1)
        pocket = areas < min_grain_area
        pocket[0] = False
        if pocket[1:].all():  # never fill every grain: keep the largest
            pocket[int(np.argmax(areas[1:])) + 1] = False
        out = out | pocket[grains]
    return out


def thin_lines(boundary: np.ndarray) -> np.ndarray:
    """Skeletonise to 1-px, 8-connected lines without losing the ends at the image edge.

    ``skeletonize`` treats outside-the-image as background, so a boundary line running into the
    edge is shortened by about its half-width there, which reopens the two grains it separated.
    Replicating the edge before thinning (then cropping) keeps such lines touching the edge.
    """
    b = as_bool_map(boundary, "boundary")
    if not b.any():
        return b.copy()
    if b.all():
        return skeletonize(b).astype(bool)
    pad = int(np.ceil(ndimage.distance_transform_edt(b).max())) + 2
    padded = np.pad(b, pad, mode="edge")
    return skeletonize(padded)[pad:-pad, pad:-pad].astype(bool)


def dilate_to_width(boundary: np.ndarray, width: int) -> np.ndarray:
    """Dilate with a ``width x width`` square: a 1-px line becomes ``width`` px wide (along rows /
    columns).  ``width <= 1`` leaves the map unchanged; the width is exact only for 1-px input
    (use after thinning)."""
    b = as_bool_map(boundary, "boundary")
    if width <= 1:
        return b.copy()
    return ndimage.binary_dilation(b, structure=np.ones((width, width), dtype=bool))


def postprocess_boundary(
    boundary: np.ndarray,
    *,
    close_radius: int = 1,
    thin: bool = False,
    min_fragment_px: int = 0,
    min_grain_area: int = 0,
    dilate_to: int = 0,
) -> np.ndarray:
    """Clean a predicted boundary map; see the module docstring for the step order.

    Args:
      boundary: bool/0-1 ``[H, W]`` map, nonzero = boundary.
      close_radius: closing radius in px (0 = off); 1 bridges 1-2 px gaps.
      thin: skeletonise to 1-px, 8-connected lines (``skimage.morphology.skeletonize``, edge-safe
        via ``thin_lines``), which keeps the 4-connected grains intact.
      min_fragment_px: remove boundary pieces smaller than this that separate no grains (0 = off).
      min_grain_area: merge grains with fewer interior pixels into neighbours (0 = off).
      dilate_to: final line width in px after thinning (0/1 = off).

    Returns:
      bool ``[H, W]`` boundary map.
    """
    b = as_bool_map(boundary, "boundary")
    for name, value in (
        ("close_radius", close_radius),
        ("min_fragment_px", min_fragment_px),
        ("min_grain_area", min_grain_area),
        ("dilate_to", dilate_to),
    ):
        if value < 0:
            raise ValueError(f"postprocess_boundary: {name} must be >= 0, got {value}")
    if close_radius:
        b = close_gaps(b, close_radius)
    if min_fragment_px:
        b = remove_small_fragments(b, min_fragment_px)
    if min_grain_area:
        b = merge_small_grains(b, min_grain_area)
    if thin:
        b = thin_lines(b)
    if dilate_to:
        b = dilate_to_width(b, dilate_to)
    return b.astype(bool, copy=False)
