"""models/receptive_field.py: the gradient's support is the set of inputs that can change the output
(checked by perturbing inputs one at a time), a single conv block sees exactly 5 px, depth widens it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax.models import receptive_field
from fedtransfer_jax.models.unet import UNet


def init(features, size):
    model = UNet(features=features, groups=4)
    return model, model.init(jax.random.PRNGKey(1), jnp.zeros((1, size, size, 3)))["params"]


def test_one_block_sees_two_3x3_convs():
    model, params = init((4,), 16)
    got = receptive_field.measure(model, params, 16)
    # Two 3x3 convs reach 2 px each side; beyond, only GroupNorm's image-wide statistics (far below 5 %).
    assert got["effective_px"] in (3, 5) and not got["clipped"]


def test_gradient_support_matches_perturbing_each_input():
    size = 16
    model, params = init((4, 8), size)
    grad = receptive_field.gradient_map(model, params, size)
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, size, size, 3))
    f = jax.jit(lambda img: model.apply({"params": params}, img)[0, size // 2, size // 2, 1])
    base = f(x)
    changed = np.zeros((size, size), bool)
    for i in range(size):
        for j in range(size):
            changed[i, j] = abs(float(f(x.at[0, i, j, :].add(0.5))) - float(base)) > 1e-6
    # Where the gradient is clearly non-zero, a perturbation changes the output, and the strongest
    # gradients lie inside the region perturbations reach.
    strong = grad > 1e-3 * grad.max()
    assert np.all(changed[strong])


def test_deeper_sees_further():
    size = 64
    got = [receptive_field.measure(*init(f, size), size)["effective_px"] for f in ((4,), (4, 8), (4, 8, 8))]
    assert got[0] < got[1] < got[2], got


def test_extent_on_a_known_map():
    g = np.full((21, 21), 1e-4)  # the weak image-wide path
    g[8:13, 9:12] = 1.0  # 5 rows x 3 columns around the centre (10, 10)
    assert receptive_field.extent(g) == {"effective_px": 5, "clipped": False}
    g[0, 10] = 0.5
    assert receptive_field.extent(g) == {"effective_px": 21, "clipped": True}
