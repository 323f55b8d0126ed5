"""The label-conditioned imaging model (style/techniques/gen.py): no shared model, and it renders each target
lab's boundary polarity. The imaging model itself is tested in tests/test_style_parametric.py."""

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.style.labelmaps import distance_bins
from fedtransfer_jax.style.techniques import TECHNIQUE_NAMES, config_defaults, gen, get_technique
from style_toy import S, built, voronoi_labels


def test_registered_with_its_config_keys():
    assert "gen" in TECHNIQUE_NAMES
    assert "gen_profile_px" in config_defaults() and "gen_profile_px" in gen.DEFAULTS
    assert get_technique("gen").name == "gen"  # cfg optional: all defaults


def test_gen_has_no_shared_model_and_renders_polarity():
    m, shared, bank, _, losses = built("gen")
    assert losses == []  # nothing to train
    assert shared is None and m.shared_loss is None
    labels, _ = voronoi_labels(11, 3, S)
    out = jax.jit(m.render)(
        None,
        bank,
        jnp.zeros((3, S, S, 3)),
        jnp.asarray(labels),
        jnp.asarray([0, 1, 0], jnp.int32),
        jax.random.PRNGKey(3),
    )
    luma = np.asarray(out).mean(-1)
    far = np.asarray(jax.vmap(lambda l: distance_bins(l, 3))(labels)) >= 2
    diff = [luma[i][labels[i] == 1].mean() - luma[i][far[i]].mean() for i in range(3)]
    assert diff[0] < -0.1 and diff[2] < -0.1, diff  # client 0 ('dark' lab): dark boundaries on bright
    assert diff[1] > 0.1, diff  # client 1 ('bright' lab): bright boundaries on black


def test_prior_bank_is_one_lab_of_broad_random_appearances():
    """The random-style control's styles: drawn from gen's prior (no data), every one renders in [0, 1] with
    the labels' geometry, and both boundary polarities and grey and colour appearances occur."""
    m = get_technique("gen")
    bank = m.prior_bank(jax.random.PRNGKey(0), 32)
    assert bank.valid.shape == (1, 32) and bool(bank.valid.all())
    again = m.prior_bank(jax.random.PRNGKey(0), 32)
    for k in bank.styles:
        np.testing.assert_array_equal(np.asarray(bank.styles[k]), np.asarray(again.styles[k]))
    labels, _ = voronoi_labels(5, 32, S)
    out = np.asarray(
        jax.jit(m.render)(
            None, bank, jnp.zeros((32, S, S, 3)), jnp.asarray(labels), jnp.zeros(32, jnp.int32), jax.random.PRNGKey(1)
        )
    )
    assert out.shape == (32, S, S, 3) and out.min() >= 0.0 and out.max() <= 1.0
    luma = out.mean(-1)
    far = np.asarray(jax.vmap(lambda l: distance_bins(l, 3))(labels)) >= 2
    diff = np.array([luma[i][labels[i] == 1].mean() - luma[i][far[i]].mean() for i in range(32)])
    assert (diff < -0.05).sum() >= 4 and (diff > 0.05).sum() >= 4, diff  # dark grooves and bright lines
    colourful = out.std(-1).mean((1, 2)) > 0.02
    assert 4 <= colourful.sum() <= 28, colourful  # grey and colour appearances


def test_random_targets_mode_draws_from_the_prior_lab():
    from fedtransfer_jax.style.techniques import TARGET_MODES, draw_targets  # noqa: PLC0415

    assert "random" in TARGET_MODES
    valid = jnp.ones((1, 8), bool)
    targets, has = draw_targets(valid, jnp.int32(3), 5, jax.random.PRNGKey(0), "random")
    assert np.asarray(targets).tolist() == [0] * 5 and bool(has)
