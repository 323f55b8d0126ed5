"""A generic, label-conditioned imaging model: fit a lab's appearance from (image, label) pairs, render
any label map in it.

Why: AdaIN and Fourier restyling only re-weight what is already in an image, so neither can change the
*sign* of the boundary contrast (dark grooves vs bright scattering lines) nor draw a boundary where the
source image shows none. A renderer that starts from the **label map** can: every pixel's appearance is
written as

    image(x) = blur_s(tone[grain(x)]) + shading(x) + profile[dist(x)] * m(x) + noise(x),   clipped to [0, 1]

with, fitted per image by least squares / moments (``fit_style``) and shared as a few hundred numbers:

* ``tone_mean [3]``, ``tone_sqrt [3, 3]``: mean colour and (symmetric square root of the) colour
  covariance of the grains' tones -> background level, grain-to-grain contrast, colour tint per grain;
* ``blur``: Gaussian sigma (px) of the tone map, picked among ``BLUR_CANDIDATES`` by fit error;
* ``profile [R, 3]``: the mean colour offset at distance 0..R-1 px from a labelled boundary (0 beyond):
  sign = polarity (dark grooves < 0, bright lines > 0), shape = width and blur, per channel = colour;
* ``contrast_std``: relative variation of the boundary contrast along the boundaries (faint / missing
  etch), rendered as a smooth random modulation ``m(x) = max(0, 1 + contrast_std * field)``;
* ``shading [5, 3]``: a smooth illumination field (x, y, x^2, xy, y^2), estimated from the within-grain
  variation only and rendered in a random orientation (flips / transpose);
* ``noise_basis [3, 3]``, ``noise_psd [3, NB, NB]``: what is left (sensor / shot noise, texture,
  illumination, scan lines) as a stationary Gaussian field: the residual's colour principal axes and the
  binned power spectrum of each (bins in cycles/px over |f_y| x |f_x|, so anisotropic noise such as scan
  lines survives), never an image-shaped array.

Nothing in it is specific to the synthetic labs: it is a second-order description of "grains of some
tones separated by boundaries of some signed profile, plus stationary noise", measured from data, so it
applies to real optical, dark-field, SEM or tint-etched micrographs alike. Geometry is exact by
construction: the rendered boundaries are where the labels say.

All functions are jittable and act on one image; ``jax.vmap`` them over a batch.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.style.labelmaps import distance_bins, grain_ids

Array = jax.Array

# Power-spectrum bin edges in cycles per px (fine at low frequency, where illumination and texture live).
PSD_EDGES = tuple(e / 64.0 for e in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 33))
NUM_PSD_BINS = len(PSD_EDGES) - 1
BLUR_CANDIDATES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


class ImagingStyle(NamedTuple):
    """One image's fitted appearance (any leading batch dims). See the module docstring."""

    tone_mean: Array  # [3]
    tone_sqrt: Array  # [3, 3]
    blur: Array  # []
    profile: Array  # [R, 3]
    contrast_std: Array  # []
    noise_basis: Array  # [3, 3] columns = colour principal axes of the residual
    noise_psd: Array  # [3, NB, NB]
    shading: Array  # [5, 3] coefficients of the smooth shading basis (x, y, x^2, xy, y^2)


# ------------------------------------------------------------------------------------------------ helpers
def _freq_bin_index(n: int) -> np.ndarray:
    """Bin of every FFT frequency index of an n-point axis (static)."""
    f = np.abs(np.fft.fftfreq(n))
    return np.clip(np.searchsorted(np.asarray(PSD_EDGES), f, side="right") - 1, 0, NUM_PSD_BINS - 1)


def _psd_bin_map(h: int, w: int) -> np.ndarray:
    """``[H, W]`` flat bin index ``by * NB + bx`` of every 2-D FFT frequency (static)."""
    return (_freq_bin_index(h)[:, None] * NUM_PSD_BINS + _freq_bin_index(w)[None, :]).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _dft_cos_sin(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos / sin of 2 pi k m / n (symmetric n x n matrices; static): the real DFT matrices."""
    k = np.arange(n)
    ang = 2.0 * np.pi * np.outer(k, k) / n
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def dft2(x: Array) -> tuple[Array, Array]:
    """(real, imaginary) part of the 2-D DFT of a real ``[..., H, W]`` array over its last two axes, as
    matmuls with the DFT matrices (``jnp.fft.fft2`` up to float rounding). Written as matmuls rather than
    an FFT because XLA:CPU's FFT runtime rejects the operand layouts it picks for FFTs inside a round
    sharded over several devices (RET_CHECK in fft_thunk.cc), and at tile sizes the matmuls cost next to
    nothing (2 x 64^3 multiply-adds per channel)."""
    ch, sh = (jnp.asarray(m) for m in _dft_cos_sin(x.shape[-2]))
    cw, sw = (jnp.asarray(m) for m in _dft_cos_sin(x.shape[-1]))
    a = jnp.einsum("kh,...hw->...kw", ch, x)
    b = jnp.einsum("kh,...hw->...kw", sh, x)
    return a @ cw - b @ sw, -(b @ cw + a @ sw)


def idft2_real(re: Array, im: Array) -> Array:
    """Real part of the inverse 2-D DFT of ``re + i im`` over the last two axes (``jnp.real(ifft2)``)."""
    h, w = re.shape[-2:]
    ch, sh = (jnp.asarray(m) for m in _dft_cos_sin(h))
    cw, sw = (jnp.asarray(m) for m in _dft_cos_sin(w))
    p = jnp.einsum("kh,...hw->...kw", ch, re) - jnp.einsum("kh,...hw->...kw", sh, im)
    q = jnp.einsum("kh,...hw->...kw", sh, re) + jnp.einsum("kh,...hw->...kw", ch, im)
    return (p @ cw - q @ sw) / (h * w)


def gaussian_blur(x: Array, sigma: Array) -> Array:
    """Gaussian blur of ``[H, W, C]`` with a (traced) sigma in px: the DFT of the reflect-padded image times
    ``exp(-2 pi^2 sigma^2 |f|^2)``; sigma 0 is the identity. Reflect padding keeps the tile border clean."""
    h, w, _ = x.shape
    ph, pw = min(h - 1, 12), min(w - 1, 12)
    xp = jnp.moveaxis(jnp.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="reflect"), -1, 0)  # [C, H', W']
    fy = jnp.fft.fftfreq(h + 2 * ph)[:, None]
    fx = jnp.fft.fftfreq(w + 2 * pw)[None, :]
    transfer = jnp.exp(-2.0 * math.pi**2 * sigma**2 * (fy**2 + fx**2))
    re, im = dft2(xp)
    out = jnp.moveaxis(idft2_real(re * transfer, im * transfer), 0, -1)
    return out[ph : ph + h, pw : pw + w].astype(jnp.float32)


def smooth_field(key: Array, shape: tuple[int, int], scale: float) -> Array:
    """Zero-mean, unit-std Gaussian random field with correlation length ~``scale`` px."""
    z = gaussian_blur(jax.random.normal(key, (*shape, 1)), jnp.float32(scale))[..., 0]
    return (z - z.mean()) / (z.std() + 1e-6)


def _segment_mean(values: Array, segments: Array, num: int) -> tuple[Array, Array]:
    """Per-segment mean of ``values [N, C]`` and the segment sizes ``[num]``."""
    s = jax.ops.segment_sum(values, segments, num)
    n = jax.ops.segment_sum(jnp.ones(segments.shape, jnp.float32), segments, num)
    return s / jnp.maximum(n, 1.0)[:, None], n


def _sym_sqrt(cov: Array) -> Array:
    lam, vec = jnp.linalg.eigh(cov)
    return (vec * jnp.sqrt(jnp.maximum(lam, 0.0))) @ vec.T


# ------------------------------------------------------------------------------------------------ fitting
def _shading_basis(h: int, w: int) -> np.ndarray:
    """``[H*W, 5]`` smooth shading basis (x, y, x^2, xy, y^2 on [-1, 1]^2, centred): no constant term,
    the tones carry the level."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    basis = np.stack([xx, yy, xx**2, xx * yy, yy**2], -1).reshape(h * w, 5)
    return (basis - basis.mean(0)).astype(np.float32)


def random_dihedral_shading(key: Array, coef: Array) -> Array:
    """Shading coefficients ``[5, C]`` under a random flip of x, of y and a random transpose: the lab's
    kind of illumination (ramp strength, vignetting) in a random orientation."""
    fx, fy, tr = jax.random.bernoulli(key, 0.5, (3,))
    sx, sy = jnp.where(fx, -1.0, 1.0), jnp.where(fy, -1.0, 1.0)
    c = coef * jnp.stack([sx, sy, 1.0, sx * sy, 1.0])[:, None]
    return jnp.where(tr, c[jnp.array([1, 0, 4, 3, 2])], c)


def _fit_tones_profile(image: Array, gid: Array, db: Array, radius: int, sigmas: Array):
    """Least squares for (grain tones, boundary profile, smooth shading), then the tone blur.

    ``image = tone[grain] + profile[dist] + shading + noise`` is solved exactly by eliminating the free
    per-grain tones: profile and shading are fitted to the *within-grain* variation only (design matrix
    minus its per-grain means), the tones are the grain means of what is left. Two consequences:
    illumination is estimated from within-grain gradients and does not leak into the grain tones (where
    iid per-grain tones would render it as exaggerated grain-to-grain contrast), and where grains are too
    small to have pixels far from a boundary (the constant offset between tones and profile is then not
    identifiable) a tiny ridge picks the smallest profile. The blur of the tone map is then chosen among
    ``sigmas`` by fit error. Returns (tones, areas, blurred tone map, profile [R+1, 3] with 0 'far',
    shading coefficients [5, 3], blur sigma)."""
    h, w, _ = image.shape
    n = h * w
    x = image.reshape(n, 3)
    g, d = gid.reshape(n), db.reshape(n)
    design = jnp.concatenate(
        [jax.nn.one_hot(d, radius + 1)[:, :radius], jnp.asarray(_shading_basis(h, w))], 1
    )
    within = design - _segment_mean(design, g, n)[0][g]
    gram = within.T @ within
    ridge = 1e-3 * jnp.mean(jnp.diag(gram)) + 1e-6
    coef = jnp.linalg.solve(gram + ridge * jnp.eye(gram.shape[0]), within.T @ x)  # [R + 5, 3]
    smooth = design @ coef  # profile + shading
    tones, area = _segment_mean(x - smooth, g, n)
    tone_map = tones[g].reshape(h, w, 3)
    blurred = jax.vmap(lambda s: gaussian_blur(tone_map, s).reshape(n, 3))(sigmas)
    mse = jnp.mean(jnp.square(x[None] - blurred - smooth[None]), axis=(1, 2))
    best = jnp.argmin(mse)
    prof = jnp.concatenate([coef[:radius], jnp.zeros((1, 3), coef.dtype)])
    return tones, area, blurred[best], prof, coef[radius:], sigmas[best]


def tone_distribution(tones: Array, area: Array) -> tuple[Array, Array]:
    """Area-weighted mean ``[3]`` and covariance ``[3, 3]`` of the grain tones present (no ridge: grey labs
    must stay exactly grey)."""
    wgt = area / jnp.maximum(area.sum(), 1.0)
    mu = wgt @ tones
    dev = tones - mu
    return mu, (dev * wgt[:, None]).T @ dev


def far_residual(
    x: Array, d: Array, tb: Array, prof: Array, coef: Array, hw: tuple[int, int], noise_min_px: int
) -> tuple[Array, Array]:
    """The residual ``[H*W, 3]`` of the fitted tones, boundary profile and shading, centred and kept only on
    pixels at least ``noise_min_px`` from a boundary (zero elsewhere), and the number of those pixels.

    The noise statistics come from pixels away from boundaries, where the residual is noise and texture and
    not the boundary-to-boundary variation of the profile (that is the contrast variance's job)."""
    resid = x - tb - prof[d] - jnp.asarray(_shading_basis(*hw)) @ coef
    far = (d >= noise_min_px).astype(jnp.float32)
    n_far = jnp.maximum(far.sum(), 1.0)
    mean_far = (far @ resid) / n_far
    return (resid - mean_far) * far[:, None], n_far


def binned_noise_psd(rc: Array, basis: Array, n_far: Array, hw: tuple[int, int]) -> Array:
    """``[3, NB, NB]`` binned masked periodogram of the residual ``rc`` projected on the colour axes
    ``basis`` (columns)."""
    h, w = hw
    proj = jnp.moveaxis((rc @ basis).reshape(h, w, 3), -1, 0)  # [3, H, W], zero on boundary pixels
    re, im = dft2(proj)
    power = (jnp.square(re) + jnp.square(im)) / n_far  # masked periodogram
    bins = jnp.asarray(_psd_bin_map(h, w)).reshape(-1)
    psd, _ = _segment_mean(power.reshape(3, h * w).T, bins, NUM_PSD_BINS**2)
    return psd.T.reshape(3, NUM_PSD_BINS, NUM_PSD_BINS)


def boundary_contrast_var(x: Array, d: Array, tb: Array, p0: Array, noise_var: Array) -> Array:
    """Along-boundary contrast variation, corrected for the noise: a = <x - tone, p0> / |p0|^2 on boundary
    pixels has variance var(A) + sigma^2 / |p0|^2, with ``noise_var`` = sigma^2 (per channel)."""
    p0sq = jnp.maximum(p0 @ p0, 1e-8)
    on_b = (d == 0).astype(jnp.float32)
    amp = ((x - tb) @ p0) / p0sq
    nb = jnp.maximum(on_b.sum(), 1.0)
    amp_mean = jnp.sum(amp * on_b) / nb
    return jnp.sum(jnp.square(amp - amp_mean) * on_b) / nb - noise_var / p0sq


def fit_style(
    image: Array,
    labels: Array,
    *,
    profile_px: int = 6,
    blur_candidates: Sequence[float] = BLUR_CANDIDATES,
    noise_min_px: int = 2,
) -> ImagingStyle:
    """Fit one ``[H, W, 3]`` image with its ``[H, W]`` boundary labels (nonzero = boundary).

    ``noise_min_px``: the residual noise spectrum is measured on pixels at least this far from a
    labelled boundary."""
    h, w, _ = image.shape
    n = h * w
    image = image.astype(jnp.float32)
    gid, db = grain_ids(labels), distance_bins(labels, profile_px)
    tones, area, tb, prof, coef, blur = _fit_tones_profile(
        image, gid, db, profile_px, jnp.asarray(blur_candidates, jnp.float32)
    )

    mu, tone_cov = tone_distribution(tones, area)
    x = image.reshape(n, 3)
    d = db.reshape(n)
    rc, n_far = far_residual(x, d, tb, prof, coef, (h, w), noise_min_px)
    noise_cov = rc.T @ rc / n_far
    _, basis = jnp.linalg.eigh(noise_cov)
    psd = binned_noise_psd(rc, basis, n_far, (h, w))
    p0 = prof[0]
    amp_var = boundary_contrast_var(x, d, tb, p0, jnp.trace(noise_cov) / 3.0)
    contrast_std = jnp.where(p0 @ p0 > 1e-5, jnp.clip(jnp.sqrt(jnp.maximum(amp_var, 0.0)), 0.0, 1.5), 0.0)
    return ImagingStyle(
        tone_mean=mu,
        tone_sqrt=_sym_sqrt(tone_cov),
        blur=blur,
        profile=prof[:profile_px],
        contrast_std=contrast_std,
        noise_basis=basis,
        noise_psd=psd,
        shading=coef,
    )


# ------------------------------------------------------------------------------------------------ rendering
def render_style(
    style: ImagingStyle, labels: Array, key: Array, *, modulation_px: float = 6.0, noise_scale: float = 1.0
) -> Array:
    """Render one ``[H, W]`` label map in ``style``: ``[H, W, 3]`` float32 in [0, 1].

    Randomness (``key``): the grains' tones, the along-boundary contrast modulation, the noise field.
    ``noise_scale`` scales the noise field's amplitude (1 = as fitted)."""
    h, w = labels.shape
    n = h * w
    radius = style.profile.shape[0]
    k_tone, k_mod, k_noise, k_shade = jax.random.split(key, 4)
    gid, db = grain_ids(labels), distance_bins(labels, radius)
    tones = style.tone_mean + jax.random.normal(k_tone, (n, 3)) @ style.tone_sqrt.T
    tone_map = gaussian_blur(tones[gid.reshape(-1)].reshape(h, w, 3), style.blur)
    shade = jnp.asarray(_shading_basis(h, w)) @ random_dihedral_shading(k_shade, style.shading)
    mod = jnp.maximum(1.0 + style.contrast_std * smooth_field(k_mod, (h, w), modulation_px), 0.0)
    prof = jnp.concatenate([style.profile, jnp.zeros((1, 3), style.profile.dtype)])[db] * mod[..., None]
    bins = jnp.asarray(_psd_bin_map(h, w))
    amp = jnp.sqrt(jnp.maximum(style.noise_psd.reshape(3, -1)[:, bins], 0.0))  # [3, H, W]
    white_re, white_im = dft2(jax.random.normal(k_noise, (3, h, w)))
    field = idft2_real(amp * white_re, amp * white_im)
    noise = jnp.moveaxis(field, 0, -1) @ style.noise_basis.T
    out = tone_map + shade.reshape(h, w, 3) + prof + noise_scale * noise
    return jnp.clip(out, 0.0, 1.0).astype(jnp.float32)


# Broad prior over the imaging model, for the random-style control: appearances drawn from ranges that
# cover bright-field, dark-field, SEM-like and tinted micrographs without looking at any lab's data.
PRIOR_RANGES = {
    "level": (0.1, 0.9),  # mean grain tone
    "colour_prob": 0.5,  # share of colour (vs grey) appearances
    "spread": (0.01, 0.25),  # grain-to-grain tone std (log-uniform)
    "blur": (0.0, 2.0),  # tone-map blur sigma, px (from BLUR_CANDIDATES)
    "profile_amp": (-0.5, 0.5),  # boundary contrast at the boundary: < 0 dark grooves, > 0 bright lines
    "profile_width": (0.5, 3.0),  # Gaussian width of the boundary profile, px
    "contrast_std": (0.0, 0.6),  # along-boundary contrast variation
    "noise_std": (0.003, 0.1),  # residual noise std (log-uniform)
    "noise_slope": (0.0, 2.5),  # power-law exponent of the noise spectrum (0 = white, larger = texture)
    "shading": (0.0, 0.1),  # illumination ramp / vignetting strength
}


def sample_prior_style(key: Array, profile_px: int) -> ImagingStyle:
    """One appearance drawn from ``PRIOR_RANGES`` (no data): grey or colour grains of random level and
    spread, a boundary profile of random sign and width, random blur, contrast variation, shading and
    power-law noise. Same structure as ``fit_style``'s output, so ``render_style`` renders it."""
    pr = PRIOR_RANGES
    k = jax.random.split(key, 14)
    u = lambda kk, lo_hi, shape=(): jax.random.uniform(kk, shape, minval=lo_hi[0], maxval=lo_hi[1])  # noqa: E731
    logu = lambda kk, lo_hi: jnp.exp(u(kk, (math.log(lo_hi[0]), math.log(lo_hi[1]))))  # noqa: E731
    colour = jax.random.bernoulli(k[0], pr["colour_prob"])
    grey3 = jnp.zeros((3, 3)).at[:, 0].set(1.0)  # every channel takes component 0: a grey appearance
    tint = jnp.clip(1.0 + 0.3 * jax.random.normal(k[1], (3,)), 0.4, 1.6)  # colour of the profile
    tone_mean = jnp.where(colour, u(k[2], pr["level"], (3,)), u(k[3], pr["level"]) * jnp.ones(3))
    spread = logu(k[4], pr["spread"])
    tone_sqrt = spread * jnp.where(colour, 0.6 * grey3 + 0.4 * jnp.diag(u(k[5], (0.3, 1.0), (3,))), grey3)
    candidates = jnp.asarray([b for b in BLUR_CANDIDATES if pr["blur"][0] <= b <= pr["blur"][1]], jnp.float32)
    blur = candidates[jax.random.randint(k[6], (), 0, candidates.shape[0])]
    r = jnp.arange(profile_px, dtype=jnp.float32)
    width = u(k[7], pr["profile_width"])
    shape = u(k[8], pr["profile_amp"]) * jnp.exp(-0.5 * jnp.square(r / width))
    profile = shape[:, None] * jnp.where(colour, tint, jnp.ones(3))[None, :]
    centres = (np.asarray(PSD_EDGES[:-1]) + np.asarray(PSD_EDGES[1:])) / 2
    f = np.maximum(np.hypot(centres[:, None], centres[None, :]), 1.0 / 128.0)
    spectrum = jnp.power(jnp.asarray(f / 0.25, jnp.float32), -u(k[9], pr["noise_slope"]))
    spectrum = spectrum / jnp.mean(spectrum)  # mean power = noise_std^2 whatever the slope
    level = jnp.square(logu(k[10], pr["noise_std"])) * spectrum
    noise_psd = jnp.where(colour, jnp.stack([level] * 3), jnp.stack([level, 0.0 * level, 0.0 * level]))
    noise_basis = jnp.where(colour, jnp.eye(3), grey3)
    shading = u(k[11], pr["shading"]) * jax.random.normal(k[12], (5, 1)) * jnp.where(colour, tint, jnp.ones(3))
    return ImagingStyle(
        tone_mean=tone_mean,
        tone_sqrt=tone_sqrt,
        blur=blur,
        profile=profile,
        contrast_std=u(k[13], pr["contrast_std"]),
        noise_basis=noise_basis,
        noise_psd=noise_psd,
        shading=shading,
    )


def style_size(profile_px: int) -> int:
    """Floats per shared style vector."""
    return 3 + 9 + 1 + 3 * profile_px + 1 + 9 + 3 * NUM_PSD_BINS**2 + 15


__all__ = [
    "PSD_EDGES",
    "NUM_PSD_BINS",
    "BLUR_CANDIDATES",
    "ImagingStyle",
    "gaussian_blur",
    "smooth_field",
    "fit_style",
    "render_style",
    "PRIOR_RANGES",
    "sample_prior_style",
    "style_size",
]
