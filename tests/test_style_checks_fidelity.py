"""style.checks.fidelity: the measures on plain arrays, against hand-computed references (16 px tiles)."""

from __future__ import annotations

import numpy as np
import pytest

from fedtransfer_jax.style.checks import fidelity as checks
from fedtransfer_jax.style.features import describe, make_descriptor
from style_toy import toy_lab


def test_frechet_distance_hand_cases():
    rng = np.random.default_rng([0])
    a = rng.normal(size=(400, 1))
    b = 3.0 + 2.0 * a  # same shape, shifted and scaled: FD = (mu_a - mu_b)^2 + (s_a - s_b)^2
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    want = (a.mean() - b.mean()) ** 2 + (sa - sb) ** 2
    assert checks.frechet_distance(a, b, ridge=0.0) == pytest.approx(want, rel=1e-6)
    x = rng.normal(size=(50, 4))
    assert checks.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError):
        checks.frechet_distance(x, x[:, :3])


def test_descriptor_groups_shapes_and_brightness_invariance():
    desc = make_descriptor()
    x, _ = toy_lab("dark", 0, 3, 16)
    f = describe(desc, x)
    assert set(f) == {"texture", "global"} and f["texture"].shape[0] == 3
    g = describe(desc, np.clip(0.5 * x + 0.1, 0, 1))  # global affine change of brightness/contrast
    # texture: blind to it, up to the 0.01 floor on the normalising std (here std 0.2 -> 0.1: ~5%)
    np.testing.assert_allclose(f["texture"], g["texture"], rtol=0.1, atol=0.01)
    assert np.abs(np.asarray(f["global"]) - np.asarray(g["global"])).max() > 0.05


def test_boundary_contrast_and_border_ratio():
    xd, yd = toy_lab("dark", 1, 3, 16)
    xb, yb = toy_lab("bright", 1, 3, 16)
    assert np.all(checks.boundary_contrast(xd, yd) < -0.2) and np.all(checks.boundary_contrast(xb, yb) > 0.3)
    assert np.all(np.abs(checks.border_ratio(xd) - 1.0) < 0.5)
    seamed = xd.copy()
    for sl in (np.s_[:, :2], np.s_[:, -2:], np.s_[:, :, :2], np.s_[:, :, -2:]):
        seamed[sl + (0,)] = 1.0  # a coloured seam along the tile border
    assert np.all(checks.border_ratio(seamed) > 1.5)
