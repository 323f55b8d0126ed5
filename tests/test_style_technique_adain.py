"""AdaIN style sharing (style/techniques/adain.py): the shared style net trains its decoder only."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.style import federated
from fedtransfer_jax.style.techniques import TECHNIQUE_NAMES, adain, config_defaults
from style_toy import S, built


def test_registered_with_its_config_keys():
    assert "adain" in TECHNIQUE_NAMES
    d = config_defaults()
    for key in ("features", "padding", "alpha"):
        assert key in d and key in adain.DEFAULTS


def test_adain_shared_training_moves_decoder_only():
    m = built("adain")[0]
    init = m.init_shared(jax.random.fold_in(jax.random.PRNGKey(0), federated.TAG_INIT), S)
    trained = built("adain")[1]
    chex.assert_trees_all_close(trained["encoder"], init["encoder"])  # fixed random encoder
    moved = jax.tree_util.tree_map(
        lambda a, b: float(jnp.abs(a - b).max()), trained["decoder"], init["decoder"]
    )
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    losses = built("adain")[4]
    assert len(losses) == 1 and np.isfinite(losses[0])
