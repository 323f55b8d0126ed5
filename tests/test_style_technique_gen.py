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
