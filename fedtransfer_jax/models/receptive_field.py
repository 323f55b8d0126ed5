"""How far a segmenter looks: the receptive field of one output pixel, measured on the model itself.

A boundary between two large grains of similar tone is only visible with context: a model whose receptive
field is smaller than the grains it segments sees a patch of uniform interior and must guess. So the
scale-robust model (experiments/pretrained.py) picks its depth by measuring, for the centre output pixel
of a model with random params, the gradient of its boundary logit with respect to the input.

GroupNorm normalises with statistics over the whole image, so *every* input pixel has some gradient: the
architecture's receptive field is always the whole image, through that weak path. What is reported is the
conv path's reach: `effective_px`, the side of the smallest centred square holding every pixel whose
gradient is at least `level` (5 %) of the peak (the effective receptive field of Luo et al. 2016, which is
far smaller than the conv stack's nominal one, is what a model mostly uses).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def gradient_map(model, params: Any, size: int, channel: int = 1) -> np.ndarray:
    """|d logit[centre] / d input| summed over input channels, [size, size], at a random input."""
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, size, size, 3))
    c = size // 2

    def centre(img):
        return model.apply({"params": params}, img)[0, c, c, channel]

    return np.asarray(jnp.abs(jax.grad(centre)(x))[0].sum(-1))


def extent(grad: np.ndarray, level: float = 0.05) -> dict:
    """`effective_px` (see the module docstring) of a gradient map whose output pixel is at the centre;
    `clipped` is True where that square reaches the map's edge (measure on a larger map)."""
    size = grad.shape[0]
    c = size // 2
    strong = np.argwhere(grad >= level * float(grad.max()))
    reach = int(np.abs(strong - c).max())
    return {"effective_px": 2 * reach + 1, "clipped": bool(c - reach <= 0 or c + reach >= size - 1)}


def measure(model, params: Any, size: int, level: float = 0.05) -> dict:
    """The receptive field of `model` (a U-Net with `params`) on a `size` px input; see `extent`."""
    return extent(gradient_map(model, params, size), level)


__all__ = ["extent", "gradient_map", "measure"]
