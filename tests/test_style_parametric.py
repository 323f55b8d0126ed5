"""style.labelmaps and style.parametric (the `gen` method's imaging model): numerics against scipy / numpy
references, polarity and geometry of rendered label maps. Tiny shapes (16-32 px)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from fedtransfer_jax.metrics.grains import adjusted_rand_index
from fedtransfer_jax.style import labelmaps, parametric
from style_toy import toy_lab, voronoi_labels


def test_grain_ids_match_scipy_components():
    labels, _ = voronoi_labels(0, 3, 24)
    labels[0, :, 11:13] = 1  # a straight wall: splits cells
    ids = np.asarray(jax.jit(jax.vmap(labelmaps.grain_ids))(jnp.asarray(labels)))
    chex.assert_shape(ids, (3, 24, 24))
    for lab, g in zip(labels, ids):
        ref, k = ndimage.label(lab == 0)  # 4-connected interior components
        interior = lab == 0
        assert adjusted_rand_index(g[interior], ref[interior]) == 1.0
        assert len(np.unique(g)) == k  # boundary pixels joined an adjacent grain, no new ids
        assert np.all((g >= 0) & (g < 24 * 24))


def test_grain_ids_degenerate_maps():
    all_b = labelmaps.grain_ids(jnp.ones((8, 8), jnp.uint8))
    np.testing.assert_array_equal(all_b, 0)
    none = np.asarray(labelmaps.grain_ids(jnp.zeros((8, 8), jnp.uint8)))
    assert len(np.unique(none)) == 1


def test_distance_bins_hand_case():
    lab = np.zeros((7, 7), np.uint8)
    lab[3, 3] = 1
    d = np.asarray(labelmaps.distance_bins(jnp.asarray(lab), 3))
    assert d[3, 3] == 0 and d[3, 4] == 1 and d[2, 2] == 2  # 4-step then 8-step dilation
    assert d[3, 5] == 2 and d[0, 0] == 3 and d.max() == 3
    np.testing.assert_array_equal(labelmaps.distance_bins(jnp.zeros((5, 5), jnp.uint8), 4), 4)


def test_gaussian_blur_matches_scipy_reflect():
    x = np.random.default_rng([1]).random((20, 20, 3)).astype(np.float32)
    got = np.asarray(parametric.gaussian_blur(jnp.asarray(x), jnp.float32(1.2)))
    ref = ndimage.gaussian_filter(x, (1.2, 1.2, 0), mode="reflect")
    np.testing.assert_allclose(got[4:-4, 4:-4], ref[4:-4, 4:-4], atol=5e-3)  # spectral vs truncated kernel
    np.testing.assert_allclose(parametric.gaussian_blur(jnp.asarray(x), jnp.float32(0.0)), x, atol=1e-5)


def _fit(images, labels):
    return jax.jit(jax.vmap(lambda x, y: parametric.fit_style(x, y, profile_px=4)))(
        jnp.asarray(images), jnp.asarray(labels)
    )


def test_fit_recovers_tone_and_signed_profile():
    for polarity, level, edge in (("dark", 0.7, -0.4), ("bright", 0.1, 0.6)):
        x, y = toy_lab(polarity, 1, 4, 32)
        s = _fit(x, y)
        chex.assert_shape(s.profile, (4, 4, 3))
        chex.assert_shape(s.noise_psd, (4, 3, parametric.NUM_PSD_BINS, parametric.NUM_PSD_BINS))
        chex.assert_tree_all_finite(s)
        np.testing.assert_allclose(np.asarray(s.tone_mean).mean(), level, atol=0.03)
        # 2-px labelled band carries the whole edge offset; the profile beyond it is ~0.
        np.testing.assert_allclose(np.asarray(s.profile)[:, 0].mean(), edge, atol=0.06)
        assert np.abs(np.asarray(s.profile)[:, 2:]).max() < 0.05
        # White noise: a flat spectrum at the noise variance (the grey residual lies on one colour axis).
        bins = parametric._psd_bin_map(32, 32)
        noise_var = np.asarray(s.noise_psd).reshape(4, 3, -1)[:, :, bins].mean(axis=(2, 3)).sum(-1) / 3
        assert np.all((noise_var > 0.5 * 0.02**2) & (noise_var < 2.0 * 0.02**2)), noise_var


def test_render_polarity_geometry_and_determinism():
    labels, _ = voronoi_labels(5, 2, 32)
    render = jax.jit(jax.vmap(parametric.render_style))
    for polarity in ("dark", "bright"):
        x, y = toy_lab(polarity, 2, 2, 32)
        s = _fit(x, y)
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        out = render(s, jnp.asarray(labels), keys)
        chex.assert_shape(out, (2, 32, 32, 3))
        chex.assert_type(out, jnp.float32)
        chex.assert_tree_all_finite(out)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        chex.assert_trees_all_equal(out, render(s, jnp.asarray(labels), keys))
        assert not np.allclose(
            out, render(s, jnp.asarray(labels), jax.random.split(jax.random.PRNGKey(1), 2))
        )
        luma = np.asarray(out).mean(-1)
        on, far = labels == 1, np.asarray(jax.vmap(lambda l: labelmaps.distance_bins(l, 3))(labels)) >= 3
        diff = luma[on].mean() - luma[far].mean()
        assert (diff < -0.2) if polarity == "dark" else (diff > 0.3), (polarity, diff)
        # Geometry: an edge detector fires along the labelled boundaries, not inside the grains.
        gy, gx = np.gradient(luma, axis=(1, 2))
        grad = np.hypot(gx, gy)
        near = np.asarray(jax.vmap(lambda l: labelmaps.distance_bins(l, 3))(labels)) <= 1
        assert grad[near].mean() > 3 * grad[far].mean()


def test_random_dihedral_shading_is_a_symmetry_of_the_basis():
    coef = jnp.asarray(np.random.default_rng([3]).normal(size=(5, 3)), jnp.float32)
    basis = parametric._shading_basis(8, 8)
    field = (basis @ np.asarray(coef)).reshape(8, 8, 3)
    seen = set()
    for i in range(16):
        c = parametric.random_dihedral_shading(jax.random.PRNGKey(i), coef)
        f = (basis @ np.asarray(c)).reshape(8, 8, 3)
        candidates = [field, field[::-1], field[:, ::-1], field[::-1, ::-1]]
        candidates += [np.swapaxes(a, 0, 1) for a in candidates]
        match = [k for k, a in enumerate(candidates) if np.allclose(a, f, atol=1e-5)]
        assert match, i
        seen.add(match[0])
    assert len(seen) > 2


def test_dft_matmuls_match_numpy_fft():
    """The matmul DFT (used instead of jnp.fft: XLA:CPU's FFT fails inside rounds sharded over devices)."""
    from fedtransfer_jax.style import parametric as pm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 20, 17)).astype(np.float32)
    re, im = pm.dft2(jnp.asarray(x))
    ref = np.fft.fft2(x, axes=(1, 2))
    np.testing.assert_allclose(re, ref.real, atol=2e-5)
    np.testing.assert_allclose(im, ref.imag, atol=2e-5)
    y = ref * rng.uniform(size=(20, 17))
    back = pm.idft2_real(jnp.asarray(y.real, jnp.float32), jnp.asarray(y.imag, jnp.float32))
    np.testing.assert_allclose(back, np.real(np.fft.ifft2(y, axes=(1, 2))), atol=2e-6)
