"""scripts/style_checks.py: pieces against hand-computed / numpy references, then main() end to end on a
tiny trained workdir (one module-scoped run of the trainer)."""

import importlib.util
import json
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from fedtransfer_jax import style as style_lib
from fedtransfer_jax import train
from fedtransfer_jax.style import sharing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import grains  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "style_checks", os.path.join(REPO, "scripts", "style_checks.py")
)
style_checks = importlib.util.module_from_spec(_spec)
sys.modules["style_checks"] = style_checks  # flax dataclass modules must be importable by name
_spec.loader.exec_module(style_checks)


# ----------------------------------------------------------------------------------------------------------
# Pure pieces.
# ----------------------------------------------------------------------------------------------------------
def test_relative_drop_hand_cases():
    assert style_checks.relative_drop(0.8, 0.72) == pytest.approx(0.1)
    assert style_checks.relative_drop(0.5, 0.6) == pytest.approx(-0.2)
    assert style_checks.relative_drop(0.0, 0.0) == 0.0
    assert style_checks.relative_drop(0.0, 0.3) == -np.inf


def _bank(valid):
    valid = np.asarray(valid, bool)
    c, k = valid.shape
    return style_lib.StyleBank(
        adain_mean=jnp.arange(c * k, dtype=jnp.float32).reshape(c, k, 1),
        adain_std=jnp.ones((c, k, 1)),
        fourier_amp=jnp.zeros((c, k, 1, 1, 3)),
        valid=jnp.asarray(valid),
    )


def test_pick_target_styles_only_valid_and_deterministic():
    bank = _bank([[1, 1, 1], [0, 1, 1]])
    slots = style_checks.pick_target_styles(bank, 1, 200, seed=3, source=0)
    assert set(slots.tolist()) == {1, 2}  # both valid slots drawn, the padding slot never
    np.testing.assert_array_equal(slots, style_checks.pick_target_styles(bank, 1, 200, seed=3, source=0))
    assert not np.array_equal(slots, style_checks.pick_target_styles(bank, 1, 200, seed=4, source=0))
    with pytest.raises(ValueError, match="client 0"):
        style_checks.pick_target_styles(_bank([[0, 0], [1, 1]]), 0, 4, seed=0, source=1)


def test_in_fixed_batches_matches_direct_call_with_one_compilation():
    traces = []

    @jax.jit
    def fn(x, y):
        traces.append(1)
        return x * 2.0 + y

    x = np.arange(11 * 2, dtype=np.float32).reshape(11, 2)
    y = np.ones((11, 2), np.float32)
    out = style_checks.in_fixed_batches(fn, x, y, batch=4)
    chex.assert_shape(out, (11, 2))
    np.testing.assert_allclose(out, x * 2.0 + 1.0)
    assert len(traces) == 1  # the ragged last batch is padded, not recompiled


def test_fourier_restyler_imposes_target_low_frequency_amplitude():
    """lam = 1: inside the window the restyled image's amplitude is the target's (numpy FFT reference)."""
    config = grains.get_config("tiny")
    rng = np.random.default_rng([0, 1])
    # Smooth-ish images with mid-grey level so that clipping to [0, 1] stays inactive.
    imgs = (0.5 + 0.05 * rng.standard_normal((2, 3, 32, 32, 3))).astype(np.float32)
    mask = np.ones((2, 3), bool)
    bank = style_checks.build_style_bank(config, imgs, mask, "fourier")
    restyle = style_checks.make_restyler("fourier", config, bank)
    out = restyle(imgs[0], 0, 1)
    chex.assert_shape(out, (3, 32, 32, 3))
    slots = style_checks.pick_target_styles(bank, 1, 3, int(config.seed), 0)
    b = style_lib.window_radius(32, 32, config.style.fourier_beta)
    amp = np.abs(np.fft.fftshift(np.fft.fft2(out.astype(np.float64), axes=(1, 2)), axes=(1, 2)))
    win = amp[:, 16 - b : 16 + b + 1, 16 - b : 16 + b + 1]
    shared = sharing.style_sample(
        mask[1], config.style.styles_per_client, config.seed, 1
    )  # bank slot -> image
    ref = np.abs(
        np.fft.fftshift(np.fft.fft2(imgs[1][shared[slots]].astype(np.float64), axes=(1, 2)), axes=(1, 2))
    )
    np.testing.assert_allclose(win, ref[:, 16 - b : 16 + b + 1, 16 - b : 16 + b + 1], rtol=1e-3, atol=1e-2)


def test_check_variant_counts_against_hand_computed_case():
    """Two clients; a stub classifier that sees the 'style' in the first pixel and a stub segmenter."""
    names = ["a", "b"]
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 4, :] = 1
    test = {
        "a": (np.zeros((2, 8, 8, 3), np.float32), labels),
        "b": (np.ones((3, 8, 8, 3), np.float32), np.concatenate([labels, labels[:1]])),
    }

    def restyle(images, s, t):  # a -> b succeeds on the first image only; b -> a always succeeds
        out = np.full_like(images, float(t))
        if s == 0:
            out[1:] = 0.0
        return out

    classify = lambda images: (images[:, 0, 0, 0] > 0.5).astype(int)
    # Segmenter: perfect on style 0 images, predicts nothing on style 1 images.
    seg = lambda images: np.where(
        images[:, :, :, :1].mean(axis=(1, 2, 3))[:, None, None] > 0.5,
        0.0,
        np.tile(labels[:1], (len(images), 1, 1)).astype(np.float32),
    )
    f1_orig = {"a": np.ones(2), "b": np.array([0.0, 0.0, 0.0])}
    out = style_checks.check_variant(
        restyle, names, test, classify, seg, f1_orig, threshold=0.5, tolerance=1.0
    )
    assert out["n_restyled"] == 5
    assert out["target_fraction"] == pytest.approx(4 / 5)  # 1 of a->b + 3 of b->a
    assert out["source_fraction"] == pytest.approx(1 / 5)
    assert out["target_fraction_matrix"] == {"a": {"b": 0.5}, "b": {"a": 1.0}}
    # a->b: image 0 styled as b -> F1 0, image 1 unchanged -> 1; b->a: all style 0 -> perfect F1 1.
    assert out["f1_matrix"] == {"a": {"b": 0.5}, "b": {"a": 1.0}}
    assert out["f1_original"] == pytest.approx(2 / 5)
    assert out["f1_restyled"] == pytest.approx(4 / 5)
    assert out["f1_relative_drop"] == pytest.approx(-1.0)
    assert out["meets_domain_goal"] and out["meets_structure_goal"]
    # Into b: only a's tiles (orig F1 1, 1; restyled 0, 1). Into a: b's tiles (orig 0, 0, 0; restyled 1, 1, 1).
    assert out["per_target"]["b"] == pytest.approx(
        {"target_fraction": 0.5, "f1_original": 1.0, "f1_restyled": 0.5, "f1_relative_drop": 0.5}
    )
    assert out["per_target"]["a"] == pytest.approx(
        {"target_fraction": 1.0, "f1_original": 0.0, "f1_restyled": 1.0, "f1_relative_drop": -np.inf}
    )


def test_domain_classifier_separates_two_brightness_levels():
    rng = np.random.default_rng([0, 2])
    x = np.concatenate([0.2 + 0.05 * rng.random((8, 16, 16, 3)), 0.8 + 0.05 * rng.random((8, 16, 16, 3))])
    y = np.repeat([0, 1], 8)
    model, params = style_checks.train_domain_classifier(
        x.astype(np.float32), y, 2, jax.random.PRNGKey(0), steps=40, batch=8, lr=1e-2
    )
    pred = style_checks.make_classify(model, params)(x)
    np.testing.assert_array_equal(pred, y)


# ----------------------------------------------------------------------------------------------------------
# End to end.
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    """A tiny trained run with only the methods the checks read (the segmenter and the style net)."""
    workdir = str(tmp_path_factory.mktemp("style_run"))
    config = grains.get_config("tiny")
    config.methods = ("fedtransfer", "centralized")
    config.figures = False
    train.train_and_evaluate(config, workdir)
    return workdir


def test_restored_style_net_is_the_trainers(tiny_workdir):
    config = style_checks.load_config(tiny_workdir)
    _, init = style_checks.style_net_from_config(config)
    params, step = style_checks.restore_style_params(tiny_workdir, config, init)
    assert step == config.style.rounds
    chex.assert_trees_all_equal_shapes(params, init)
    # The frozen encoder is the trainer's initialisation, so our init reproduces the trainer's key.
    chex.assert_trees_all_close(params["encoder"], init["encoder"])
    diff = jax.tree_util.tree_map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), params["decoder"], init["decoder"]
    )
    assert max(jax.tree_util.tree_leaves(diff)) > 0  # the decoder was trained
    other = style_lib.init_style_net(style_lib.StyleNet(features=(4, 8)), jax.random.PRNGKey(0), 32)
    with pytest.raises(ValueError, match="older version"):
        style_checks.restore_style_params(tiny_workdir, config, other)
    with pytest.raises(FileNotFoundError, match="no_such_tag"):
        style_checks.restore_style_params(tiny_workdir, config, init, "no_such_tag")


def test_main_end_to_end(tiny_workdir, capsys):
    argv = ["style_checks", f"--workdir={tiny_workdir}", "--classifier_steps=30"]
    flags.FLAGS(argv)
    try:
        style_checks.main(argv[:1])
    finally:
        flags.FLAGS.unparse_flags()
    printed = capsys.readouterr().out
    assert "adain_untrained" in printed and "wrote" in printed

    with open(os.path.join(tiny_workdir, "style_checks.json")) as f:
        report = json.load(f)
    names = list(grains.get_config("tiny").data.clients)
    assert report["clients"] == names
    assert set(report["variants"]) == {"adain", "adain_untrained", "fourier"}
    clf = report["classifier"]
    for key in ("train_accuracy", "test_accuracy"):
        assert 0.0 <= clf[key] <= 1.0
    assert set(clf["per_client_test_accuracy"]) == set(names)
    for name, v in report["variants"].items():
        for key in ("target_fraction", "source_fraction", "f1_original", "f1_restyled"):
            assert 0.0 <= v[key] <= 1.0, (name, key, v[key])
        assert v["target_fraction"] + v["source_fraction"] <= 1.0 + 1e-9
        assert (
            v["n_restyled"] == len(names) * (len(names) - 1) * grains.get_config("tiny").data.test_per_client
        )
        assert set(v["target_fraction_matrix"]) == set(names)
        for src, row in v["target_fraction_matrix"].items():
            assert set(row) == set(names) - {src}
            assert all(0.0 <= x <= 1.0 for x in row.values())
        assert set(v["per_target"]) == set(names)
        assert all(0.0 <= d["target_fraction"] <= 1.0 for d in v["per_target"].values())
        assert isinstance(v["meets_domain_goal"], bool) and isinstance(v["meets_structure_goal"], bool)
    # F1 on the originals does not depend on the variant.
    assert len({v["f1_original"] for v in report["variants"].values()}) == 1
