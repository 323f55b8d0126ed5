"""Secondary-electron SEM image of a thermally etched ceramic (alumina after abnormal grain growth), pores.

Thermal etching (annealing a polished ceramic ~100-200 K below its sintering temperature) lets surface
diffusion dig a groove where each grain boundary meets the surface (Mullins 1957): a trough with a small
hump either side.  The SE yield rises with the local surface tilt (``delta ~ 1 / cos(theta)``, the edge
effect) and surfaces facing the side-mounted Everhart-Thornley detector look brighter (shadowing), so:

* **bright** boundaries -- the groove walls are steep -- the opposite polarity to an etched metal in optical
  bright field; their brightness depends on the boundary's orientation relative to the detector (one wall
  faces it, one faces away), so the profile is not the same all around a grain;
* groove depth varies from boundary to boundary (boundary energy), a weak per-grain level (residual
  channelling and facet roughness);
* **pores** (sintering porosity): round voids, half of them pinned at triple junctions, half trapped inside
  the grains that grew abnormally fast.  A pore's floor emits few electrons that escape (dark), its rim is
  an edge (bright).  Pores are not grains and are **not labelled**: the labels stay the grain map's
  boundaries, and a pore at a triple junction is only a dark blob on the labelled boundary pixels;
* charging of the insulator (line-to-line gain drift, streaks trailing bright features), shot noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fedtransfer_jax.data import styles
from fedtransfer_jax.data.microstructure import smooth_field
from fedtransfer_jax.data.synthetic import LabSpec

RANGES = {
    "groove_depth": (1.5, 3.0),  # groove depth in px of height (surface units = px)
    "groove_width": (0.9, 1.8),  # groove half-width in px
    "edge_gain": (1.0, 2.5),  # strength of the edge effect, (sec(theta) - 1) multiplier
    "shadowing": (0.1, 0.35),  # detector-side asymmetry per unit slope
    "base_level": (0.25, 0.4),  # SE yield of a flat surface
    "grain_contrast": (0.0, 0.05),
    "pore_density": (1.0, 5.0),  # pores per 64 x 64 px
    "line_noise": (0.01, 0.04),
    "n_streaks": (0, 4),
    "dose": (150.0, 400.0),
    "blur": (0.4, 0.9),
}


def groove_height(dist: np.ndarray, depth: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Mullins-like groove: a Gaussian trough of ``depth`` plus humps of 15 % of it at ~2 widths."""
    x = dist / width
    return depth * (-np.exp(-(x**2)) + 0.15 * np.exp(-((x - 2.0) ** 2)))


def triple_junctions(grains: np.ndarray) -> np.ndarray:
    """``[n, 2]`` (y, x) of pixel corners where three or more grains meet (2x2 windows with >= 3 ids)."""
    a, b, c, d = grains[:-1, :-1], grains[:-1, 1:], grains[1:, :-1], grains[1:, 1:]
    distinct = 1 + (b != a) + ((c != a) & (c != b)) + ((d != a) & (d != b) & (d != c))
    return np.argwhere(distinct >= 3).astype(np.float64) + 0.5


def render(rng: np.random.Generator, grains: np.ndarray, params: dict) -> np.ndarray:
    h, w = grains.shape
    n = int(grains.max()) + 1
    dist, (iy, ix) = styles.interface_distance(grains)
    depth = params["groove_depth"] * np.exp(0.4 * smooth_field(rng, (h, w), 8.0))[iy, ix]
    height = groove_height(dist, depth, params["groove_width"])
    gy, gx = np.gradient(height)
    det = rng.uniform(0, 2 * np.pi)  # azimuth of the Everhart-Thornley detector
    secant = np.sqrt(1.0 + gy**2 + gx**2)
    level = params["base_level"] + params["grain_contrast"] * rng.standard_normal(n)[grains]
    facing = np.cos(det) * gx + np.sin(det) * gy  # slope towards the detector
    img = level * (1.0 + params["edge_gain"] * (secant - 1.0) + params["shadowing"] * facing)

    # Pores: dark floor, bright rim; at triple junctions and inside grains.
    n_pores = int(rng.poisson(params["pore_density"] * h * w / 4096.0))
    tj = triple_junctions(grains)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    for _ in range(n_pores):
        at_junction, u, cy, cx = rng.uniform(size=4)
        if at_junction < 0.5 and len(tj):
            cy, cx = tj[int(u * len(tj))]
        else:
            cy, cx = cy * h, cx * w
        r = rng.uniform(1.0, 2.5)
        rho = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        img = np.where(rho < r, img * 0.15, img + 0.25 * np.exp(-(((rho - r) / 0.5) ** 2)))
    img = ndimage.gaussian_filter(img, params["blur"])
    # Charging: bright streaks trailing along a few scan lines, line-to-line gain drift.
    cols = np.arange(w, dtype=np.float64)
    for _ in range(int(params["n_streaks"])):
        y0, x0 = int(rng.integers(0, h)), rng.uniform(0, w)
        amp, decay = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.5) * w
        img[y0] += amp * np.where(cols >= x0, np.exp(-(cols - x0) / decay), 0.0)
    img = img * (1.0 + params["line_noise"] * rng.standard_normal((h, 1)))
    img = rng.poisson(np.clip(img, 0.0, None) * params["dose"]) / params["dose"]
    return np.repeat(np.clip(img, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


SPEC = LabSpec(
    "ceramic_sem", style="ceramic_sem", method="bimodal", diameter_px=(9.0, 14.0), dispersion=(0.1, 0.3),
    warp=(0.05, 0.1),
)
