"""How much an image's grain map changes when the magnification moves one step: a check without labels.

A model that sees real grain boundaries draws about the same grains at scale s and at the neighbouring
scales of ``--scale auto``'s search (1, 1/1.5, 1/2, 1/3, 1/4: one step is 1.33-1.5x); a model segmenting
texture, noise or stains draws different "grains" at every scale, because texture has no scale of its own
in the way a grain structure has. **Stability** is the mean adjusted Rand index between the grain map at
the chosen scale and the grain maps at its neighbouring candidates, each pair compared on the part of the
image both views cover, in the image's own pixels, after the same post-processing.

Measured with the shipped model (``scripts/stability_check.py``; docs/MODEL.md "How far to trust a map"):
on synthetic images it ranks maps by their true ARI (Spearman +0.72 [+0.43, +0.87] on 18 held-out images),
but on the 21 real TBM test crops only weakly (+0.24 [-0.20, +0.62]), which fails the bar fixed before that
check. So it is recorded for every image (grain_sizes.json, the summary CSV, the report) as information,
and it raises no warning by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedtransfer_jax.metrics import grains as grains_lib

Box = tuple[int, int, int, int]  # (y, x, height, width) of a view in the image's pixels


def neighbours(cands: Sequence[float], s: float) -> list[float]:
    """The candidates just above and below ``s`` in ``cands`` (one at either end of the list)."""
    i = list(cands).index(s)
    return [cands[j] for j in (i - 1, i + 1) if 0 <= j < len(cands)]


def _overlap(a: Box, b: Box) -> Box | None:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (y0, x0, y1 - y0, x1 - x0) if y1 > y0 and x1 > x0 else None


def _crop(boundary: np.ndarray, box: Box, region: Box) -> np.ndarray:
    y, x = region[0] - box[0], region[1] - box[1]
    return boundary[y : y + region[2], x : x + region[3]]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """ARI between the grain maps (boundaries assigned to the nearest grain) of two boundary maps."""
    return grains_lib.adjusted_rand_index(grains_lib.grains_from_boundary(a), grains_lib.grains_from_boundary(b))


def at_scale(
    maps: Mapping[float, tuple[np.ndarray, Box]], chosen: float, cands: Sequence[float]
) -> tuple[float | None, list[float]]:
    """``(stability, neighbours compared)`` of the ``chosen`` scale.

    ``maps[s]`` is ``(boundary map of s's view in the image's pixels, that view's box in the image)`` for
    at least ``chosen`` and its neighbours in ``cands``. None when ``chosen`` has no neighbour (one
    candidate only) or no view overlaps it.
    """
    values, used = [], []
    for t in neighbours(cands, chosen):
        (a, box_a), (b, box_b) = maps[chosen], maps[t]
        region = _overlap(box_a, box_b)
        if region is None:
            continue
        values.append(agreement(_crop(a, box_a, region), _crop(b, box_b, region)))
        used.append(t)
    return (float(np.mean(values)) if values else None), used
