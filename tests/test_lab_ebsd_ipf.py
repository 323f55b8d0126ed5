"""The ebsd_ipf lab (data/labs/ebsd_ipf.py): IPF-Z colours, flat grains, indexing noise, coarse step."""

import numpy as np

from fedtransfer_jax.data import styles, synthetic
from fedtransfer_jax.data.labs import ebsd_ipf
from fedtransfer_jax.data.microstructure import boundary_map

LAB = "ebsd_ipf"
LUMA = np.array([0.299, 0.587, 0.114])


def test_renders_tiny_exact_labels_deterministic():
    images, labels, grains = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    assert images.shape == (3, 40, 40, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    for lab, g in zip(labels, grains):
        np.testing.assert_array_equal(lab, boundary_map(g, 2))
    again = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    for a, b in zip((images, labels, grains), again):
        np.testing.assert_array_equal(a, b)


def test_ipf_key():
    np.testing.assert_allclose(ebsd_ipf.ipf_colour(np.array([[0, 0, 1.0], [1, 0, 1.0], [1, 1, 1.0]])), np.eye(3), atol=1e-12)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 3))
    perm = v[:, [2, 0, 1]] * np.array([-1, 1, -1])  # a cubic symmetry operation: same colour
    np.testing.assert_allclose(ebsd_ipf.ipf_colour(v), ebsd_ipf.ipf_colour(perm), atol=1e-12)
    r = ebsd_ipf.random_rotations(rng, 20)
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), (20, 3, 3)), atol=1e-12)


def test_flat_grains_no_boundary_line_noise_near_boundaries():
    images, labels, grains = synthetic.make_lab_examples(LAB, 6, size=48, seed=1)
    wrong_interior, wrong_edge, on, off, grain_lums = [], [], [], [], []
    for img, lab, g in zip(images, labels, grains):
        dist, _ = styles.interface_distance(g)
        for gid in np.unique(g):
            m = g == gid
            if m.sum() < 30:
                continue
            med = np.median(img[m], axis=0)
            off_colour = np.abs(img - med).max(-1) > 0.1
            wrong_interior.append(off_colour[m & (dist >= 3)].mean() if (m & (dist >= 3)).any() else 0.0)
            wrong_edge.append(off_colour[m & (dist < 1)].mean())
            grain_lums.append(float(med @ LUMA))
        lum = img @ LUMA
        on.append(lum[lab == 1].mean())
        off.append(lum[lab == 0].mean())
    assert np.mean(wrong_interior) < 0.08  # each grain one colour apart from indexing noise
    assert np.mean(wrong_edge) > 2 * np.mean(wrong_interior)  # mis-indexing concentrates at boundaries
    assert abs(np.mean(on) - np.mean(off)) < 0.3 * np.std(grain_lums)  # no boundary line


def test_coarse_step_makes_blocks():
    g = np.random.default_rng(0).integers(0, 3, (4, 4)).repeat(5, 0).repeat(5, 1)
    g = np.asarray(g, np.int32)
    blocky = ebsd_ipf.distort(None, g, {"n_step": 2})
    np.testing.assert_array_equal(blocky[0::2, 0::2], blocky[1::2, 1::2])
    params = {k: float(lo) for k, (lo, hi) in ebsd_ipf.RANGES.items()} | {"n_step": 2.0}
    img = ebsd_ipf.render(np.random.default_rng(0), blocky, dict(params, spread=0.0))
    np.testing.assert_array_equal(img[0::2, 0::2], img[1::2, 1::2])  # one colour per grid point
