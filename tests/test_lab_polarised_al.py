"""The polarised_al lab (data/labs/polarised_al.py): Jones-calculus interference colours, no boundary line."""

import numpy as np
from scipy import ndimage

from fedtransfer_jax.data import synthetic
from fedtransfer_jax.data.labs import polarised_al as pol
from fedtransfer_jax.data.microstructure import boundary_map

LAB = "polarised_al"
LUMA = np.array([0.299, 0.587, 0.114])


def test_renders_tiny_exact_labels_deterministic():
    images, labels, grains = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    assert images.shape == (3, 40, 40, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert np.abs(images[..., 0] - images[..., 2]).mean() > 0.05  # colour
    for lab, g in zip(labels, grains):
        np.testing.assert_array_equal(lab, boundary_map(g, 2))
    again = synthetic.make_lab_examples(LAB, 3, size=40, seed=0)
    for a, b in zip((images, labels, grains), again):
        np.testing.assert_array_equal(a, b)


def test_film_and_tint_plate_add_or_subtract():
    lam, plate, gamma = 550.0, 530.0, 120.0
    # Film slow axis parallel to the plate's (45 deg): retardations add; perpendicular: they subtract.
    par = pol.transmitted(np.array(np.pi / 4), np.array(gamma), plate, 0.0, lam)
    perp = pol.transmitted(np.array(-np.pi / 4), np.array(gamma), plate, 0.0, lam)
    np.testing.assert_allclose(par, np.sin(np.pi * (plate + gamma) / lam) ** 2, atol=1e-12)
    np.testing.assert_allclose(perp, np.sin(np.pi * (plate - gamma) / lam) ** 2, atol=1e-12)
    # A film whose axis lies along the polariser does nothing: the plate's colour alone.
    np.testing.assert_allclose(pol.transmitted(np.array(0.0), np.array(gamma), plate, 0.0, lam),
                               np.sin(np.pi * plate / lam) ** 2, atol=1e-12)


def test_no_boundary_line_and_rolled_grains():
    images, labels, grains = synthetic.make_lab_examples(LAB, 6, size=48, seed=2)
    on, off, grain_lums, aspect = [], [], [], []
    for img, lab, g in zip(images, labels, grains):
        lum = img @ LUMA
        on.append(lum[lab == 1].mean())
        off.append(lum[lab == 0].mean())
        grain_lums += [np.median(lum[g == k]) for k in np.unique(g)]
        for sl in ndimage.find_objects(g + 1):
            if sl is not None and (sl[0].stop - sl[0].start) < g.shape[0]:
                aspect.append((sl[1].stop - sl[1].start) / (sl[0].stop - sl[0].start))
    assert abs(np.mean(on) - np.mean(off)) < 0.3 * np.std(grain_lums)
    assert np.median(aspect) > 1.5  # elongated along the rolling direction (x)
