"""Embedded synthetic data: imaging "labs", each a client with its own microstructures and imaging style.

A lab couples a microstructure generator and grain-size range (what material the lab studies) with an
imaging style (how it images it, see ``styles``).  Both differ between labs, so federated clients are
non-IID in appearance *and* in grain statistics, as real collaborating labs are.

Determinism contract: image ``i`` of lab ``L`` depends only on ``(seed, L, i)``; its generator is
``np.random.default_rng([seed, lab_index, i])``, so asking for more images never changes earlier ones.
Potts labs grow their microstructures in batches, which is safe because the batched growth is
bit-identical per image (``microstructure.potts_grow``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedtransfer_jax.data import styles
from fedtransfer_jax.data.microstructure import (
    boundary_map,
    generate_microstructure,
    potts_grow,
    potts_start,
    merge_small_grains,
    MIN_GRAIN_AREA,
)

__all__ = [
    "LAB_NAMES",
    "LabSpec",
    "LABS",
    "describe_lab",
    "generate_microstructure",
    "make_lab_examples",
    "register_lab",
    "unregister_lab",
]


@dataclasses.dataclass(frozen=True)
class LabSpec:
    """What one lab studies and how it images it.

    ``diameter_px`` is the range of the per-image target mean equivalent grain diameter in px (the
    lab's magnification x material); it is capped at ``size / MIN_GRAINS_ACROSS`` so tiny test images
    still hold several grains.  ``dispersion`` and ``warp`` are per-image ranges too.
    """

    name: str
    style: str
    method: str
    diameter_px: tuple[float, float]
    dispersion: tuple[float, float] = (0.0, 0.0)
    warp: tuple[float, float] = (0.0, 0.0)


MIN_GRAINS_ACROSS = 3.5

LABS: dict[str, LabSpec] = {
    spec.name: spec
    for spec in (
        LabSpec("brightfield", "brightfield", "voronoi", (17.0, 25.0), warp=(0.08, 0.14)),
        LabSpec("darkfield", "darkfield", "laguerre", (13.0, 19.0), dispersion=(0.3, 0.6), warp=(0.06, 0.12)),
        LabSpec("sem", "sem", "potts", (9.0, 13.0)),
        LabSpec("tint", "tint", "laguerre", (20.0, 30.0), dispersion=(0.2, 0.45), warp=(0.1, 0.16)),
        LabSpec("lowcontrast", "lowcontrast", "potts", (13.0, 18.0), dispersion=(0.0, 0.3)),
    )
}
LAB_NAMES: tuple[str, ...] = tuple(LABS)


def register_lab(spec: LabSpec) -> None:
    """Adds a lab (its imaging style must be registered first, ``styles.register_style``). Labs keep their
    registration order: a lab's index seeds its images, so a new lab never changes an existing one's data."""
    global LAB_NAMES
    if spec.name in LABS:
        raise ValueError(f"lab {spec.name!r} is already registered")
    styles._check_style(spec.style)
    LABS[spec.name] = spec
    LAB_NAMES = tuple(LABS)


def unregister_lab(name: str) -> None:
    global LAB_NAMES
    del LABS[name]
    LAB_NAMES = tuple(LABS)


def _lab(name: str) -> tuple[int, LabSpec]:
    if name not in LABS:
        raise ValueError(f"unknown lab {name!r}; valid labs: {', '.join(LAB_NAMES)}")
    return LAB_NAMES.index(name), LABS[name]


def describe_lab(name: str) -> dict:
    """The lab's identity: generator, grain-size/dispersion/warp ranges and imaging-parameter ranges."""
    _, spec = _lab(name)
    return {
        "name": spec.name,
        "style": spec.style,
        "method": spec.method,
        "diameter_px": spec.diameter_px,
        "dispersion": spec.dispersion,
        "warp": spec.warp,
        "style_params": dict(styles.STYLE_RANGES[spec.style]),
    }


def _sample_grain_params(
    rng: np.random.Generator, spec: LabSpec, size: int, diameter_px: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    if diameter_px:  # log-uniform: as many images per octave of grain size at 8 px as at 200 px
        d = float(np.exp(rng.uniform(np.log(diameter_px[0]), np.log(diameter_px[1]))))
    else:
        d = rng.uniform(*spec.diameter_px)
    d = min(d, size / MIN_GRAINS_ACROSS)
    return float(d), float(rng.uniform(*spec.dispersion)), float(rng.uniform(*spec.warp))


def check_scale_options(diameter_px, boundary_width: int, boundary_width_max: int) -> tuple[float, float] | None:
    """The validated grain-diameter override ``(lo, hi)`` (None: each lab's own range)."""
    if boundary_width < 1:
        raise ValueError(f"data.boundary_width must be >= 1 px, got {boundary_width}")
    if boundary_width_max and boundary_width_max < boundary_width:
        raise ValueError(
            f"data.boundary_width_max ({boundary_width_max}) must be 0 (fixed width) or >= data.boundary_width "
            f"({boundary_width})"
        )
    if diameter_px is None or len(diameter_px) == 0:
        return None
    if len(diameter_px) != 2 or not 2.0 <= float(diameter_px[0]) <= float(diameter_px[1]):
        raise ValueError(f"data.grain_diameter_px must be () or (lo, hi) with 2 <= lo <= hi px, got {tuple(diameter_px)}")
    return float(diameter_px[0]), float(diameter_px[1])


def make_lab_examples(
    lab: str,
    n: int,
    size: int,
    seed: int,
    *,
    boundary_width: int = 2,
    diameter_px: tuple[float, float] | None = None,
    boundary_width_max: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` synthetic micrographs of ``lab``: images f32 ``[n,S,S,3]``, labels u8 ``[n,S,S]``, grains i32.

    Per image: draw grain parameters, build the grain map, apply instrument distortions to it, render,
    and take the exact boundary label from the final map.  All draws come from that image's own
    generator, in that order.

    Scale-robust data (a model for micrographs at any magnification): ``diameter_px=(lo, hi)`` draws every
    image's mean grain diameter log-uniformly in [lo, hi] px for every lab (instead of the lab's own range;
    still capped at ``size / MIN_GRAINS_ACROSS``); ``boundary_width_max > boundary_width`` draws each
    image's label line width uniformly in [boundary_width, boundary_width_max] px, as hand annotations
    vary (the draw comes after rendering, so the images are those of a fixed width; the tfds builder uses it
    for training labels only).  Without them the
    draws, and so the data, are exactly those of before the options existed.
    """
    lab_index, spec = _lab(lab)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 8:
        raise ValueError(f"size must be >= 8 px, got {size}")
    diameter_px = check_scale_options(diameter_px, boundary_width, boundary_width_max)
    rngs = [np.random.default_rng([seed, lab_index, i]) for i in range(n)]
    gparams = [_sample_grain_params(r, spec, size, diameter_px) for r in rngs]

    if spec.method == "potts":
        starts = [potts_start(r, size, d, disp) for r, (d, disp, _) in zip(rngs, gparams)]
        grown = potts_grow([s for s, _ in starts], [k for _, k in starts], [d for d, _, _ in gparams])
        grain_maps = [merge_small_grains(g, MIN_GRAIN_AREA) for g in grown]
    else:
        grain_maps = [
            generate_microstructure(
                r, size, method=spec.method, mean_grain_diameter_px=d, dispersion=disp, warp=warp
            )
            for r, (d, disp, warp) in zip(rngs, gparams)
        ]

    images = np.zeros((n, size, size, 3), np.float32)
    labels = np.zeros((n, size, size), np.uint8)
    grains_out = np.zeros((n, size, size), np.int32)
    for i, (r, g) in enumerate(zip(rngs, grain_maps)):
        params = styles.sample_style_params(spec.style, r)
        g = styles.distort_grains(spec.style, r, g, params)
        grains_out[i] = g
        images[i] = styles.render(spec.style, r, g, params)
        width = boundary_width
        if boundary_width_max > boundary_width:
            width = int(r.integers(boundary_width, boundary_width_max + 1))
        labels[i] = boundary_map(g, width)
    return images, labels, grains_out
