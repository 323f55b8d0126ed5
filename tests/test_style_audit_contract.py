"""Every registered style technique declares what the privacy audit needs (style/techniques/base.py StyleAudit),
so that a new method cannot be silently left out of `fedtransfer_jax.privacy.audit`."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax.data.synthetic import make_lab_examples
from fedtransfer_jax.privacy.audit import run as audit_run
from fedtransfer_jax.style import techniques

SIZE = 16
CONFIG = {"seed": 0, "style": {"features": (4, 8)}}  # tiny AdaIN encoder: initialisers dominate compile time


@pytest.fixture(scope="module")
def tile():
    images, labels, _ = make_lab_examples("brightfield", 2, SIZE, 0)
    return jnp.asarray(images, jnp.float32), jnp.asarray(labels)


@pytest.mark.parametrize("name", techniques.TECHNIQUE_NAMES)
def test_every_registered_method_declares_a_usable_audit(name, tile):
    images, labels = tile
    a = techniques.get_style_audit(name, CONFIG["style"], seed=0, image_size=SIZE)
    assert isinstance(a, techniques.StyleAudit) and a.what_is_sent
    message = jax.jit(a.message)(images[0], labels[0])
    assert jax.tree_util.tree_leaves(message), "the message holds no arrays"
    # The property-inference attack vmaps the message over tiles.
    batched = jax.jit(jax.vmap(a.message))(images, labels)
    assert all(x.shape[0] == 2 for x in jax.tree_util.tree_leaves(batched))
    # The inversion attack differentiates its statistics with respect to the candidate image.
    target = message if a.target is None else a.target(message)
    if a.context is None:
        stats = lambda x: a.statistics(x)  # noqa: E731
    else:
        context = a.context(message, labels[1])  # the attacker's guessed label
        stats = lambda x: a.statistics(x, context)  # noqa: E731
    assert jax.tree_util.tree_structure(jax.eval_shape(stats, images[1])) == jax.tree_util.tree_structure(target)
    loss = lambda x: sum(jnp.sum(jnp.square(s)) for s in jax.tree_util.tree_leaves(stats(x)))  # noqa: E731
    g = np.asarray(jax.jit(jax.grad(loss))(images[1]))
    assert g.shape == images[1].shape and np.isfinite(g).all() and np.abs(g).max() > 0


def test_the_audit_asks_every_registered_method():
    audits = audit_run.style_audits(CONFIG, SIZE)
    assert list(audits) == list(techniques.TECHNIQUE_NAMES)


def test_a_method_without_an_audit_declaration_is_rejected(monkeypatch):
    toy = types.SimpleNamespace(DEFAULTS={}, make=lambda cfg: None)  # a style technique module, no make_audit
    monkeypatch.setitem(techniques.REGISTRY, "toy", toy)
    monkeypatch.setattr(techniques, "TECHNIQUE_NAMES", techniques.TECHNIQUE_NAMES + ("toy",))
    with pytest.raises(TypeError, match="style technique 'toy' declares no privacy audit.*make_audit"):
        techniques.get_style_audit("toy", {}, seed=0, image_size=SIZE)
    with pytest.raises(TypeError, match="'toy' declares no privacy audit"):  # the audit does not skip it
        audit_run.style_audits(CONFIG, SIZE)


def test_a_malformed_audit_declaration_is_rejected(monkeypatch):
    toy = types.SimpleNamespace(DEFAULTS={}, make=lambda cfg: None, make_audit=lambda cfg, **kw: {"message": None})
    monkeypatch.setitem(techniques.REGISTRY, "toy", toy)
    with pytest.raises(TypeError, match="make_audit must return a StyleAudit"):
        techniques.get_style_audit("toy", {}, seed=0, image_size=SIZE)
    no_text = techniques.StyleAudit(message=lambda x, y: x.mean(), statistics=lambda x: x.mean(), what_is_sent={})
    monkeypatch.setattr(toy, "make_audit", lambda cfg, **kw: no_text)
    with pytest.raises(TypeError, match="what_is_sent must describe the message"):
        techniques.get_style_audit("toy", {}, seed=0, image_size=SIZE)


def test_registering_a_module_without_an_audit_declaration_fails():
    toy = types.SimpleNamespace(__name__="toy_module", DEFAULTS={}, make=lambda cfg: None)
    with pytest.raises(TypeError, match="toy_module defines no make_audit"):
        techniques.register("toy", toy)
    assert "toy" not in techniques.REGISTRY
