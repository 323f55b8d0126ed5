"""Privacy audit (fedtransfer_jax/audit.py): the attacks work where they must and the CLI writes its report."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax import audit
from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.data.synthetic import make_lab_examples
from fedtransfer_jax.style.fourier import low_freq_amplitude

SEED = 0


def _key(*path):
    k = jax.random.PRNGKey(SEED)
    for p in path:
        k = jax.random.fold_in(k, p)
    return k


@pytest.fixture(scope="module")
def lab16():
    images, labels, _ = make_lab_examples("brightfield", 6, 16, SEED)
    return images, labels


def test_scores_of_the_true_image_are_perfect_and_the_baseline_is_not(lab16):
    images, labels = lab16
    s = audit.score_reconstruction(
        images[0], images[0], labels[0], images[1:], boundary_fraction=0.3, beta=0.25
    )
    assert s["ssim"] == pytest.approx(1.0) and s["lowpass_corr"] == pytest.approx(1.0)
    assert s["amplitude_corr"] == pytest.approx(1.0) and s["psnr"] > 100
    assert s["baseline_ssim"] < 0.5 and s["baseline_lowpass_corr"] < 0.5
    assert audit.edge_map(images[0], 0.25).mean() == pytest.approx(0.25, abs=0.02)


def test_invert_statistics_recovers_what_a_generic_statistic_reveals(lab16):
    # A statistic that keeps the coarse layout (4x4 block means) must give the layout back: the optimiser and
    # the relative loss work for any stats_fn, and the low-pass correlation detects it.
    images, labels = lab16
    stats_fn = lambda x: x.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3))  # noqa: E731
    rec = audit.invert_statistics(
        stats_fn, stats_fn(jnp.asarray(images[0])), images.shape[1:], _key(1), steps=150, lr=0.1
    )
    s = audit.score_reconstruction(rec, images[0], labels[0], images[1:], boundary_fraction=0.3)
    assert s["lowpass_corr"] > 0.9 and s["lowpass_corr"] > s["baseline_lowpass_corr"] + 0.3


def test_inverting_fourier_amplitudes_recovers_the_low_frequency_content(lab16):
    images, labels = lab16
    beta = 0.25  # 16 px: a 5x5 window
    stats_fn = lambda x: low_freq_amplitude(x[None], beta)[0]  # noqa: E731
    rec = audit.invert_statistics(
        stats_fn, stats_fn(jnp.asarray(images[0])), images.shape[1:], _key(2), steps=150, lr=0.1
    )
    s = audit.score_reconstruction(
        rec, images[0], labels[0], images[1:], boundary_fraction=0.3, beta=beta, twin=True
    )
    assert s["amplitude_corr"] > 0.98 and s["amplitude_corr"] > s["baseline_amplitude_corr"] + 0.05
    # The mean colour (the DC term) is recovered exactly, which a random image of the lab does not give.
    err = np.abs(rec.mean((0, 1)) - images[0].mean((0, 1))).max()
    assert err < 0.02 and err < np.abs(images[1:].mean((1, 2)) - images[0].mean((0, 1))).max(1).mean()


def test_gradient_inversion_beats_the_lab_baseline_without_dp_and_not_with_strong_dp(lab16):
    images, labels = lab16
    _, params, loss_fn = audit.tiny_segmenter(16, SEED, features=(8,))  # one level: compiles in seconds
    scores, recovered = audit.gradient_inversion_audit(
        loss_fn, params, images, labels, _key(3), batch_sizes=(1,), noise_multipliers=(1.0,), steps=40
    )
    s = scores["batch1"]
    assert recovered["batch1/no_dp"].shape == (1, 16, 16, 3)
    no_dp, dp1, control = s["no_dp"], s["dp_z1"], s["control"]
    # Without DP the delta gives the image away: SSIM and layout beyond both the lab baseline and what the
    # known label alone gives (the control inverts pure noise).
    assert no_dp["ssim"] > max(no_dp["baseline_ssim"], control["ssim"]) + 0.15
    assert no_dp["lowpass_corr"] > max(no_dp["baseline_lowpass_corr"], control["lowpass_corr"]) + 0.3
    assert {"ssim", "lowpass_corr"} <= set(audit.leaked_scores(no_dp, control))
    # z = 1 with C = ||delta||: the noise norm is ~sqrt(#params) times the signal.
    assert dp1["ssim"] < no_dp["ssim"] - 0.15


def test_dp_release_clips_and_adds_noise_of_the_right_scale():
    delta = {"a": jnp.full((50, 40), 3.0), "b": jnp.full((7,), -1.0)}
    clip, z = 2.0, 0.5
    out = audit.dp_release(delta, clip, z, _key(4))
    clipped = jax.tree_util.tree_map(lambda x: x * clip / float(jnp.sqrt(50 * 40 * 9.0 + 7.0)), delta)
    noise = np.concatenate(
        [np.ravel(o - c) for o, c in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(clipped))]
    )
    assert abs(noise.std() / (z * clip) - 1) < 0.05 and abs(noise.mean()) < 0.05 * z * clip


def test_cli_writes_audit_json_and_markdown(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("grains", "experiments/grains.py")
    grains = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grains)
    io_utils.write_json_atomic(
        str(tmp_path / "config.json"), io_utils.config_to_json(grains.get_config("tiny"))
    )
    argv = [
        "--workdir",
        str(tmp_path),
        "--clients",
        "brightfield,darkfield",
        "--victims",
        "1",
        "--max_images",
        "3",
        "--style_steps",
        "10",
        "--gi_steps",
        "5",
        "--gi_size",
        "16",
        "--gi_batch_sizes",
        "1",
        "--noise_multipliers",
        "1.0",
        "--gi_features",
        "8",
        "--pi_tiles",
        "12",
        "--pi_permutations",
        "20",
    ]
    assert audit.main(argv) == 0
    report = json.loads((tmp_path / "audit.json").read_text())
    clients = ["brightfield", "darkfield"]  # the Potts labs (sem, lowcontrast) take longer to generate
    assert set(grains.get_config("tiny").data.clients) >= set(clients)
    assert sorted(report["style_inversion"]) == sorted(clients)
    assert set(report["style_inversion"][clients[0]]) == {
        "adain",
        "fourier",
        "adain/control",
        "fourier/control",
    }
    assert set(report["gradient_inversion"][clients[0]]["batch1"]) >= {"no_dp", "dp_z1", "control"}
    assert set(report["gen_inversion"][clients[0]]) == {"gen", "gen/control"}
    pi = report["property_inference"][clients[0]]
    assert pi["tiles"] == 12 and set(pi["methods"]) == {"adain", "fourier", "gen"}
    assert set(pi["methods"]["gen"]) == set(audit.PROPERTY_TARGETS)
    md = (tmp_path / "audit.md").read_text()
    assert "## (a) Inverting shared style statistics" in md and f"{clients[0]} / fourier" in md
    assert f"{clients[0]} / gen/control" in md and "## (c) Property inference" in md
    assert "style_message_gen" in md and "property inference (gen message)" in md
    assert "## What leaks (measured" in md and report["what_is_sent"]["model_delta"]
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())  # atomic writes left no temp files


def test_the_audit_recomputes_the_adain_statistics_clients_shared():
    # The clients' statistics come from the frozen encoder of init_style_net(fold_in(PRNGKey(seed), 0x57));
    # the audit initialises only the encoder, which must give the same vectors.
    from fedtransfer_jax.style.network import StyleNet, init_style_net

    config = {"seed": 3, "style": {"features": (4, 8)}}  # tiny: initialisers dominate the compile time
    fns, _ = audit.style_stats_fns(config, 8)
    net = StyleNet(features=(4, 8))
    params = jax.jit(lambda k: init_style_net(net, k, 8))(jax.random.fold_in(jax.random.PRNGKey(3), 0x57))
    x = jnp.asarray(make_lab_examples("darkfield", 1, 8, SEED)[0])
    mean, std = jax.jit(lambda p, x: net.apply({"params": p}, x, method=StyleNet.style_stats))(params, x)
    got = jax.jit(fns["adain"])(x[0])
    np.testing.assert_allclose(np.asarray(got["mean"]), np.asarray(mean[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["std"]), np.asarray(std[0]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------- gen message
def test_fit_style_is_differentiable_in_the_image_and_the_attack_form_equals_the_message():
    images, labels, _ = make_lab_examples("brightfield", 1, 16, SEED)  # colour: distinct eigenvalues
    fields = ("tone_mean", "profile", "blur")
    grads = audit.fit_style_gradients(images[0], labels[0], _key(5), fields=fields)
    assert grads == {"tone_mean": "finite, non-zero", "profile": "finite, non-zero", "blur": "zero"}
    # (blur is picked by argmin among candidates: gradient zero, the attack leaves it out.) The attacker's
    # smooth form of the message is the message itself when fitted with the true label and the image's own
    # colour axes (guards against fit_style drifting away from gen_attack_statistics).
    msg = jax.jit(audit.gen_message)(jnp.asarray(images[0]), jnp.asarray(labels[0]))
    context = audit.gen_attack_context(labels[0], msg["noise_basis"], 6)
    got = jax.jit(audit.gen_attack_statistics)(jnp.asarray(images[0]), context)
    want = audit.gen_invariants(msg)
    assert set(got) == set(want) == set(audit.GEN_MATCHED_FIELDS)
    for k in want:  # float32 least squares, compiled differently: equal to 1e-3 of the field's scale
        w = np.asarray(want[k])
        atol = 1e-3 * np.abs(w).max() + 1e-9
        np.testing.assert_allclose(np.asarray(got[k]), w, rtol=0, atol=atol, err_msg=k)


def test_the_gen_attack_objective_has_finite_nonzero_gradients_on_a_grey_lab():
    # darkfield is grey: the raw tone_sqrt has a non-finite gradient there; the attack's form must not.
    images, labels, _ = make_lab_examples("darkfield", 2, 16, SEED)
    grads = audit.fit_style_gradients(images[0], labels[0], _key(6), fields=("tone_sqrt",))
    assert grads == {"tone_sqrt": "non-finite"}
    msg = jax.jit(audit.gen_message)(jnp.asarray(images[0]), jnp.asarray(labels[0]))
    context = audit.gen_attack_context(labels[1], msg["noise_basis"], 6)
    target = audit.gen_invariants(msg)
    loss = lambda x: audit._relative_sq_error(audit.gen_attack_statistics(x, context), target)  # noqa: E731
    g = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(images[1])))
    assert np.isfinite(g).all() and np.abs(g).max() > 0


def test_gen_inversion_runs_end_to_end_and_is_scored():
    images, labels, _ = make_lab_examples("brightfield", 4, 16, SEED)
    scores, recovered = audit.gen_inversion_audit(images, labels, [0], _key(7), steps=20)
    assert set(scores) == {"gen", "gen/control"} and recovered["gen"].shape == (1, 16, 16, 3)
    assert np.isfinite(recovered["gen"]).all()
    for s in scores.values():
        assert s["n"] == 1
        for k in ("ssim", "psnr", "boundary_f1", "lowpass_corr"):
            assert np.isfinite(s[k]) and np.isfinite(s["baseline_" + k]) and "advantage_" + k in s
    with pytest.raises(ValueError, match=">= 3 images"):
        audit.gen_inversion_audit(images[:2], labels[:2], [0], _key(7), steps=2)


# ---------------------------------------------------------------------------------------- property inference
def test_grain_structure_counts_four_connected_grains():
    label = np.zeros((8, 8), np.uint8)
    label[3, :] = 1  # a horizontal and a vertical boundary line: 4 grains
    label[:, 5] = 1
    s = audit.grain_structure(label)
    assert s["n_grains"] == 4
    assert s["boundary_fraction"] == pytest.approx(15 / 64)
    assert s["mean_grain_area"] == pytest.approx(49 / 4)


def test_property_inference_finds_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n, d = 30, 40
    y = rng.normal(size=n)
    linear = np.outer(y, rng.normal(size=d)) + 0.01 * rng.normal(size=(n, d))  # features = f(target)
    hit = audit.property_inference(linear, {"y": y}, permutations=100)["y"]
    assert hit["r2"] > 0.95 and hit["p_value"] < 0.02 and hit["leaks"]
    # Features independent of the target: by design 5% of draws 'leak' at p < 0.05, so look at several.
    misses = [
        audit.property_inference(rng.normal(size=(n, d)), {"y": y}, permutations=100)["y"] for _ in range(5)
    ]
    assert np.median([m["r2"] for m in misses]) < 0.0 and np.median([m["p_value"] for m in misses]) > 0.2
    assert sum(m["leaks"] for m in misses) <= 1


def test_loo_ridge_operator_is_the_explicit_leave_one_out_fit():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 6)), rng.normal(size=10)
    op = audit.loo_ridge_operator(x, alpha=0.5)
    for i in (0, 7):
        train = np.delete(np.arange(10), i)
        mu, sd = x[train].mean(0), x[train].std(0)
        z = (x[train] - mu) / sd
        w = np.linalg.solve(z.T @ z + 0.5 * 6 * np.eye(6), z.T @ (y[train] - y[train].mean()))
        assert op[i] @ y == pytest.approx(y[train].mean() + ((x[i] - mu) / sd) @ w)
        assert op[i, i] == 0.0  # the held-out tile's own target is never used
