"""What every registered style technique (style.techniques) promises, on tiny shapes (16 px): defaults that are
exactly the ``config.style`` keys it reads, a build from them alone, statistics-only client messages, a
deterministic jitted render that keeps the batch's shape, and config errors that name the key. A newly
registered method is tested here without edits."""

import chex
import jax
import jax.numpy as jnp
import pytest

from fedtransfer_jax.style import techniques
from fedtransfer_jax.style.techniques import (
    TECHNIQUE_NAMES,
    StyleBank,
    StyleTechnique,
    check_message,
    config_defaults,
    get_technique,
)
from style_toy import S, built, toy_lab


class _Recorder:
    """A ``config.style`` that answers every key with its default and remembers what was asked."""

    def __init__(self):
        self.keys = set()

    def get(self, key, default=None):
        self.keys.add(key)
        return default


@pytest.mark.parametrize("name", TECHNIQUE_NAMES)
def test_defaults_are_the_keys_it_reads_and_build_alone(name):
    module = techniques.REGISTRY[name]
    assert isinstance(module.DEFAULTS, dict) and module.DEFAULTS
    assert config_defaults().items() >= module.DEFAULTS.items()  # the config section offers every key
    cfg = _Recorder()
    m = module.make(cfg)
    assert cfg.keys == set(module.DEFAULTS)
    assert isinstance(get_technique(name), StyleTechnique) and m.name == name


@pytest.mark.parametrize("name", TECHNIQUE_NAMES)
def test_method_contract(name):
    m, shared, bank, msgs, _ = built(name)
    assert isinstance(m, StyleTechnique) and m.name == name
    for msg in msgs:  # statistics only, never a picture
        check_message(msg, (S, S))
        assert msg["valid"].shape == (3,)
    assert isinstance(bank, StyleBank) and bank.valid.shape == (2, 3)
    x, y = toy_lab("dark", 7, 3, S)
    targets = jnp.asarray([1, 0, 1], jnp.int32)
    render = jax.jit(m.render)
    out = render(shared, bank, jnp.asarray(x), jnp.asarray(y), targets, jax.random.PRNGKey(0))
    chex.assert_shape(out, (3, S, S, 3))
    chex.assert_type(out, jnp.float32)
    chex.assert_tree_all_finite(out)
    again = render(shared, bank, jnp.asarray(x), jnp.asarray(y), targets, jax.random.PRNGKey(0))
    chex.assert_trees_all_equal(out, again)  # deterministic per key


@pytest.mark.parametrize("name", TECHNIQUE_NAMES)
def test_unknown_setting_names_the_key(name):
    with pytest.raises(ValueError, match=rf"config key style\.not_a_key: style technique '{name}'"):
        techniques.resolve_config(name, {"not_a_key": 1})


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown"):
        get_technique("nope", {})
