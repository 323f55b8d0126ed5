"""TEM bright-field diffraction contrast of a thin metal foil with annealing twins.

In bright field the objective aperture passes only the transmitted beam, so a grain is dark when it
diffracts strongly.  In the two-beam dynamical theory (Hirsch et al., *Electron Microscopy of Thin
Crystals*, ch. 4; Williams & Carter ch. 23) without absorption the diffracted intensity of a crystal of
thickness ``t`` at excitation error ``s`` of a reflection with extinction distance ``xi`` is

    I_g = sin^2(pi t s_eff) / (xi s_eff)^2,     s_eff = sqrt(s^2 + 1 / xi^2),     I_BF = 1 - I_g

(for large ``s`` this is the kinematical ``sin^2(pi t s) / (xi s)^2``).  Lengths here are in units of
``xi``, so ``w = xi s_eff = sqrt((xi s)^2 + 1)`` (``bright_field``).  Per image:

* **grain contrast**: each grain has its own excitation error (its orientation relative to the beam) and
  its own extinction-distance factor (which reflection is excited); most grains are off Bragg (bright),
  a few near it (dark).  Grey level is therefore not a smooth function of any 'tone': it oscillates with
  ``s`` and ``t``;
* **bend contours**: the foil is bent, so ``s`` varies smoothly across it (a smooth field times a per-grain
  coefficient, the projection of the bending rotation on that grain's ``g``); where ``s`` sweeps through
  zero a dark curved band crosses the grain and stops at its boundary;
* **thickness fringes**: boundaries are inclined to the beam, so over a band of ``incline_px`` (the
  projected width) the beam goes through a wedge of one grain on top of a wedge of the other: own
  thickness ``t u``, other ``t (1 - u)``, ``u`` running 0 -> 1 across the band, and the transmitted
  intensities multiply.  ``I_g`` oscillates with thickness, so the band shows fringes parallel to the
  boundary; at the boundary itself there is no line, only the two wedges' product;
* a thickness wedge across the field (electropolished foil), mean absorption ``exp(-mu t)``, detector
  blur and electron shot noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fedtransfer_jax.data import styles
from fedtransfer_jax.data.microstructure import smooth_field
from fedtransfer_jax.data.synthetic import LabSpec

RANGES = {
    "thickness": (1.2, 2.2),  # foil thickness in extinction distances (t / xi)
    "s_spread": (0.8, 2.0),  # std of the grains' excitation errors, xi * s
    "bend": (0.5, 1.8),  # std of the bending term of xi * s per grain
    "wedge": (0.0, 0.3),  # relative thickness change across the field
    "incline_px": (3.0, 8.0),  # projected width of an inclined boundary (px)
    "absorption": (0.05, 0.2),  # mean absorption per extinction distance (xi / Lambda)
    "gain": (0.75, 0.95),
    "offset": (0.0, 0.08),
    "dose": (80.0, 300.0),  # electrons per pixel at intensity 1
    "blur": (0.3, 0.8),
}


def bright_field(xi_s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Two-beam bright-field intensity ``1 - sin^2(pi t w) / w^2``, ``w = sqrt((xi s)^2 + 1)`` (t in xi)."""
    w = np.sqrt(np.square(xi_s) + 1.0)
    return 1.0 - np.square(np.sin(np.pi * t * w)) / np.square(w)


def neighbour_across(grains: np.ndarray) -> np.ndarray:
    """For each pixel with a 4-neighbour of another grain, that neighbour's id (else its own id)."""
    other = grains.copy()
    padded = np.pad(grains, 1, mode="edge")
    h, w = grains.shape
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        take = (nb != grains) & (other == grains)
        other = np.where(take, nb, other)
    return other


def render(rng: np.random.Generator, grains: np.ndarray, params: dict) -> np.ndarray:
    h, w = grains.shape
    n = int(grains.max()) + 1
    s_grain = params["s_spread"] * rng.standard_normal(n)  # xi * s of each grain's excited reflection
    xi_factor = rng.uniform(0.7, 1.5, n)  # reflections differ in extinction distance
    bend_coef = params["bend"] * rng.standard_normal(n)
    bending = smooth_field(rng, (h, w), max(h, w) / 3.0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    ang = rng.uniform(0, 2 * np.pi)
    t = params["thickness"] * (1.0 + 0.5 * params["wedge"] * (np.cos(ang) * xx + np.sin(ang) * yy))

    def transmitted(ids: np.ndarray, thickness: np.ndarray) -> np.ndarray:
        xi_s = s_grain[ids] + bend_coef[ids] * bending
        # In units of this reflection's xi: xi s scales with xi, t / xi with 1 / xi.
        return bright_field(xi_s * xi_factor[ids], thickness / xi_factor[ids])

    dist, (iy, ix) = styles.interface_distance(grains)
    other = neighbour_across(grains)[iy, ix]
    width = params["incline_px"] * np.exp(0.35 * smooth_field(rng, (h, w), 10.0))[iy, ix]
    u = np.clip(0.5 + dist / width, 0.0, 1.0)  # fraction of the foil thickness in this pixel's own grain
    img = transmitted(grains, t * u) * transmitted(other, t * (1.0 - u))
    img = img * np.exp(-params["absorption"] * t)
    img = params["offset"] + params["gain"] * img
    img = ndimage.gaussian_filter(img, params["blur"])
    img = rng.poisson(np.clip(img, 0.0, None) * params["dose"]) / params["dose"]
    return np.repeat(np.clip(img, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


SPEC = LabSpec(
    "tem_brightfield", style="tem_brightfield", method="twinned", diameter_px=(14.0, 22.0),
    dispersion=(0.1, 0.3), warp=(0.05, 0.1),
)
