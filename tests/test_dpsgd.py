"""DP-SGD with per-micrograph clipping (privacy/dpsgd.py) as the clients' local optimizer path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.fl.algorithms.base import run_local_training
from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state
from fedtransfer_jax.privacy import accounting, dpsgd

D = 8


def loss_fn(params, batch, rng):
    del rng
    m = batch["mask"].astype(jnp.float32)
    err = batch["x"] @ params["w"] - batch["y"]
    return (jnp.square(err) * m).sum() / jnp.maximum(m.sum(), 1.0), {}


def lab(units=4, tiles=3, d=D, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(units * tiles, d)).astype(np.float32)
    y = (x @ rng.normal(size=d)).astype(np.float32)
    return {"x": x, "y": y, "mask": np.ones(units * tiles, bool)}


def one_step(data, dp, lr=0.5, d=D, seed=0):
    local = dpsgd.dp_local_training(loss_fn, optax.sgd(lr), local_steps=1, dp=dp)
    params = {"w": jnp.zeros(d, jnp.float32)}
    out, _ = run_local_training(local, params, {k: jnp.asarray(v) for k, v in data.items()}, jnp.int32(0), jax.random.PRNGKey(seed))
    return np.asarray(out["w"], np.float64)


def test_one_micrograph_moves_the_step_by_at_most_clip_lr_over_batch():
    """q = 1, no noise: removing micrograph 0, or making ALL its tiles' gradients huge, changes the update by
    at most C lr / B (its three tiles are clipped together as one unit, not 3 C)."""
    c, lr, b = 0.3, 0.5, 4.0
    dp = dpsgd.DPSGD(clip_norm=c, noise_multiplier=0.0, units_per_batch=b, tiles_per_unit=3)
    base = lab()
    huge = {k: v.copy() for k, v in base.items()}
    huge["x"][:3] *= 1e3
    huge["y"][:3] = 1e6
    removed = {k: v.copy() for k, v in base.items()}
    removed["mask"][:3] = False
    u_base, u_huge, u_removed = one_step(base, dp), one_step(huge, dp), one_step(removed, dp)
    bound = c * lr / b
    assert np.linalg.norm(u_base - u_removed) <= bound * (1 + 1e-5)
    assert np.linalg.norm(u_huge - u_removed) == pytest.approx(bound, rel=1e-4)  # clipped to exactly C
    assert np.linalg.norm(u_huge - u_base) <= 2 * bound * (1 + 1e-5)  # replace-one: 2 C lr / B
    # Every unit contributes at most C: the whole step is at most U C lr / B.
    assert np.linalg.norm(u_huge) <= 4 * bound * (1 + 1e-5)


def test_noise_std_is_z_clip_over_batch():
    d, z, c, b, lr = 20000, 2.0, 0.5, 4.0, 1.0
    dp = dpsgd.DPSGD(clip_norm=c, noise_multiplier=z, units_per_batch=b, tiles_per_unit=2)
    data = lab(units=3, tiles=2, d=d)
    data["mask"][:] = False  # no real micrograph: the update is the noise alone
    u = one_step(data, dp, lr=lr, d=d)
    assert np.std(u) == pytest.approx(lr * dpsgd.noise_std_of_mean(dp), rel=0.03)
    assert dpsgd.noise_std_of_mean(dp) == pytest.approx(z * c / b)
    assert abs(np.mean(u)) < 4 * lr * z * c / b / np.sqrt(d)


def test_poisson_sampling_is_unbiased_with_the_fixed_denominator():
    """E[step gradient] = q sum_u clip(g_u) / B = sum_u clip(g_u) / U: the sampling rate uses the real units."""
    units, tiles, b = 8, 2, 2.0
    data = {k: jnp.asarray(v) for k, v in lab(units=units + 2, tiles=tiles).items()}
    data["mask"] = data["mask"].at[-2 * tiles :].set(False)  # two padding micrographs
    dp = dpsgd.DPSGD(clip_norm=1e9, noise_multiplier=0.0, units_per_batch=b, tiles_per_unit=tiles)
    fn = dpsgd.dp_gradient_fn(dp)
    params = {"w": jnp.full((D,), 0.1, jnp.float32)}
    prepare = lambda batch, rng: batch
    grads = jax.vmap(lambda k: fn(loss_fn, params, data, prepare, k)[0]["w"])(jax.random.split(jax.random.PRNGKey(0), 4000))
    per_unit = [
        jax.grad(lambda p: loss_fn(p, {k: v[u * tiles : (u + 1) * tiles] for k, v in data.items()}, None)[0])(params)["w"]
        for u in range(units)
    ]
    expected = np.sum(per_unit, axis=0) / units
    np.testing.assert_allclose(np.mean(grads, axis=0), expected, atol=0.06 * np.abs(expected).max())


def test_physical_batch_cap_computes_at_most_cap_units():
    dp = dpsgd.DPSGD(clip_norm=1e9, noise_multiplier=0.0, units_per_batch=6.0, tiles_per_unit=1, max_units_per_step=6)
    full = dpsgd.DPSGD(clip_norm=1e9, noise_multiplier=0.0, units_per_batch=6.0, tiles_per_unit=1)
    data = lab(units=6, tiles=1)  # q = 1: all 6 sampled, the cap keeps all of them
    np.testing.assert_allclose(one_step(data, dp), one_step(data, full), rtol=1e-5, atol=1e-6)
    assert dpsgd.truncation_probability(6, 6, 6) == 0.0
    assert 0 < dpsgd.truncation_probability(8, 100, 16) < 0.01


def test_unit_view_needs_whole_micrographs():
    with pytest.raises(ValueError, match="tiles_per_unit"):
        dpsgd.unit_view({"mask": np.ones(7, bool)}, 3)


def test_accountant_epsilon_decreases_with_noise_and_grows_with_steps():
    eps = [dpsgd.epsilon(z, 200, 8, 100, 1e-5) for z in (0.8, 1.0, 1.5, 3.0)]
    assert all(a > b for a, b in zip(eps, eps[1:]))
    assert dpsgd.epsilon(1.0, 400, 8, 100, 1e-5) > eps[1]
    assert eps[1] == pytest.approx(accounting.epsilon(1.0, 200, 8, 100, 1e-5, sampling="poisson"))
    assert dpsgd.epsilon(0.0, 10, 8, 100, 1e-5) == float("inf")
    assert dpsgd.epsilon(1.0, 0, 8, 100, 1e-5) == 0.0


def test_fedavg_round_with_dpsgd_clients_learns():
    """Three labs of 6 micrographs x 2 tiles through the round engine; moderate noise still reduces the loss."""
    c, units, tiles = 3, 6, 2
    rng = np.random.default_rng(1)
    w_star = rng.normal(size=D).astype(np.float32)
    x = rng.normal(size=(c, units * tiles, D)).astype(np.float32)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(x @ w_star), "mask": jnp.ones((c, units * tiles), bool)}
    dp = dpsgd.DPSGD(clip_norm=1.0, noise_multiplier=0.5, units_per_batch=3.0, tiles_per_unit=tiles)
    local = dpsgd.dp_local_training(loss_fn, optax.sgd(0.1), local_steps=4, dp=dp)
    alg = algorithms.fedavg(local)
    params = {"w": jnp.zeros(D, jnp.float32)}
    state = init_round_state(alg, params, c)
    round_fn = build_round(alg, RoundConfig(c, "vmap"), seed=0)
    mse = lambda w: float(np.mean((x @ np.asarray(w) - x @ w_star) ** 2))
    before = mse(params["w"])
    for _ in range(15):
        state, metrics = round_fn(state, data)
    assert np.isfinite(float(metrics["loss"]))
    assert mse(alg.get_params(state.server)["w"]) < 0.5 * before
