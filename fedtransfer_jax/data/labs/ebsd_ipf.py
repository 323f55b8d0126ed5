"""EBSD inverse-pole-figure (IPF-Z) map of an annealed FCC metal with annealing twins.

An EBSD map is not a picture of the surface: at each point of a square grid (the step) the Kikuchi pattern
is indexed to a crystal orientation, and the map shows a colour computed from that orientation.  Here:

* every grain is one random orientation (a uniform random rotation, from a unit quaternion); the crystal
  direction parallel to the sample normal Z is folded into the cubic standard triangle and coloured by the
  usual IPF key: red <001>, green <101>, blue <111> (``ipf_colour``).  A small orientation spread inside a
  grain (recovery, ~0.5 deg) gives a faint colour drift; there is **no boundary line** and no shading:
  neighbouring grains differ only by their colours;
* the map is acquired on a coarser grid (``step`` px) and displayed nearest-neighbour, so the grain map
  itself is blocky: ``distort`` resamples it on the step grid (the labels follow the blocky map);
* indexing noise: a fraction of grid points is mis-indexed (a random orientation's colour) or not indexed
  at all (black, the zero solution), more often within a step or two of a boundary, where the beam
  excites both grains and the overlapping patterns confuse the indexing.  Noise is per grid point, i.e.
  blocks of ``step`` px.

Nothing in this is a grain tone plus a signed boundary profile plus shading: the boundary exists only as a
colour step, the colours live on the IPF key (a 2-D surface in RGB, not a Gaussian), and the noise is
replacement noise on blocks, not additive.
"""

from __future__ import annotations

import numpy as np

from fedtransfer_jax.data import styles
from fedtransfer_jax.data.microstructure import MIN_GRAIN_AREA, merge_small_grains, smooth_field
from fedtransfer_jax.data.synthetic import LabSpec

RANGES = {
    "n_step": (1, 2),  # EBSD step in px (the map is shown nearest-neighbour at the display resolution)
    "misindexed": (0.005, 0.03),  # fraction of grid points in grain interiors indexed as a wrong orientation
    "boundary_misindexed": (0.1, 0.35),  # extra probability within ~1 step of a boundary (pattern overlap)
    "unindexed": (0.0, 0.02),  # fraction of zero solutions (black points)
    "spread": (0.0, 0.03),  # intra-grain colour drift from orientation spread
}


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly random rotation matrices ``[n, 3, 3]`` (normalised Gaussian quaternions)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def ipf_colour(directions: np.ndarray) -> np.ndarray:
    """IPF colour key of crystal directions ``[n, 3]`` (cubic m-3m): red <001>, green <101>, blue <111>.

    Symmetry folds a direction into the standard triangle by sorting its absolute components
    ``h <= k <= l``; the colour is ``(l - k, k - h, h)`` (the barycentric weights of the triangle's corners
    [001], [101], [111]) scaled so that its largest channel is 1.
    """
    v = np.asarray(directions, np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    h, k, l = np.moveaxis(np.sort(np.abs(v), axis=-1), -1, 0)
    rgb = np.stack([l - k, k - h, h], axis=-1)
    return rgb / np.max(rgb, axis=-1, keepdims=True)


def distort(rng: np.random.Generator, grains: np.ndarray, params: dict) -> np.ndarray:
    """Acquisition on a ``step``-px grid shown nearest-neighbour: the grain map becomes blocky."""
    del rng
    step = int(params["n_step"])
    if step <= 1:
        return grains
    h, w = grains.shape
    iy = (np.arange(h) // step) * step + step // 2
    ix = (np.arange(w) // step) * step + step // 2
    return merge_small_grains(grains[np.minimum(iy, h - 1)][:, np.minimum(ix, w - 1)], MIN_GRAIN_AREA)


def render(rng: np.random.Generator, grains: np.ndarray, params: dict) -> np.ndarray:
    h, w = grains.shape
    n = int(grains.max()) + 1
    z_in_crystal = random_rotations(rng, n)[:, 2, :]  # sample Z in each grain's crystal frame (row 3 of g)
    rgb = ipf_colour(z_in_crystal)[grains]
    rgb = rgb * (1.0 + params["spread"] * smooth_field(rng, (h, w), 8.0)[..., None])
    # Indexing per grid point: pattern overlap near boundaries, random failures elsewhere.
    step = int(params["n_step"])
    gh, gw = -(-h // step), -(-w // step)
    dist, _ = styles.interface_distance(grains)
    centre = lambda m, size: np.minimum(np.arange(m) * step + step // 2, size - 1)  # grid points' pixels
    dist_grid = dist[centre(gh, h)][:, centre(gw, w)]
    overlap = np.exp(-((dist_grid / max(step, 1.0)) ** 2))
    p_wrong = params["misindexed"] + params["boundary_misindexed"] * overlap
    u = rng.uniform(size=(gh, gw))
    wrong = u < p_wrong
    black = (u >= p_wrong) & (u < p_wrong + params["unindexed"])
    wrong_rgb = ipf_colour(random_rotations(rng, gh * gw)[:, 2, :]).reshape(gh, gw, 3)
    up = lambda a: np.repeat(np.repeat(a, step, axis=0), step, axis=1)[:h, :w]
    rgb = np.where(up(wrong)[..., None], up(wrong_rgb), rgb)
    rgb = np.where(up(black)[..., None], 0.0, rgb)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


SPEC = LabSpec(
    "ebsd_ipf", style="ebsd_ipf", method="twinned", diameter_px=(16.0, 26.0), dispersion=(0.2, 0.4),
    warp=(0.06, 0.12),
)
