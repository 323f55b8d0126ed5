"""What every style technique shares (style/techniques/base.py): message checks, the generic bank, in-jit batch
mixing, and the standalone federated protocol (style.federated). Tiny shapes (16 px). Each method's own
tests: tests/test_style_method_<name>.py; the registry's contract: tests/test_style_technique_contract.py."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax.style import federated
from fedtransfer_jax.style.techniques import (
    StyleBank,
    StyleTechnique,
    check_message,
    get_technique,
    make_batch_transform,
    mix_batch,
    pick_styles,
    stack_messages,
)
from style_toy import S, toy_clients

def test_check_message_and_stack_messages():
    with pytest.raises(ValueError, match="image-shaped"):
        check_message({"leak": np.zeros((2, S, S, 3))}, (S, S))
    check_message({"ok": np.zeros((2, 7, 7, 3)), "v": np.zeros((2, 64))}, (S, S))
    bank = stack_messages([{"a": np.ones((2, 3))}, {"a": 2 * np.ones((1, 3)), "valid": np.array([True])}])
    chex.assert_shape(bank.styles["a"], (2, 2, 3))
    np.testing.assert_array_equal(bank.valid, [[True, True], [True, False]])
    with pytest.raises(KeyError):
        stack_messages([{"a": np.ones((1, 3))}, {"b": np.ones((1, 3))}])
    with pytest.raises(ValueError, match="per-style shapes"):
        stack_messages([{"a": np.ones((1, 3))}, {"a": np.ones((1, 4))}])
    # pick_styles never draws a padding slot
    bank = StyleBank(
        {"a": jnp.asarray([[[0.0], [1.0]], [[2.0], [9.0]]])}, jnp.asarray([[True, True], [True, False]])
    )
    picked = jax.vmap(lambda k: pick_styles(bank, jnp.asarray([1]), k)["a"])(
        jax.random.split(jax.random.PRNGKey(0), 50)
    )
    np.testing.assert_array_equal(np.asarray(picked), 2.0)


def _stub_method():
    """render() paints every pixel (target + 1) / 10: shows which foreign client was drawn."""

    def render(shared, bank, images, labels, targets, key):
        return jnp.broadcast_to(((targets + 1) / 10.0)[:, None, None, None], images.shape).astype(
            images.dtype
        )

    return StyleTechnique("stub", lambda k, t: None, None, None, stack_messages, render)


@pytest.mark.parametrize("mix_prob", [0.0, 0.5, 1.0])
def test_mix_batch_replaces_a_fraction_with_foreign_styles(mix_prob):
    m = _stub_method()
    bank = StyleBank(
        {"a": jnp.zeros((3, 1, 1))}, jnp.asarray([[True], [True], [False]])
    )  # client 2 shares none
    batch = {
        "images": jnp.zeros((8, 4, 4, 3)),
        "labels": jnp.ones((8, 4, 4), jnp.uint8),
        "mask": jnp.ones(8, bool),
    }
    fn = jax.jit(lambda b, c, k: mix_batch(m, None, bank, b, c, k, mix_prob))
    for client in range(3):
        out = fn(batch, jnp.int32(client), jax.random.PRNGKey(client))
        chex.assert_trees_all_equal(out["labels"], batch["labels"])  # labels never change
        v = np.asarray(out["images"])[:, 0, 0, 0]
        changed = v > 0
        assert changed.sum() == round(mix_prob * 8)
        drawn = np.round(v[changed] * 10 - 1).astype(int)
        assert np.all(drawn != client) and np.all(drawn != 2)  # foreign and sharing at least one style


def test_mix_batch_own_targets_is_the_no_sharing_control():
    """targets_mode='own' renders every mixed example in the client's own style (and leaves a client that
    shares none unchanged); an unknown mode fails at set-up with the mode named."""
    m = _stub_method()
    bank = StyleBank({"a": jnp.zeros((3, 1, 1))}, jnp.asarray([[True], [True], [False]]))
    batch = {
        "images": jnp.zeros((8, 4, 4, 3)),
        "labels": jnp.ones((8, 4, 4), jnp.uint8),
        "mask": jnp.ones(8, bool),
    }
    fn = jax.jit(lambda b, c, k: mix_batch(m, None, bank, b, c, k, 0.5, "own"))
    for client in range(3):
        v = np.asarray(fn(batch, jnp.int32(client), jax.random.PRNGKey(client))["images"])[:, 0, 0, 0]
        if client == 2:
            assert np.all(v == 0)  # no own style shared: batch unchanged
        else:
            assert (v > 0).sum() == 4 and np.all(np.round(v[v > 0] * 10 - 1) == client)
    with pytest.raises(ValueError, match="'mine'"):
        make_batch_transform(m, None, bank, 0.5, "mine")


def test_mix_batch_vmaps_over_clients_and_keeps_batch_without_foreign_styles():
    m = _stub_method()
    lonely = StyleBank({"a": jnp.zeros((2, 1, 1))}, jnp.asarray([[True], [False]]))
    batch = {
        "images": jnp.zeros((4, 4, 4, 3)),
        "labels": jnp.zeros((4, 4, 4), jnp.uint8),
        "mask": jnp.ones(4, bool),
    }
    out = jax.jit(lambda b, k: mix_batch(m, None, lonely, b, jnp.int32(0), k, 1.0))(
        batch, jax.random.PRNGKey(0)
    )
    chex.assert_trees_all_equal(out["images"], batch["images"])  # client 0 has no foreign style to draw
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), batch)
    both = jax.jit(jax.vmap(lambda b, c, k: mix_batch(m, None, lonely, b, c, k, 1.0)))(
        stacked, jnp.arange(2, dtype=jnp.int32), jax.random.split(jax.random.PRNGKey(1), 2)
    )
    assert float(both["images"][0].max()) == 0.0 and float(both["images"][1].min()) == pytest.approx(0.1)


def test_share_styles_uses_only_k_real_examples_and_is_deterministic():
    clients = toy_clients(n_clients=2, n=4)
    clients[1]["mask"] = jnp.asarray([True, False, True, False])
    m = get_technique("fourier", {})
    bank, msgs = federated.share_styles(m, None, clients, k=3, seed=5)
    assert msgs[0]["fourier_amp"].shape[0] == 3 and msgs[1]["fourier_amp"].shape[0] == 2
    np.testing.assert_array_equal(bank.valid, [[True, True, True], [True, True, False]])
    bank2, _ = federated.share_styles(m, None, clients, k=3, seed=5)
    chex.assert_trees_all_equal(bank.styles, bank2.styles)
