"""Generic training-time augmentation of a client's batch: small pure functions, jittable and vmappable,
applied inside the jitted local step as (part of) the engine's ``batch_transform`` to EVERY method (so a
style method's advantage is not merely being the only augmented one; the style re-rendering runs first and
its images are augmented like any other).

Composition order (fixed): per example, with its own key,

  geometric, on the image AND its label alike (a boundary stays on the image's edge):
    1. flip_h       left-right flip                                  p = flip_h_prob
    2. flip_v       up-down flip                                     p = flip_v_prob
    3. rot90        k quarter turns, k uniform in 0..3 (0 or 2 on non-square tiles)  p = rot90_prob
    4. rescale      zoom by s, log-uniform in rescale_range (s > 1 zooms in), about the tile centre with a
                    random shift that keeps a zoomed-in window inside the tile; the image is resampled
                    bilinearly, the label by the max of nearest samples over each output pixel's footprint
                    (a max-pool: a thin boundary line is never lost when zooming out); outside the tile
                    both are reflected about the edge pixels (reflect padding); the shape never changes
  photometric, on the image only (labels untouched):
    5. invert       x -> 1 - x (the boundary polarity of another imaging mode)   p = invert_prob
    6. brightness   x + d, d uniform in brightness_range              p = brightness_prob
    7. contrast     m + c (x - m) about the image mean m, c log-uniform in contrast_range
    8. gamma        x ** g, g log-uniform in gamma_range
    9. colour       x * gain per channel, gains uniform in colour_range
   10. blur         separable Gaussian (reflect padding), sigma uniform in blur_sigma_range
   11. noise        x + std * N(0, 1) (one field shared by the channels: grey micrographs stay grey),
                    std uniform in noise_std_range
  the image is clipped to [0, 1] after every photometric op that can leave it.

Each op draws from ``fold_in(example key, its tag)``, so an op's randomness does not depend on which other
ops are on; an op with probability 0 is not built at all (static config). ``config.augment.enabled=False``
means no transform: the run is bit for bit the run without this module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import chex
import jax
import jax.numpy as jnp

Array = jax.Array

# Every key of `config.augment` with its default (the config section is built from this; unknown keys are
# errors). Ranges are (low, high).
DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "flip_h_prob": 0.5,
    "flip_v_prob": 0.5,
    "rot90_prob": 1.0,
    "rescale_prob": 0.5,
    "rescale_range": (0.7, 1.4),
    "invert_prob": 0.1,
    "brightness_prob": 0.5,
    "brightness_range": (-0.1, 0.1),
    "contrast_prob": 0.5,
    "contrast_range": (0.75, 1.33),
    "gamma_prob": 0.3,
    "gamma_range": (0.7, 1.5),
    "colour_prob": 0.3,
    "colour_range": (0.9, 1.1),
    "blur_prob": 0.2,
    "blur_sigma_range": (0.3, 1.2),
    "noise_prob": 0.3,
    "noise_std_range": (0.005, 0.04),
}
# The composition order (module docstring) and each op's fold_in tag.
OPS = ("flip_h", "flip_v", "rot90", "rescale", "invert", "brightness", "contrast", "gamma", "colour", "blur", "noise")
_TAGS = {name: 0xA0 + i for i, name in enumerate(OPS)}
GEOMETRIC = OPS[:4]
# How a range is checked: 'positive' 0 < lo <= hi; 'nonneg' 0 <= lo <= hi; 'signed' -1 <= lo <= hi <= 1.
_RANGE_KIND = {
    "rescale_range": "positive",
    "brightness_range": "signed",
    "contrast_range": "positive",
    "gamma_range": "positive",
    "colour_range": "positive",
    "blur_sigma_range": "positive",
    "noise_std_range": "nonneg",
}
# fold_in tag of the augmentation key, derived from the batch-transform key (the style transform keeps that
# key itself, so composing changes nothing of its draws).
AUGMENT_TAG = 0xA6


@dataclasses.dataclass(frozen=True)
class Augment:
    """Resolved, validated settings (static: hashable, closed over by the jitted step)."""

    flip_h_prob: float
    flip_v_prob: float
    rot90_prob: float
    rescale_prob: float
    rescale_range: tuple[float, float]
    invert_prob: float
    brightness_prob: float
    brightness_range: tuple[float, float]
    contrast_prob: float
    contrast_range: tuple[float, float]
    gamma_prob: float
    gamma_range: tuple[float, float]
    colour_prob: float
    colour_range: tuple[float, float]
    blur_prob: float
    blur_sigma_range: tuple[float, float]
    noise_prob: float
    noise_std_range: tuple[float, float]

    def as_dict(self) -> dict:
        """What summary.json records (ranges as lists), in the composition order."""
        out: dict[str, Any] = {"order": list(OPS)}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    return dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)


def resolve(cfg: Mapping | None, key: str = "augment") -> Augment | None:
    """`config.augment` -> `Augment`, or None when disabled (or absent: configs written before the section
    existed train without augmentation). Errors name the config key: unknown keys, probabilities outside
    [0, 1], ranges that are not (low <= high) pairs of the right sign."""
    raw = _plain(cfg)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config key {key}.{unknown[0]}: unknown; {key} has {sorted(DEFAULTS)}")
    if not raw or not bool(raw.get("enabled", DEFAULTS["enabled"])):
        return None
    vals = {**DEFAULTS, **raw}
    out: dict[str, Any] = {}
    for name in DEFAULTS:
        v = vals[name]
        if name == "enabled":
            continue
        if name.endswith("_prob"):
            try:
                p = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"config key {key}.{name} must be a probability in [0, 1], got {v!r}") from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"config key {key}.{name} must be a probability in [0, 1], got {v!r}")
            out[name] = p
        else:
            try:
                lo, hi = (float(x) for x in v)
            except (TypeError, ValueError):
                raise ValueError(f"config key {key}.{name} must be a (low, high) pair, got {v!r}") from None
            kind = _RANGE_KIND[name]
            ok = math.isfinite(lo) and math.isfinite(hi) and lo <= hi
            if kind == "positive":
                ok = ok and lo > 0
            elif kind == "nonneg":
                ok = ok and lo >= 0
            else:
                ok = ok and -1.0 <= lo and hi <= 1.0
            if not ok:
                need = {"positive": "0 < low <= high", "nonneg": "0 <= low <= high", "signed": "-1 <= low <= high <= 1"}
                raise ValueError(f"config key {key}.{name} must satisfy {need[kind]}, got {v!r}")
            out[name] = (lo, hi)
    if out["rescale_range"][0] < 0.5:
        # Below 1/2 bilinear resampling skips whole pixels: the image's thin lines vanish while the label
        # (max-pooled) keeps them, so image and label would disagree.
        raise ValueError(f"config key {key}.rescale_range: low must be >= 0.5, got {vals['rescale_range']!r}")
    return Augment(**out)


def describe(cfg: Mapping | None, key: str = "augment") -> dict | str:
    """summary.json's `methods.<m>.augmentation`: the resolved settings, or 'off'."""
    aug = resolve(cfg, key)
    return "off" if aug is None else aug.as_dict()


# ----------------------------------------------------------------------------------------------------------
# Draws.
# ----------------------------------------------------------------------------------------------------------
def _coin(key: chex.PRNGKey, p: float) -> Array:
    return jax.random.bernoulli(key, p)


def _uniform(key: chex.PRNGKey, lo: float, hi: float, shape=()) -> Array:
    return jax.random.uniform(key, shape, jnp.float32, lo, hi)


def _log_uniform(key: chex.PRNGKey, lo: float, hi: float, shape=()) -> Array:
    return jnp.exp(jax.random.uniform(key, shape, jnp.float32, math.log(lo), math.log(hi)))


# ----------------------------------------------------------------------------------------------------------
# Geometric ops: one example, image [H, W, C] and label [H, W], both moved alike.
# ----------------------------------------------------------------------------------------------------------
def flip(image: Array, label: Array, do: Array, axis: int) -> tuple[Array, Array]:
    """Flip along `axis` (1: left-right, 0: up-down) where `do`."""
    return jnp.where(do, jnp.flip(image, axis), image), jnp.where(do, jnp.flip(label, axis), label)


def rot90(image: Array, label: Array, k: Array) -> tuple[Array, Array]:
    """`k` (traced, 0..3) counter-clockwise quarter turns (square tiles: the shape must not change)."""
    branches = [lambda xy, i=i: (jnp.rot90(xy[0], i, axes=(0, 1)), jnp.rot90(xy[1], i, axes=(0, 1))) for i in range(4)]
    return jax.lax.switch(k, branches, (image, label))


def _reflect(u: Array, n: int) -> Array:
    """Any real coordinate folded into [0, n-1] by mirroring about the edge pixel centres (numpy 'reflect')."""
    if n == 1:
        return jnp.zeros_like(u)
    period = 2.0 * (n - 1)
    v = jnp.mod(u, period)
    return (n - 1) - jnp.abs(v - (n - 1))


def _source_coords(n: int, scale: Array, shift: Array, offset: float = 0.0) -> Array:
    """Source coordinates of the output pixel centres (+ `offset` output pixels) when zooming by `scale`
    about the centre moved by `shift` source pixels."""
    c = (n - 1) / 2.0
    return c + shift + (jnp.arange(n, dtype=jnp.float32) + offset - c) / scale


def _bilinear_axis(x: Array, u: Array, axis: int) -> Array:
    n = x.shape[axis]
    u = _reflect(u, n)
    if n == 1:
        return jnp.take(x, jnp.zeros(u.shape, jnp.int32), axis=axis)
    i0 = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, n - 2)
    f = u - i0.astype(jnp.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    f = f.reshape(shape)
    return jnp.take(x, i0, axis=axis) * (1.0 - f) + jnp.take(x, i0 + 1, axis=axis) * f


def footprint_samples(min_scale: float) -> int:
    """Nearest samples per axis over an output pixel's footprint for the label (odd, so the centre sample
    is one): enough that their spacing in source pixels, 1 / (scale m), is <= 1 at the smallest scale,
    so no source pixel (no boundary line) falls between samples."""
    m = max(1, math.ceil(1.0 / min_scale - 1e-9))
    return m if m % 2 else m + 1


def _maxpool_nearest_axis(y: Array, n: int, scale: Array, shift: Array, m: int, axis: int) -> Array:
    out = None
    for a in range(m):
        off = (a + 0.5) / m - 0.5  # within the output pixel, in output pixels
        idx = jnp.clip(jnp.round(_reflect(_source_coords(n, scale, shift, off), n)).astype(jnp.int32), 0, n - 1)
        s = jnp.take(y, idx, axis=axis)
        out = s if out is None else jnp.maximum(out, s)
    return out


def rescale(image: Array, label: Array, scale: Array, shift: Array, *, samples: int = 3) -> tuple[Array, Array]:
    """Zoom both by `scale` (scalar; > 1 zooms in) about the centre moved by `shift` ([2]: rows, columns,
    in source pixels), reflecting outside the tile; output shape = input shape.

    Image: bilinear. Label: the max over `samples` x `samples` nearest samples spread over each output
    pixel's footprint (`footprint_samples`). With scale >= (samples - 1) / samples (2/3 for 3) every labelled
    output pixel has a boundary pixel among the image's bilinear neighbours (the transformed image is
    > 0 there when the image marks boundaries), and every output pixel whose nearest source pixel is a
    boundary is labelled."""
    h, w = label.shape
    dtype = image.dtype
    img = _bilinear_axis(image.astype(jnp.float32), _source_coords(h, scale, shift[0]), 0)
    img = _bilinear_axis(img, _source_coords(w, scale, shift[1]), 1)
    lab = _maxpool_nearest_axis(label, h, scale, shift[0], samples, 0)
    lab = _maxpool_nearest_axis(lab, w, scale, shift[1], samples, 1)
    return img.astype(dtype), lab


def _draw_rescale(key: chex.PRNGKey, lo: float, hi: float, hw: tuple[int, int]) -> tuple[Array, Array]:
    k_s, k_t = jax.random.split(key)
    scale = _log_uniform(k_s, lo, hi)
    # A zoomed-in window (n / scale source pixels) may sit anywhere inside the tile; zooming out is centred.
    room = jnp.maximum(0.0, (jnp.asarray(hw, jnp.float32) - jnp.asarray(hw, jnp.float32) / scale) / 2.0)
    shift = _uniform(k_t, -1.0, 1.0, (2,)) * room
    return scale, shift


# ----------------------------------------------------------------------------------------------------------
# Photometric ops: one example's image [H, W, C] float in [0, 1]; labels never seen.
# ----------------------------------------------------------------------------------------------------------
def _clip(x: Array) -> Array:
    return jnp.clip(x, 0.0, 1.0)


def invert(x: Array) -> Array:
    return 1.0 - x


def brightness(x: Array, delta: Array) -> Array:
    return _clip(x + delta)


def contrast(x: Array, factor: Array) -> Array:
    m = jnp.mean(x)
    return _clip(m + factor * (x - m))


def gamma(x: Array, g: Array) -> Array:
    return jnp.power(_clip(x), g)


def colour(x: Array, gains: Array) -> Array:
    return _clip(x * gains)


def gaussian_blur(x: Array, sigma: Array, radius: int) -> Array:
    """Separable Gaussian blur with a (static) 2 radius + 1 tap kernel, reflect padding."""
    if radius < 1:
        return x
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * jnp.square(t / sigma))
    k = k / k.sum()
    h, w = x.shape[:2]
    for axis, n in ((0, h), (1, w)):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        xp = jnp.pad(x, pad, mode="reflect" if n > radius else "symmetric" if n > 1 else "edge")
        acc = 0.0
        for i in range(2 * radius + 1):
            acc = acc + k[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis)
        x = acc
    return x


def noise(x: Array, key: chex.PRNGKey, std: Array) -> Array:
    return _clip(x + std * jax.random.normal(key, x.shape[:2] + (1,), jnp.float32))


# ----------------------------------------------------------------------------------------------------------
# Composition.
# ----------------------------------------------------------------------------------------------------------
def augment_example(aug: Augment, key: chex.PRNGKey, image: Array, label: Array) -> tuple[Array, Array]:
    """All ops in the fixed order on one example (image [H, W, C], label [H, W])."""
    h, w = label.shape
    dtype = image.dtype
    ks = {name: jax.random.split(jax.random.fold_in(key, _TAGS[name])) for name in OPS}  # (coin, draw)

    def coin(name: str) -> Array:
        return _coin(ks[name][0], getattr(aug, f"{name}_prob"))

    if aug.flip_h_prob > 0:
        image, label = flip(image, label, coin("flip_h"), axis=1)
    if aug.flip_v_prob > 0:
        image, label = flip(image, label, coin("flip_v"), axis=0)
    if aug.rot90_prob > 0:
        if h == w:
            k = jax.random.randint(ks["rot90"][1], (), 0, 4)
            image, label = rot90(image, label, jnp.where(coin("rot90"), k, 0))
        else:  # a quarter turn would change the shape: half turns only
            half = coin("rot90") & jax.random.bernoulli(ks["rot90"][1])
            image, label = flip(*flip(image, label, half, axis=0), half, axis=1)
    if aug.rescale_prob > 0:
        lo, hi = aug.rescale_range
        scale, shift = _draw_rescale(ks["rescale"][1], lo, hi, (h, w))
        z_img, z_lab = rescale(image, label, scale, shift, samples=footprint_samples(lo))
        do = coin("rescale")
        image, label = jnp.where(do, z_img, image), jnp.where(do, z_lab, label)

    x = image.astype(jnp.float32)

    def maybe(name: str, fn: Callable[[Array], Array]) -> None:
        nonlocal x
        if getattr(aug, f"{name}_prob") > 0:
            x = jnp.where(coin(name), fn(x), x)

    maybe("invert", invert)
    maybe("brightness", lambda v: brightness(v, _uniform(ks["brightness"][1], *aug.brightness_range)))
    maybe("contrast", lambda v: contrast(v, _log_uniform(ks["contrast"][1], *aug.contrast_range)))
    maybe("gamma", lambda v: gamma(v, _log_uniform(ks["gamma"][1], *aug.gamma_range)))
    maybe("colour", lambda v: colour(v, _uniform(ks["colour"][1], *aug.colour_range, (v.shape[-1],))))
    radius = int(math.ceil(3.0 * aug.blur_sigma_range[1]))
    maybe("blur", lambda v: gaussian_blur(v, _uniform(ks["blur"][1], *aug.blur_sigma_range), radius))
    k_std, k_noise = jax.random.split(ks["noise"][1])
    maybe("noise", lambda v: noise(v, k_noise, _uniform(k_std, *aug.noise_std_range)))
    return x.astype(dtype), label


def augment_batch(aug: Augment | None, batch: dict, key: chex.PRNGKey) -> dict:
    """`augment_example` over a batch (`images` [B, H, W, C], `labels` [B, H, W]; other entries such as
    `mask` pass through), example i with `split(key, B)[i]`. `aug=None`: the batch itself."""
    if aug is None:
        return batch
    keys = jax.random.split(key, batch["images"].shape[0])
    images, labels = jax.vmap(lambda k, x, y: augment_example(aug, k, x, y))(keys, batch["images"], batch["labels"])
    return {**batch, "images": images, "labels": labels}


def make_batch_transform(aug: Augment | None, inner: Callable | None = None) -> Callable | None:
    """The engine's `batch_transform(batch, client_id, rng) -> batch`: `inner` first (the style re-rendering,
    with `rng` as before), then the augmentation with `fold_in(rng, AUGMENT_TAG)`, so re-rendered examples
    are augmented like the others. `aug=None` returns `inner` unchanged (None when there is none)."""
    if aug is None:
        return inner

    def transform(batch: dict, client_id: Array, rng: chex.PRNGKey) -> dict:
        if inner is not None:
            batch = inner(batch, client_id, rng)
        return augment_batch(aug, batch, jax.random.fold_in(rng, AUGMENT_TAG))

    return transform


__all__ = [
    "DEFAULTS",
    "OPS",
    "GEOMETRIC",
    "AUGMENT_TAG",
    "Augment",
    "resolve",
    "describe",
    "flip",
    "rot90",
    "rescale",
    "footprint_samples",
    "invert",
    "brightness",
    "contrast",
    "gamma",
    "colour",
    "gaussian_blur",
    "noise",
    "augment_example",
    "augment_batch",
    "make_batch_transform",
]
