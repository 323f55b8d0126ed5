"""The three recipes at the top of fl/algorithms/__init__.py, style/techniques/__init__.py and
data/labs/__init__.py (docs/ARCHITECTURE.md), followed literally: a toy algorithm, a toy style technique and a
toy lab module are written to a temporary directory, registered with one line each, and run (one jitted
federated round; one render of a tiny batch and its privacy-audit declaration; two rendered micrographs). Nothing else is edited:
the config checks, the experiment config and the contract tests pick them up through the registries."""

import importlib
import importlib.util
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fedtransfer_jax.data import labs, synthetic
from fedtransfer_jax.data.microstructure import boundary_map
from fedtransfer_jax.runs import engine
from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.style import federated
from fedtransfer_jax.style import techniques
from fl_toy import A, B, LR, quad_loss, run
from style_toy import S, toy_clients, toy_lab

REPO = Path(__file__).resolve().parents[1]
BUILTIN_LABS = ("brightfield", "darkfield", "sem", "tint", "lowcontrast")
REGISTERED_LABS = synthetic.LAB_NAMES  # the built-ins, then data/labs/ in registration order

# Step 1 of "how to add an algorithm": a module with DEFAULTS and build(name, local, hparams, client_lr, key).
TOY_ALGORITHM = '''
    """FedAvg with a server step size on the mean delta: a toy that shows the recipe (no paper)."""

    from fedtransfer_jax.fl.algorithms import base

    DEFAULTS = {"step": 0.5}  # fraction of the mean client delta the server applies


    def build(name, local, hparams, client_lr, key):
        del client_lr, key
        step = hparams["step"]

        def client_update(params, state, data, client_id, rng):
            new, loss = base.run_local_training(local, params, data, client_id, rng)
            return base.ClientOutput(base.tree_sub(new, params), base.num_examples(data), state, loss)

        return base.Algorithm(
            name=name,
            server_init=base.fresh_copy,
            client_init=lambda params: (),
            broadcast=lambda params: params,
            client_update=client_update,
            server_update=lambda params, mean, info: base.tree_add(params, base.tree_scale(mean, step)),
            get_params=lambda params: params,
            message_template=lambda params: params,
        )
'''

# Step 1 of "how to add a style technique": one module with DEFAULTS and make(cfg) -> StyleTechnique.
TOY_STYLE = '''
    """Mean-colour transfer: a toy that shows the recipe. A client shares the mean colour of K images; a
    render shifts each image's mean colour to a drawn style of its target lab."""

    from fedtransfer_jax.style.techniques.base import StyleAudit, StyleTechnique, pick_styles, stack_messages

    DEFAULTS = {"toy_strength": 1.0}  # fraction of the colour shift applied


    def make(cfg):
        strength = float(cfg.get("toy_strength", DEFAULTS["toy_strength"]))

        def client_message(shared, images, labels, mask, key):
            del shared, labels, key
            return {"toy_mean": images.mean(axis=(1, 2)), "valid": mask.astype(bool)}

        def render(shared, bank, images, labels, targets, key):
            del shared, labels
            target = pick_styles(bank, targets, key)["toy_mean"]
            return images + strength * (target - images.mean(axis=(1, 2)))[:, None, None, :]

        return StyleTechnique(
            name="toy_colour",
            init_shared=lambda key, tile: None,
            shared_loss=None,
            client_message=client_message,
            build_bank=stack_messages,
            render=render,
            info={"kind": "toy", "toy_strength": strength},
        )


    def make_audit(cfg, *, seed, image_size):
        del cfg, seed, image_size
        mean = lambda image: image.mean(axis=(0, 1))
        return StyleAudit(
            message=lambda image, label: {"toy_mean": mean(image)},
            statistics=lambda image: {"toy_mean": mean(image)},
            what_is_sent={"toy_colour": "the mean colour of each shared tile (3 floats)"},
        )
'''


# Step 1 of "how to add a lab": one module with RANGES, render, SPEC (and distort if the instrument moves
# geometry), written from the physics of the technique.
TOY_LAB = '''
    """Polarised light on anodised aluminium, reduced to a toy: every grain takes one flat grey level from
    its orientation, there is no boundary line, so boundaries exist only as steps between grains."""

    import numpy as np

    from fedtransfer_jax.data.synthetic import LabSpec

    RANGES = {"spread": (0.3, 0.6), "noise": (0.0, 0.02)}  # grey-level spread between grains; sensor noise


    def render(rng, grains, params):
        levels = 0.5 + params["spread"] * (rng.random(int(grains.max()) + 1) - 0.5)
        img = levels[grains] + params["noise"] * rng.standard_normal(grains.shape)
        return np.repeat(np.clip(img, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


    SPEC = LabSpec("toy_polarised", style="toy_polarised", method="voronoi", diameter_px=(6.0, 9.0))
'''


def _write_module(directory: Path, name: str, source: str):
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return importlib.import_module(name)


@pytest.fixture
def toy_algorithm(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _write_module(tmp_path, "toy_step", TOY_ALGORITHM)
    algorithms.register("toy_step", module)  # step 2: the one registry line
    yield module
    algorithms.unregister("toy_step")
    sys.modules.pop("toy_step", None)


@pytest.fixture
def toy_style(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _write_module(tmp_path, "toy_colour", TOY_STYLE)
    techniques.register("toy_colour", module)  # step 2: the one registry line
    yield module
    techniques.unregister("toy_colour")
    sys.modules.pop("toy_colour", None)


def _grains_config(variant):
    spec = importlib.util.spec_from_file_location("_grains_recipe", REPO / "experiments" / "grains.py")
    grains = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grains)
    return grains, grains.get_config(variant)


def test_add_an_algorithm(toy_algorithm):
    assert "toy_step" in algorithms.NAMES
    # One jitted round: one full-batch local SGD step per client, then half the mean delta.
    local = algorithms.LocalTraining(quad_loss, optax.sgd(LR), local_steps=1, batch_size=1)
    alg = algorithms.build_algorithm("toy_step", local, {"step": 0.5})
    state, hist = run(alg, 1)
    w0 = np.zeros(2)
    mean_delta = np.mean([-LR * a @ (w0 - b) for a, b in zip(A, B)], axis=0)
    np.testing.assert_allclose(state.server["w"], w0 + 0.5 * mean_delta, rtol=1e-5, atol=1e-7)
    assert int(hist[0]["num_survivors"]) == 4
    # The config side: a method spec may name it, its hyper-parameters are checked against DEFAULTS.
    grains, _ = _grains_config("tiny")
    assert grains.method("toy_step")["hparams"] == {"step": 0.5}
    config = ml_collections.ConfigDict({"method_specs": {"toy": grains.method("toy_step", step=0.1)}})
    assert engine.method_spec(config, "toy").hparams == {"step": 0.1}
    bad = {"method_specs": {"toy": {"algorithm": "toy_step", "hparams": {"mu": 1.0}}}}
    with pytest.raises(ValueError, match=r"method_specs\.toy\.hparams\.mu"):
        engine.method_spec(ml_collections.ConfigDict(bad), "toy")


def test_add_a_style_technique(toy_style):
    assert "toy_colour" in techniques.TECHNIQUE_NAMES
    # Its keys join config.style with their defaults; the other keys keep theirs.
    _, config = _grains_config("tiny")
    assert config.style.toy_strength == 1.0 and config.style.gen_profile_px == 6
    method = techniques.get_technique("toy_colour", config.style)
    bank, _ = federated.share_styles(method, None, toy_clients(), k=3, seed=0)  # messages checked there
    x, y = toy_lab("dark", 7, 3, S)
    targets = jnp.asarray([1, 0, 1], jnp.int32)
    out = jax.jit(method.render)(None, bank, jnp.asarray(x), jnp.asarray(y), targets, jax.random.PRNGKey(0))
    assert out.shape == (3, S, S, 3)
    means = np.asarray(out).mean(axis=(1, 2))  # strength 1: each image takes one of its target's colours
    for i, t in enumerate(np.asarray(targets)):
        styles = np.asarray(bank.styles["toy_mean"][t])
        assert np.min(np.abs(styles - means[i]).max(-1)) < 1e-5
    # A method spec may name it.
    specs = ml_collections.ConfigDict({"method_specs": {"m": {"algorithm": "fedavg", "style": "toy_colour"}}})
    assert engine.method_spec(specs, "m").style == "toy_colour"


@pytest.fixture
def toy_lab_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _write_module(tmp_path, "toy_polarised", TOY_LAB)
    labs.register(module)  # step 2: the one registry line
    yield module
    labs.unregister("toy_polarised")
    sys.modules.pop("toy_polarised", None)


def test_add_a_lab(toy_lab_module):
    assert synthetic.LAB_NAMES == REGISTERED_LABS + ("toy_polarised",)
    images, labels, grains = synthetic.make_lab_examples("toy_polarised", 2, size=32, seed=0)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    for lab, g in zip(labels, grains):  # the labels are exactly the grain map's boundaries
        np.testing.assert_array_equal(lab, boundary_map(g, 2))
    # Deterministic, and a new lab leaves the existing labs' images unchanged (they keep their index).
    again = synthetic.make_lab_examples("toy_polarised", 2, size=32, seed=0)[0]
    np.testing.assert_array_equal(images, again)
    # Its identity (grain sizes, imaging ranges) is described like any lab's.
    assert synthetic.describe_lab("toy_polarised")["style_params"] == toy_lab_module.RANGES


def test_registries_are_back_to_the_builtins():
    assert "toy_step" not in algorithms.NAMES and "toy_colour" not in techniques.TECHNIQUE_NAMES
    assert synthetic.LAB_NAMES == REGISTERED_LABS and REGISTERED_LABS[: len(BUILTIN_LABS)] == BUILTIN_LABS
