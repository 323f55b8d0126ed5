"""Fidelity measures on plain arrays: does a set of tiles look like a lab, and what does a tile show?

Kept apart from the judges (trained models) and from the protocol that strings the checks together, so
each measure can be read and tested on hand-made arrays: the Frechet distance between descriptor sets,
the fixed descriptor space they are compared in, boundary polarity and tile-border seams. Nothing here
trains or draws random numbers.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from fedtransfer_jax.data.batching import map_in_batches
from fedtransfer_jax.style.features import GROUPS
from fedtransfer_jax.style.labelmaps import distance_bins

_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
POLARITY_MIN_CONTRAST = 0.02  # |boundary - interior| luminance below which a lab has no polarity
# A restyled set "looks like lab k" when it is at least twice closer to real k than any other real lab is
# (both descriptor groups). On the dev seeds: held-out real tiles 0.00-0.03, the true renderer of the
# target lab applied to the source geometry 0.02-0.15, brightness-matched foreign tiles >= 1.0.
GOAL_FIDELITY_RATIO = 0.5


def frechet_distance(a: np.ndarray, b: np.ndarray, ridge: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a [N, D]`` and ``b [M, D]``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` (float64; ``ridge`` keeps sqrtm stable)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: need [N, D] and [M, D], got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance: need >= 2 samples per set")
    eye = ridge * np.eye(a.shape[1])
    sa, sb = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    sa, sb = np.atleast_2d(sa), np.atleast_2d(sb)
    cross = scipy.linalg.sqrtm(sa @ sb)
    diff = a.mean(0) - b.mean(0)
    return float(max(diff @ diff + np.trace(sa + sb - 2.0 * np.real(cross)), 0.0))


class FidelitySpace(NamedTuple):
    """Fixed descriptor space: z-scoring and principal axes of the pooled real reference tiles."""

    mean: np.ndarray
    std: np.ndarray
    axes: np.ndarray  # [D, dims]


def fit_space(feats: np.ndarray, dims: int) -> FidelitySpace:
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    return FidelitySpace(mean, std, vt[: min(dims, vt.shape[0])].T)


def project(space: FidelitySpace, feats: np.ndarray) -> np.ndarray:
    return ((feats - space.mean) / space.std) @ space.axes


def describe_all(feat_fn: Callable, images: np.ndarray) -> dict:
    """Descriptors of any number of tiles in batches of 16 (one compilation): {group: [N, D_g]}. The last
    batch is padded with copies of its first tile, whose descriptors are dropped."""
    feats = map_in_batches(
        lambda x: feat_fn(jnp.asarray(x)), [np.asarray(images, np.float32)], 16, pad="first"
    )
    return {g: feats[g] for g in GROUPS}


def boundary_contrast(images: np.ndarray, labels: np.ndarray, interior_px: int = 3) -> np.ndarray:
    """Per tile: mean luminance on labelled boundary pixels minus mean luminance of pixels >= interior_px
    from any boundary. > 0: bright boundaries (dark field), < 0: dark grooves (bright field)."""
    luma = np.asarray(images, np.float32) @ _LUMA
    dist = np.asarray(jax.vmap(lambda l: distance_bins(l, interior_px))(jnp.asarray(labels)))
    on, far = dist == 0, dist >= interior_px
    mean = lambda m: np.sum(luma * m, axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1)
    return mean(on) - mean(far)


def border_ratio(images: np.ndarray, frame_px: int = 2) -> np.ndarray:
    """Per tile: high-frequency energy (|x - 3x3 box mean|, reflect borders) and colour saturation in the
    outer ``frame_px`` frame over the same in the interior. ~1 for real tiles; tile-border seams (zero
    padding in a conv net) push it up."""
    x = np.asarray(images, np.float32)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    box = sum(p[:, i : i + x.shape[1], j : j + x.shape[2]] for i in range(3) for j in range(3)) / 9.0
    energy = np.abs(x - box).mean(-1) + (x.max(-1) - x.min(-1))
    frame = np.zeros(x.shape[1:3], bool)
    frame[:frame_px], frame[-frame_px:], frame[:, :frame_px], frame[:, -frame_px:] = True, True, True, True
    return energy[:, frame].mean(-1) / np.maximum(energy[:, ~frame].mean(-1), 1e-6)


__all__ = [
    "POLARITY_MIN_CONTRAST",
    "GOAL_FIDELITY_RATIO",
    "frechet_distance",
    "FidelitySpace",
    "fit_space",
    "project",
    "describe_all",
    "boundary_contrast",
    "border_ratio",
]
