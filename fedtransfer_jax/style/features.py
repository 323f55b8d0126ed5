"""A fixed image descriptor for style-fidelity checks: random multi-scale conv statistics + hand-made
colour / intensity / gradient statistics.

No pretrained network (Inception, VGG) can be downloaded here, so the Frechet distance of
``style.checks`` runs on a descriptor that is fixed by a seed, never trained, and identical for every
method and lab:

Two groups, because a restyler must get both right and one must not hide the other:

* ``texture``: computed on the tile *normalised to zero mean and unit std* (one scalar pair per tile,
  so colour ratios survive), hence blind to global brightness and contrast: a random 3-level conv net
  (3x3 convs, He init, ReLU, 2x average pooling between levels) with **reflect** padding (zero padding
  would make every tile's border a feature of its own), per level the spatial mean and std of every
  channel; plus luminance skewness (sparse bright lines on black skew positive, dark grooves on bright
  grains negative), gradient-magnitude and Laplacian statistics (sharpness, noise) and the per-channel
  std ratios. First-order statistics of ReLU responses of random filters are sensitive to the sign of
  local contrast (ReLU is not symmetric), so bright-on-dark and dark-on-bright lines differ here.
* ``global``: per-channel mean / std, luminance quantiles, mean saturation: brightness, contrast, colour.

Measured on the dev seeds: with a single group, tiles of another lab whose per-channel mean/std were
simply matched to lab k scored as "closer to k than any other lab" (the global statistics dominate the
principal axes); the texture group flags them (docs/STYLE.md).

``describe(desc, images) -> {'texture': [N, Dt], 'global': [N, Dg]}`` is jittable and deterministic;
``DESCRIPTOR_SEED`` fixes the net.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
DESCRIPTOR_SEED = 0x5EED
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)  # numpy: importing must not start a JAX backend
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class Descriptor(NamedTuple):
    """The random conv net's kernels (HWIO), one per level, and its level widths."""

    kernels: tuple
    widths: tuple


def make_descriptor(seed: int = DESCRIPTOR_SEED, widths: Sequence[int] = (24, 24, 24)) -> Descriptor:
    """Random He-normal 3x3 kernels (zero-mean per filter removed: no bias, no DC-only filters)."""
    kernels, c_in = [], 3
    for i, w in enumerate(widths):
        k = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), i), (3, 3, c_in, w), jnp.float32)
        kernels.append(k * np.sqrt(2.0 / (9 * c_in)))
        c_in = w
    return Descriptor(tuple(kernels), tuple(int(w) for w in widths))


def reflect_conv(x: Array, kernel: Array) -> Array:
    """3x3 (odd k) convolution of NHWC ``x`` with reflect padding: no zero border artefacts."""
    r = kernel.shape[0] // 2
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    return jax.lax.conv_general_dilated(
        xp, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def normalise(images: Array) -> Array:
    """Per-tile standardisation with one scalar mean / std over all pixels and channels."""
    m = images.mean(axis=(1, 2, 3), keepdims=True)
    s = images.std(axis=(1, 2, 3), keepdims=True)
    return (images - m) / (s + 1e-2)


def _conv_stats(desc: Descriptor, images: Array) -> Array:
    x = normalise(images)
    out = []
    for i, k in enumerate(desc.kernels):
        if i > 0:
            b, h, w, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        x = jax.nn.relu(reflect_conv(x, k))
        out += [jnp.mean(x, axis=(1, 2)), jnp.std(x, axis=(1, 2))]
    return jnp.concatenate(out, axis=-1)


def _shape_stats(images: Array) -> Array:
    """Brightness/contrast-invariant hand statistics of normalised tiles."""
    n = images.shape[0]
    x = normalise(images)
    luma = x @ _LUMA  # [N, H, W]
    flat = luma.reshape(n, -1)
    mu, sd = flat.mean(-1), flat.std(-1)
    skew = jnp.mean(((flat - mu[:, None]) / (sd[:, None] + 1e-3)) ** 3, -1)
    kurt = jnp.mean(((flat - mu[:, None]) / (sd[:, None] + 1e-3)) ** 4, -1)
    lp = jnp.pad(luma, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    gx = lp[:, 1:-1, 2:] - lp[:, 1:-1, :-2]
    gy = lp[:, 2:, 1:-1] - lp[:, :-2, 1:-1]
    grad = jnp.sqrt(gx**2 + gy**2 + 1e-8).reshape(n, -1)
    lap = (lp[:, 1:-1, 2:] + lp[:, 1:-1, :-2] + lp[:, 2:, 1:-1] + lp[:, :-2, 1:-1] - 4 * luma).reshape(n, -1)
    chan = x.std(axis=(1, 2))  # colour structure relative to the overall contrast
    return jnp.concatenate(
        [jnp.stack([skew, kurt, grad.mean(-1), grad.std(-1), jnp.abs(lap).mean(-1), lap.std(-1)], -1), chan],
        -1,
    )


def _global_stats(images: Array) -> Array:
    n = images.shape[0]
    flat = (images @ _LUMA).reshape(n, -1)
    q = jnp.quantile(flat, jnp.asarray(_QUANTILES), axis=-1).T  # [N, 5]
    sat = (images.max(-1) - images.min(-1)).reshape(n, -1).mean(-1)
    return jnp.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2)), q, sat[:, None]], axis=-1)


GROUPS = ("texture", "global")


def describe(desc: Descriptor, images: Array) -> dict:
    """``[N, H, W, 3]`` images in [0, 1] -> ``{'texture': [N, Dt], 'global': [N, Dg]}`` float32
    descriptors (H, W divisible by 4)."""
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"describe: images must be [N,H,W,3], got {images.shape}")
    return {
        "texture": jnp.concatenate([_conv_stats(desc, images), _shape_stats(images)], axis=-1),
        "global": _global_stats(images),
    }


def descriptor_names(desc: Descriptor) -> dict:
    """One name per descriptor dimension and group (for reports: which statistics differ)."""
    tex = []
    for i, w in enumerate(desc.widths):
        tex += [f"conv{i}_mean{c}" for c in range(w)] + [f"conv{i}_std{c}" for c in range(w)]
    tex += ["skew", "kurtosis", "grad_mean", "grad_std", "lap_absmean", "lap_std"] + [
        f"rel_std_{c}" for c in "rgb"
    ]
    glob = [f"mean_{c}" for c in "rgb"] + [f"std_{c}" for c in "rgb"]
    glob += [f"luma_q{int(q * 100):02d}" for q in _QUANTILES] + ["saturation"]
    return {"texture": tex, "global": glob}


__all__ = [
    "DESCRIPTOR_SEED",
    "GROUPS",
    "Descriptor",
    "make_descriptor",
    "normalise",
    "reflect_conv",
    "describe",
    "descriptor_names",
]
