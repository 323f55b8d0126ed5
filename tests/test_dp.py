"""DP-FedAvg aggregator (privacy/dp.py) against numpy / closed-form references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fedtransfer_jax.fl.aggregators import ServerContext
from fedtransfer_jax.privacy import dp, simulate

SEED = 0


def _key(*path):
    k = jax.random.PRNGKey(SEED)
    for p in path:
        k = jax.random.fold_in(k, p)
    return k


def _messages(k, scale=1.0, seed=0):
    rng = np.random.default_rng([SEED, seed])
    return {
        "a": jnp.asarray(scale * rng.normal(size=(k, 3, 4)), jnp.float32),
        "b": {"c": jnp.asarray(scale * rng.normal(size=(k, 5)), jnp.float32)},
    }


def _global_norms(tree):
    leaves = [np.asarray(x).reshape(x.shape[0], -1) for x in jax.tree_util.tree_leaves(tree)]
    return np.sqrt(sum((x.astype(np.float64) ** 2).sum(1) for x in leaves))


def _server_ctx(k, key):
    ids = jnp.arange(k, dtype=jnp.int32)
    return ServerContext(ids, jnp.ones((k,), bool), k, _key(99), key)


def test_clipping_bound_holds_for_every_client():
    k, clip = 6, 1.5
    msgs = _messages(k)
    msgs = jax.tree_util.tree_map(lambda x: x.at[2].multiply(1e6).at[4].multiply(1e-3), msgs)  # huge, tiny
    weights = jnp.array([3.0, 1.0, 7.0, 0.0, 2.0, 5.0])  # client 3 has no data
    agg = dp.dp_fedavg(clip, 1.0, k)
    ctx = simulate.client_contexts(_key(1), jnp.arange(k))
    _, contributions, _ = simulate.encode_clients(
        agg, simulate.plain_sum(), msgs, weights, jnp.ones(k), agg.init(None), ctx
    )
    norms_in, norms_out = _global_norms(msgs), _global_norms(contributions["x"])
    assert np.all(norms_out <= clip * (1 + 1e-6)), norms_out
    np.testing.assert_allclose(norms_out[2], clip, rtol=1e-5)  # the huge update is clipped onto the sphere
    assert norms_out[3] == 0.0  # no data: contributes nothing
    expected = np.where(weights > 0, np.minimum(norms_in, clip), 0.0)
    np.testing.assert_allclose(norms_out, expected, rtol=1e-5)
    chex.assert_trees_all_close(  # an update inside the ball passes unchanged (uniform weight 1)
        jax.tree_util.tree_map(lambda x: x[4], contributions["x"]),
        jax.tree_util.tree_map(lambda x: x[4], msgs),
    )
    np.testing.assert_array_equal(
        np.asarray(contributions["w"]), (np.asarray(weights) > 0).astype(np.float32)
    )


def test_noise_std_matches_z_c_over_m_on_a_large_sample():
    z, clip, m, draws = 1.3, 0.7, 4.0, 2000
    agg = dp.dp_fedavg(clip, z, m)
    template = jax.tree_util.tree_map(lambda x: x[0], _messages(1))
    summed = {
        "x": jax.tree_util.tree_map(jnp.zeros_like, template),
        "w": jnp.float32(4.0),
        "loss": jnp.float32(0),
    }
    state = agg.init(template)

    @jax.jit
    def draw(key):
        mean, _, metrics = agg.server_decode(summed, state, _server_ctx(4, key))
        return mean, metrics["noise_std"]

    means, noise_std = jax.vmap(draw)(jax.vmap(lambda i: _key(2, i))(jnp.arange(draws)))
    x = np.concatenate([np.asarray(v).reshape(draws, -1) for v in jax.tree_util.tree_leaves(means)], 1)
    sigma = z * clip / m
    np.testing.assert_allclose(np.asarray(noise_std), sigma, rtol=1e-6)
    # Known zero mean: n * s^2 / sigma^2 ~ chi2(n); accept inside the central 1 - 2e-6 interval.
    n = x.size
    stat = float((x.astype(np.float64) ** 2).sum() / sigma**2)
    assert stats.chi2.ppf(1e-6, n) < stat < stats.chi2.ppf(1 - 1e-6, n), (stat, n)
    assert abs(x.mean()) < 6 * sigma / np.sqrt(n)
    # Independent coordinates and leaves: the sample correlation matrix is ~ identity.
    corr = np.corrcoef(x.T)
    assert np.max(np.abs(corr - np.eye(corr.shape[0]))) < 6 / np.sqrt(draws)


def test_zero_noise_and_huge_clip_is_the_plain_unweighted_mean():
    k = 5
    msgs = _messages(k, seed=3)
    weights = jnp.array([1.0, 10.0, 2.0, 4.0, 8.0])  # example counts: DP ignores them (uniform weights)
    agg = dp.dp_fedavg(1e9, 0.0, k)
    mean, _, metrics, _ = jax.jit(
        lambda msgs: simulate.aggregate(
            agg, msgs, weights, jnp.arange(k, dtype=jnp.float32), agg.init(None), _key(4), jnp.arange(k)
        )
    )(msgs)
    expected = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64).mean(0), msgs)
    chex.assert_trees_all_close(mean, expected, rtol=1e-5, atol=1e-6)
    assert float(metrics["noise_std"]) == 0.0 and float(metrics["total_weight"]) == k
    assert float(metrics["loss"]) == 0.0  # report_loss=False: the loss never crosses


def test_report_loss_sends_the_clients_mean_loss():
    k = 3
    agg = dp.dp_fedavg(1.0, 0.0, k, report_loss=True)
    _, _, metrics, _ = simulate.aggregate(
        agg, _messages(k), jnp.ones(k), jnp.array([1.0, 2.0, 6.0]), agg.init(None), _key(5), jnp.arange(k)
    )
    np.testing.assert_allclose(float(metrics["loss"]), 3.0, rtol=1e-6)


def test_noise_multiplier_split_is_the_inverse_of_the_effective_multiplier():
    z, sb = 1.1, 2.0
    zd = dp.split_noise_multiplier(z, sb)
    assert zd > z  # the update query pays for the count query with slightly more noise
    np.testing.assert_allclose(dp.effective_noise_multiplier(zd, sb), z, rtol=1e-12)
    # Closed form (Andrew et al. 2021, Thm. 1), computed independently.
    np.testing.assert_allclose(zd, 1.0 / np.sqrt(1 / z**2 - 1 / (2 * sb) ** 2), rtol=1e-12)
    with pytest.raises(ValueError, match="2 \\* clipped_count_stddev"):
        dp.split_noise_multiplier(1.0, 0.4)


def _adaptive_run(c0, quantile, rounds=150, k=100, z=0.5):
    """Synthetic update norms ~ lognormal(0, 0.5) (median 1); directions random. Returns C per round."""
    agg = dp.dp_fedavg(c0, z, k, adaptive=True, target_quantile=quantile, clip_lr=0.2)

    def one_round(state, r):
        kn, kd = jax.random.split(_key(6, r))
        norms = jnp.exp(0.5 * jax.random.normal(kn, (k,)))
        d = jax.random.normal(kd, (k, 8))
        msgs = {"u": d / jnp.linalg.norm(d, axis=1, keepdims=True) * norms[:, None]}
        _, state, metrics = simulate.aggregate(
            agg, msgs, jnp.ones(k), jnp.zeros(k), state, _key(7, r), jnp.arange(k)
        )[:3]
        return state, (metrics["clip_norm"], metrics["noise_std"])

    _, (clips, noise_std) = jax.jit(lambda s: jax.lax.scan(one_round, s, jnp.arange(rounds)))(agg.init(None))
    return np.asarray(clips), np.asarray(noise_std), agg


@pytest.mark.parametrize("c0,quantile", [(0.1, 0.5), (10.0, 0.5), (1.0, 0.8)])
def test_adaptive_clipping_moves_c_to_the_target_quantile(c0, quantile):
    clips, noise_std, _ = _adaptive_run(c0, quantile)
    target = float(np.exp(0.5 * stats.norm.ppf(quantile)))  # the quantile of lognormal(0, 0.5)
    final = clips[-30:].mean()
    assert abs(np.log(final / target)) < 0.1, (final, target)
    assert abs(np.log(clips[0] / target)) > abs(np.log(final / target))
    # The update noise scales with the current C and uses the split multiplier z_Delta.
    zd = dp.split_noise_multiplier(0.5, 0.05 * 100)
    np.testing.assert_allclose(noise_std, zd * clips / 100, rtol=1e-5)


def test_aggregator_from_config_builds_dp_fedavg_and_names_bad_keys():
    agg = dp.aggregator_from_config(
        {"clip_norm": 0.5, "noise_multiplier": 1.0, "adaptive": True, "clipped_count_stddev": 1.0},
        4,
        key="m.aggregator",
    )
    assert agg.name == "dp_fedavg" and float(agg.init(None).clip_norm) == 0.5
    with pytest.raises(ValueError, match="config key m.aggregator.clip_nrom: unknown"):
        dp.aggregator_from_config({"clip_nrom": 1.0, "noise_multiplier": 1.0}, 4, key="m.aggregator")
    with pytest.raises(ValueError, match="m.aggregator.noise_multiplier is required"):
        dp.aggregator_from_config({"clip_norm": 1.0}, 4, key="m.aggregator")
    with pytest.raises(ValueError, match="config key m.aggregator: adaptive clipping needs"):
        dp.aggregator_from_config(
            {"clip_norm": 1.0, "noise_multiplier": 1.0, "adaptive": True, "clipped_count_stddev": 0.4},
            4,
            key="m.aggregator",
        )
    # The default sigma_b = max(0.05 m, z) always satisfies sigma_b > z / 2.
    dp.aggregator_from_config({"clip_norm": 1.0, "noise_multiplier": 1.0, "adaptive": True}, 4, key="m.aggregator")
