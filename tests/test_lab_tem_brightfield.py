"""The tem_brightfield lab (data/labs/tem_brightfield.py): two-beam diffraction contrast, thickness fringes."""

import numpy as np

from fedtransfer_jax.data import synthetic
from fedtransfer_jax.data.labs import tem_brightfield as tem
from fedtransfer_jax.data.microstructure import boundary_map

LAB = "tem_brightfield"
PARAMS = dict(thickness=2.0, s_spread=0.3, bend=0.0, wedge=0.0, incline_px=12.0, absorption=0.1, gain=0.9,
              offset=0.0, dose=1e7, blur=0.3)


def test_renders_tiny_exact_labels_deterministic():
    images, labels, grains = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    assert images.shape == (3, 40, 40, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.02
    for lab, g in zip(labels, grains):
        np.testing.assert_array_equal(lab, boundary_map(g, 2))
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey
    again = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    for a, b in zip((images, labels, grains), again):
        np.testing.assert_array_equal(a, b)
    assert synthetic.describe_lab(LAB)["method"] == "twinned"


def test_two_beam_intensity():
    t = np.linspace(0.0, 3.0, 301)
    at_bragg = tem.bright_field(np.zeros_like(t), t)
    np.testing.assert_allclose(at_bragg, np.cos(np.pi * t) ** 2, atol=1e-12)  # Pendelloesung, period xi
    np.testing.assert_allclose(tem.bright_field(np.linspace(-5, 5, 11), np.zeros(11)), 1.0)  # no foil, no loss
    # Grey level vs excitation error oscillates (not a monotone 'tone'): several extrema at fixed thickness.
    s = np.linspace(0.0, 6.0, 601)
    d = np.diff(tem.bright_field(s, np.full_like(s, 1.7)))
    assert np.sum(np.sign(d[1:]) != np.sign(d[:-1])) >= 3
    # Far from Bragg the kinematical limit: 1 - sin^2(pi t s) / s^2.
    np.testing.assert_allclose(tem.bright_field(np.array([40.0]), np.array([1.3])),
                               1 - np.sin(np.pi * 1.3 * np.sqrt(1601.0)) ** 2 / 1601.0, atol=1e-12)


def test_thickness_fringes_at_an_inclined_boundary_and_no_boundary_line():
    g = np.zeros((48, 48), np.int32)
    g[:, 24:] = 1
    for seed in range(4):
        img = tem.render(np.random.default_rng(seed), g, PARAMS)[..., 0]
        row = img[24, 12:36]  # across the inclined-boundary band
        d = np.diff(row)
        d = d[np.abs(d) > 0.02]
        assert np.sum(np.sign(d[1:]) != np.sign(d[:-1])) >= 2, seed  # fringes: oscillation, not one step
        assert img[:, 12:36].std(axis=1).mean() > 10 * max(img[:, :4].std(), img[:, -4:].std())
    # Without an inclined band (tiny incline) the two grains meet with no line of their own: the labelled
    # pixels lie between the two grains' levels.
    img = tem.render(np.random.default_rng(0), g, dict(PARAMS, incline_px=0.5))[..., 0]
    left, right, on = img[:, :20].mean(), img[:, 28:].mean(), img[:, 23:25].mean()
    assert min(left, right) - 0.02 <= on <= max(left, right) + 0.02
