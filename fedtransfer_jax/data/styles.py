"""Imaging styles: render a grain map as the micrograph one imaging technique would record.

Each style is a small physical model with per-image random parameters drawn from style-specific
ranges (``STYLE_RANGES``); the ranges are a lab's identity, which is what makes the federated data
non-IID.  Every renderer returns float32 ``[H, W, 3]`` in ``[0, 1]`` (grey styles replicate the channel)
and never moves grain boundaries, so the labels computed from the grain map stay exact.  A style that
really does distort geometry (SEM scan-line jitter) does so on the *grain map* in ``distort_grains``,
before the labels are computed.

Physics shared by the optical styles:

* Grain contrast comes from crystal orientation.  For a random orientation the sample normal expressed
  in the crystal frame is uniform on the sphere; its sorted absolute components say how close the
  surface is to {100} or {111}, which sets etch-facet reflectance, channelling yield or tint-film
  thickness.
* Boundaries etch into grooves whose depth grows with misorientation (low-angle boundaries etch
  faintly) and with a smooth "etch completeness" field: where the etch was weak a boundary segment is
  faint or missing in the image while the label still marks it, as in real annotated data.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from fedtransfer_jax.data.microstructure import merge_small_grains, smooth_field, MIN_GRAIN_AREA

Params = dict[str, float]

# Per-image parameter ranges (uniform) of every style.  Keys are documented in the renderers.
STYLE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "brightfield": {
        "grain_level": (0.68, 0.80),  # mean grey of etched grains
        "grain_contrast": (0.06, 0.16),  # orientation-dependent reflectance spread
        "groove_depth": (0.45, 0.75),  # darkening at a fully etched high-angle boundary
        "groove_width": (0.7, 1.3),  # Gaussian sigma of the groove profile (px)
        "etch_missing": (0.05, 0.25),  # fraction of boundary length left faint/missing
        "n_scratches": (0, 6),
        "scratch_depth": (0.04, 0.12),
        "pit_density": (0.5, 3.0),  # pits per 64x64 px
        "n_dust": (0, 3),
        "illumination": (0.05, 0.2),  # peak-to-peak illumination gradient
        "blur": (0.3, 0.9),  # defocus, Gaussian sigma (px)
        "noise": (0.008, 0.025),  # sensor noise sigma
        "warmth": (0.0, 0.08),  # halogen lamp colour cast (blue attenuation)
    },
    "darkfield": {
        "background": (0.04, 0.12),
        "grain_contrast": (0.02, 0.06),
        "boundary_brightness": (0.5, 0.85),
        "groove_width": (0.7, 1.2),
        "etch_missing": (0.05, 0.2),
        "n_scratches": (0, 5),
        "scratch_depth": (0.1, 0.3),  # scratches scatter light: bright lines
        "pit_density": (0.5, 2.5),
        "n_dust": (0, 0),
        "illumination": (0.05, 0.15),
        "blur": (0.4, 1.0),
        "noise": (0.01, 0.03),
    },
    "sem": {
        "level_low": (0.12, 0.25),  # channelling yield of the darkest orientation
        "level_high": (0.65, 0.85),  # ... and of the brightest
        "edge_depth": (0.05, 0.2),  # weak dark line at boundaries (lattice distortion)
        "dose": (60.0, 200.0),  # electrons per pixel at intensity 1 (shot noise)
        "n_streaks": (1, 6),  # charging streaks
        "streak_amp": (0.15, 0.4),
        "jitter": (0.3, 0.9),  # scan-line jitter sigma (px), applied to the grain map
        "line_noise": (0.01, 0.04),  # per-scan-line gain noise
        "blur": (0.4, 0.8),  # probe size
    },
    "tint": {
        "hue_offset": (0.0, 1.0),  # which interference colours the etchant produces
        "hue_spread": (0.25, 0.45),
        "saturation": (0.25, 0.5),
        "value_low": (0.35, 0.5),
        "value_high": (0.75, 0.9),
        "film_variation": (0.004, 0.015),  # intra-grain film-thickness (hue) variation
        "pit_density": (0.0, 1.0),
        "illumination": (0.03, 0.1),
        "blur": (0.4, 0.8),
        "noise": (0.005, 0.015),
    },
    "lowcontrast": {
        "grain_level": (0.45, 0.6),
        "grain_contrast": (0.03, 0.08),
        "groove_depth": (0.15, 0.3),
        "groove_width": (1.2, 2.0),
        "etch_missing": (0.1, 0.35),
        "illumination": (0.3, 0.5),
        "blur": (1.4, 2.2),
        "noise": (0.01, 0.03),
    },
}
STYLES: tuple[str, ...] = tuple(STYLE_RANGES)


def _check_style(style: str) -> None:
    if style not in STYLE_RANGES:
        raise ValueError(f"unknown imaging style {style!r}; valid: {', '.join(STYLES)}")


def sample_style_params(
    style: str, rng: np.random.Generator, ranges: dict[str, tuple[float, float]] | None = None
) -> Params:
    """Draw one image's parameters uniformly from the style's ranges (``n_*`` keys are integers).

    ``ranges`` (optional) narrows them: a sub-range per key inside ``STYLE_RANGES[style]`` (one simulated
    microscope of ``data/population.py``); keys it lacks keep the style's full range, in the same order, so
    the draws consume the generator exactly as the full ranges do."""
    _check_style(style)
    out: Params = {}
    for key, (lo, hi) in STYLE_RANGES[style].items():
        if ranges is not None and key in ranges:
            lo, hi = ranges[key]
        if key.startswith("n_"):
            out[key] = float(rng.integers(int(lo), int(hi) + 1))
        else:
            out[key] = float(rng.uniform(lo, hi))
    return out


# ----------------------------------------------------------------------------------------------
# Shared physics
# ----------------------------------------------------------------------------------------------


def orientation_features(rng: np.random.Generator, n_grains: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-grain ``(f100, f111)`` in [0, 1]: closeness of the surface normal to <100> and <111>.

    The normal in the crystal frame of a uniformly random orientation is uniform on the sphere; cubic
    symmetry folds it into the standard triangle by sorting absolute components (a1 >= a2 >= a3).
    """
    v = rng.standard_normal((n_grains, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    a = np.sort(np.abs(v), axis=1)[:, ::-1]
    inv_sqrt3 = 1.0 / np.sqrt(3.0)
    f100 = (a[:, 0] - inv_sqrt3) / (1.0 - inv_sqrt3)
    f111 = a[:, 2] * np.sqrt(3.0)
    return f100.astype(np.float32), f111.astype(np.float32)


def interface_band(grains: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another grain (both sides of every boundary)."""
    band = np.zeros(grains.shape, bool)
    dx = grains[:, :-1] != grains[:, 1:]
    dy = grains[:-1, :] != grains[1:, :]
    band[:, :-1] |= dx
    band[:, 1:] |= dx
    band[:-1, :] |= dy
    band[1:, :] |= dy
    return band


def interface_distance(grains: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Distance (px) from each pixel centre to the nearest boundary, and that boundary pixel's index.

    The boundary runs between the centres of the band pixels, hence the +0.5.  The indices let
    per-boundary attributes (depth, width) be spread onto the groove profile around each boundary.
    """
    band = interface_band(grains)
    if not band.any():  # a single grain: no boundary anywhere
        h, w = grains.shape
        iy, ix = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        return np.full(grains.shape, np.inf, np.float32), (iy, ix)
    dist, (iy, ix) = ndimage.distance_transform_edt(~band, return_indices=True)
    return (dist + 0.5).astype(np.float32), (iy, ix)


def boundary_strength(
    rng: np.random.Generator, grains: np.ndarray, feature: np.ndarray, missing_fraction: float
) -> np.ndarray:
    """Per-pixel etch strength in [0, 1] of the boundary nearest each band pixel.

    Strength = misorientation term (feature jump across the boundary, from a 3x3 max-min filter of the
    per-pixel orientation feature) x etch completeness (a smooth random field thresholded so that
    ~``missing_fraction`` of the image area, hence of the boundary length, is barely etched).
    """
    fmap = feature[grains]
    jump = ndimage.maximum_filter(fmap, size=3) - ndimage.minimum_filter(fmap, size=3)
    mis = np.clip(0.35 + 2.0 * jump, 0.0, 1.0)
    corr = max(grains.shape) / 4.0
    field = smooth_field(rng, grains.shape, corr)
    thresh = np.quantile(field, missing_fraction)
    etch = 1.0 / (1.0 + np.exp(-(field - thresh) * 6.0))
    return (mis * (0.08 + 0.92 * etch)).astype(np.float32)


def groove_profile(
    rng: np.random.Generator, grains: np.ndarray, strength: np.ndarray, width: float
) -> np.ndarray:
    """Groove amplitude map: ``strength_b * exp(-(d / sigma_b)^2)`` around each boundary b.

    The width ``sigma_b`` wanders along the boundaries (smooth field) so grooves are not uniform.
    """
    dist, (iy, ix) = interface_distance(grains)
    sigma = width * np.exp(0.3 * smooth_field(rng, grains.shape, 12.0))
    s = strength[iy, ix]
    sig = sigma[iy, ix]
    return (s * np.exp(-((dist / sig) ** 2))).astype(np.float32)


def scratches(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """Polishing scratches: ``n`` thin straight segments (mostly one direction), profile in [0, 1]."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    if n <= 0:
        return out
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    main = rng.uniform(0, np.pi)
    for _ in range(n):
        ang = main + rng.normal(0, 0.15)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        half = rng.uniform(0.3, 1.0) * max(h, w)
        dy, dx = np.sin(ang), np.cos(ang)
        t = (yy - cy) * dy + (xx - cx) * dx
        perp = np.abs(-(yy - cy) * dx + (xx - cx) * dy)
        along = np.clip(1.0 - np.maximum(np.abs(t) - half, 0.0) / 2.0, 0.0, 1.0)
        sig = rng.uniform(0.4, 0.9)
        out = np.maximum(out, rng.uniform(0.5, 1.0) * along * np.exp(-((perp / sig) ** 2)))
    return out


def blobs(
    rng: np.random.Generator, shape: tuple[int, int], n: int, radius: tuple[float, float]
) -> np.ndarray:
    """``n`` Gaussian spots (pits, inclusions, dust) of random radius and strength, max-combined."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    if n <= 0:
        return out
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(*radius)
        out = np.maximum(
            out, rng.uniform(0.6, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        )
    return out


def illumination(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """Multiplicative illumination: a linear ramp in a random direction plus off-centre vignetting."""
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    ang = rng.uniform(0, 2 * np.pi)
    ramp = 0.5 * (np.cos(ang) * xx + np.sin(ang) * yy)
    cy, cx = rng.uniform(-0.5, 0.5, size=2)
    vignette = -0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0
    field = ramp + vignette
    field = (field - field.max()) / max(field.max() - field.min(), 1e-6)  # in [-1, 0]
    return (1.0 + strength * field).astype(np.float32)


def _pit_count(rng: np.random.Generator, shape: tuple[int, int], density: float) -> int:
    return int(rng.poisson(density * shape[0] * shape[1] / 4096.0))


def _grey_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(img, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Renderers
# ----------------------------------------------------------------------------------------------


def render_brightfield(rng: np.random.Generator, grains: np.ndarray, p: Params) -> np.ndarray:
    """Optical bright field after nital etch: light grains, dark grooves, scratches, pits, dust."""
    shape = grains.shape
    f100, _ = orientation_features(rng, int(grains.max()) + 1)
    tone = 0.7 * f100 + 0.3 * rng.uniform(size=f100.shape)
    img = (p["grain_level"] + p["grain_contrast"] * (tone - 0.5))[grains]
    img = img * (1.0 + 0.015 * smooth_field(rng, shape, 5.0))  # etch mottling inside grains
    strength = boundary_strength(rng, grains, f100, p["etch_missing"])
    img = img * (1.0 - p["groove_depth"] * groove_profile(rng, grains, strength, p["groove_width"]))
    img = img * (1.0 - p["scratch_depth"] * scratches(rng, shape, int(p["n_scratches"])))
    img = img * (1.0 - 0.55 * blobs(rng, shape, _pit_count(rng, shape, p["pit_density"]), (0.6, 1.6)))
    img = img * (1.0 - 0.12 * blobs(rng, shape, int(p["n_dust"]), (4.0, 10.0)))
    img = img * illumination(rng, shape, p["illumination"])
    img = ndimage.gaussian_filter(img, p["blur"])
    rgb = img[..., None] * np.array([1.0, 1.0 - 0.4 * p["warmth"], 1.0 - p["warmth"]], np.float32)
    rgb = rgb + p["noise"] * rng.standard_normal(rgb.shape).astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def render_darkfield(rng: np.random.Generator, grains: np.ndarray, p: Params) -> np.ndarray:
    """Optical dark field: grooves and scratches scatter light into the objective, flat grains do not."""
    shape = grains.shape
    f100, _ = orientation_features(rng, int(grains.max()) + 1)
    img = (p["background"] + p["grain_contrast"] * (f100 - 0.5))[grains]
    strength = boundary_strength(rng, grains, f100, p["etch_missing"])
    img = img + p["boundary_brightness"] * groove_profile(rng, grains, strength, p["groove_width"])
    img = img + p["scratch_depth"] * scratches(rng, shape, int(p["n_scratches"]))
    img = img + 0.6 * blobs(rng, shape, _pit_count(rng, shape, p["pit_density"]), (0.6, 1.4))
    img = img * illumination(rng, shape, p["illumination"])
    img = ndimage.gaussian_filter(img, p["blur"])
    img = img + p["noise"] * rng.standard_normal(shape).astype(np.float32)
    return _grey_rgb(img)


def distort_sem(rng: np.random.Generator, grains: np.ndarray, p: Params) -> np.ndarray:
    """Scan-line jitter: each scan line is displaced horizontally by a few px (beam/stage noise).

    Applied to the grain map so the image *and* its labels show the ragged, line-shifted boundaries.
    """
    h, w = grains.shape
    shifts = np.round(p["jitter"] * rng.standard_normal(h)).astype(np.int64)
    cols = np.clip(np.arange(w)[None, :] - shifts[:, None], 0, w - 1)
    return merge_small_grains(np.take_along_axis(grains, cols, axis=1), MIN_GRAIN_AREA)


def render_sem(rng: np.random.Generator, grains: np.ndarray, p: Params) -> np.ndarray:
    """SEM electron-channelling contrast: strong per-grain grey levels, shot noise, charging streaks."""
    h, w = grains.shape
    f100, f111 = orientation_features(rng, int(grains.max()) + 1)
    yield_ = np.clip(0.5 * f100 + 0.5 * (1.0 - f111) + 0.2 * rng.standard_normal(f100.shape), 0.0, 1.0)
    img = (p["level_low"] + (p["level_high"] - p["level_low"]) * yield_)[grains]
    img = img + 0.04 * smooth_field(rng, (h, w), max(h, w) / 6.0)  # bend contours: lattice curvature
    dist, _ = interface_distance(grains)
    img = img * (1.0 - p["edge_depth"] * np.exp(-((dist / 0.8) ** 2)))
    img = ndimage.gaussian_filter(img, p["blur"])
    # Charging: a bright offset appears at some x along a few scan lines and decays to the right.
    xx = np.arange(w, dtype=np.float32)
    for _ in range(int(p["n_streaks"])):
        y0 = int(rng.integers(0, h))
        rows = slice(y0, min(h, y0 + int(rng.integers(1, 4))))
        x0, decay = rng.uniform(0, w), rng.uniform(0.1, 0.6) * w
        img[rows] += (
            p["streak_amp"] * rng.uniform(0.5, 1.0) * np.where(xx >= x0, np.exp(-(xx - x0) / decay), 0.0)
        )
    img = img * (1.0 + p["line_noise"] * rng.standard_normal((h, 1)))
    img = rng.poisson(np.clip(img, 0.0, None) * p["dose"]) / p["dose"]
    return _grey_rgb(img)


def _hsv_to_rgb(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB ``[..., 3]`` (inputs in [0, 1]); colorsys's formula on arrays."""
    h6 = (hue % 1.0) * 6.0
    sector = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = val * (1 - sat)
    q = val * (1 - sat * f)
    t = val * (1 - sat * (1 - f))
    conds = [sector == k for k in range(6)]
    r = np.select(conds, [val, q, p, p, t, val])
    g = np.select(conds, [t, val, val, q, p, p])
    b = np.select(conds, [p, p, t, val, val, q])
    return np.stack([r, g, b], axis=-1)


def render_tint(rng: np.random.Generator, grains: np.ndarray, p: Params) -> np.ndarray:
    """Colour tint etch (Klemm/Beraha): an interference film whose thickness, hence colour, depends
    on grain orientation.  No groove: boundaries show only as a colour change."""
    shape = grains.shape
    f100, f111 = orientation_features(rng, int(grains.max()) + 1)
    thick = 0.65 * f100 + 0.35 * rng.uniform(size=f100.shape)
    hue = (p["hue_offset"] + p["hue_spread"] * thick)[grains] + p["film_variation"] * smooth_field(
        rng, shape, 20.0
    )
    sat = np.full(shape, p["saturation"], np.float32) * (0.8 + 0.4 * f111[grains])
    val = (p["value_low"] + (p["value_high"] - p["value_low"]) * (1.0 - 0.6 * thick))[grains]
    pits = blobs(rng, shape, _pit_count(rng, shape, p["pit_density"]), (0.6, 1.2))
    val = val * (1.0 - 0.5 * pits) * illumination(rng, shape, p["illumination"])
    rgb = _hsv_to_rgb(hue, np.clip(sat, 0, 1), np.clip(val, 0, 1)).astype(np.float32)
    rgb = ndimage.gaussian_filter(rgb, (p["blur"], p["blur"], 0.0))
    rgb = rgb + p["noise"] * rng.standard_normal(rgb.shape).astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def render_lowcontrast(rng: np.random.Generator, grains: np.ndarray, p: Params) -> np.ndarray:
    """Poor optical image: faint grooves, heavy defocus, strong uneven illumination, grey."""
    shape = grains.shape
    f100, _ = orientation_features(rng, int(grains.max()) + 1)
    img = (p["grain_level"] + p["grain_contrast"] * (f100 - 0.5))[grains]
    strength = boundary_strength(rng, grains, f100, p["etch_missing"])
    img = img * (1.0 - p["groove_depth"] * groove_profile(rng, grains, strength, p["groove_width"]))
    img = img * illumination(rng, shape, p["illumination"])
    img = ndimage.gaussian_filter(img, p["blur"])
    img = img + p["noise"] * rng.standard_normal(shape).astype(np.float32)
    return _grey_rgb(img)


Renderer = Callable[[np.random.Generator, np.ndarray, Params], np.ndarray]
RENDERERS: dict[str, Renderer] = {
    "brightfield": render_brightfield,
    "darkfield": render_darkfield,
    "sem": render_sem,
    "tint": render_tint,
    "lowcontrast": render_lowcontrast,
}
DISTORTIONS: dict[str, Callable[[np.random.Generator, np.ndarray, Params], np.ndarray]] = {"sem": distort_sem}


def register_style(
    name: str,
    ranges: dict[str, tuple[float, float]],
    render_fn: Renderer,
    distort_fn: Callable[[np.random.Generator, np.ndarray, Params], np.ndarray] | None = None,
) -> None:
    """Adds an imaging style: its per-image parameter ranges, its renderer and, if the instrument moves
    geometry, the distortion applied to the grain map before the labels are taken (``data/labs/``)."""
    global STYLES
    if name in STYLE_RANGES:
        raise ValueError(f"imaging style {name!r} is already registered")
    STYLE_RANGES[name] = dict(ranges)
    RENDERERS[name] = render_fn
    if distort_fn is not None:
        DISTORTIONS[name] = distort_fn
    STYLES = tuple(STYLE_RANGES)


def unregister_style(name: str) -> None:
    global STYLES
    for table in (STYLE_RANGES, RENDERERS, DISTORTIONS):
        table.pop(name, None)
    STYLES = tuple(STYLE_RANGES)


def distort_grains(style: str, rng: np.random.Generator, grains: np.ndarray, params: Params) -> np.ndarray:
    """Geometric artefacts of the instrument, applied to the grain map (identity for most styles)."""
    _check_style(style)
    fn = DISTORTIONS.get(style)
    return grains if fn is None else fn(rng, grains, params)


def render(style: str, rng: np.random.Generator, grains: np.ndarray, params: Params) -> np.ndarray:
    """Render ``grains`` in ``style``: float32 ``[H, W, 3]`` in ``[0, 1]``."""
    _check_style(style)
    missing = set(STYLE_RANGES[style]) - set(params)
    if missing:
        raise ValueError(f"style {style!r} params missing keys: {sorted(missing)}")
    img = RENDERERS[style](rng, np.asarray(grains), params)
    return np.asarray(img, dtype=np.float32)
