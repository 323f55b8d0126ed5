"""The ceramic_sem lab (data/labs/ceramic_sem.py): bright thermal grooves (edge effect), unlabelled pores."""

import numpy as np

from fedtransfer_jax.data import synthetic
from fedtransfer_jax.data.labs import ceramic_sem
from fedtransfer_jax.data.microstructure import boundary_map

LAB = "ceramic_sem"


def test_renders_tiny_exact_labels_deterministic():
    images, labels, grains = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    assert images.shape == (3, 40, 40, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    for lab, g in zip(labels, grains):
        np.testing.assert_array_equal(lab, boundary_map(g, 2))  # pores are not labelled
    again = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    for a, b in zip((images, labels, grains), again):
        np.testing.assert_array_equal(a, b)


def test_bright_grooves_opposite_to_optical():
    images, labels, _ = synthetic.make_lab_examples(LAB, 4, size=48, seed=1)
    lum = images.mean(-1)
    assert lum[labels == 1].mean() > lum[labels == 0].mean() + 0.03
    bf_images, bf_labels, _ = synthetic.make_lab_examples("brightfield", 4, size=48, seed=1)
    bf = bf_images.mean(-1)
    assert bf[bf_labels == 1].mean() < bf[bf_labels == 0].mean()


def test_groove_and_pores():
    x = np.linspace(0, 6, 61)
    hgt = ceramic_sem.groove_height(x, 2.0, 1.0)
    assert hgt[0] == hgt.min() < -1.9 and hgt.max() > 0.2  # trough with a hump beside it (Mullins)
    g = np.zeros((20, 20), np.int32)
    g[:10, 10:], g[10:, :] = 1, 2
    np.testing.assert_array_equal(ceramic_sem.triple_junctions(g), [[9.5, 9.5]])
    params = {k: float(hi) for k, (lo, hi) in ceramic_sem.RANGES.items()} | {"n_streaks": 0.0, "line_noise": 0.0}
    big = np.zeros((64, 64), np.int32)
    img = ceramic_sem.render(np.random.default_rng(0), big, dict(params, pore_density=6.0, dose=1e6))[..., 0]
    flat = ceramic_sem.render(np.random.default_rng(0), big, dict(params, pore_density=0.0, dose=1e6))[..., 0]
    assert np.sum(img < 0.6 * np.median(flat)) > 4  # dark pore floors in a grain with no boundary at all
