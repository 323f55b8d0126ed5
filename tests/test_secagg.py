"""Secure aggregation (privacy/secagg.py): exact cancellation, dropout recovery, masking, Shamir, under jit/vmap."""

import itertools
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fedtransfer_jax.fl.aggregators import ClientContext, ServerContext, sum_payloads, weighted_mean
from fedtransfer_jax.privacy import dp, secagg, simulate

SEED = 0
RANGES = {"x": 2.0, "w": 8.0, "loss": 50.0}


def _key(*path):
    k = jax.random.PRNGKey(SEED)
    for p in path:
        k = jax.random.fold_in(k, p)
    return k


def _contributions(k, seed=0, scale=1.0):
    rng = np.random.default_rng([SEED, seed])
    return {
        "x": {
            "a": jnp.asarray(scale * rng.normal(size=(k, 3, 4)), jnp.float32),
            "b": jnp.asarray(scale * rng.normal(size=(k, 7)), jnp.float32),
        },
        "w": jnp.asarray(rng.integers(1, 8, size=k), jnp.float32),
        "loss": jnp.asarray(rng.uniform(0, 40, size=k), jnp.float32),
    }


def _server_ctx(ids, survived, round_key):
    return ServerContext(ids, jnp.asarray(survived, bool), 100, round_key, jax.random.fold_in(round_key, 2))


def _pipeline(parts, k, ids, round_key):
    """jitted: (contributions, survived) -> (unmasked modular sum, plain modular sum of the quantised
    survivors, aborted, float sum)."""
    ctx = simulate.client_contexts(round_key, ids)

    @jax.jit
    def run(contributions, survived):
        quantised = jax.vmap(parts.quantise, in_axes=(0, simulate.CTX_AXES))(contributions, ctx)
        masked = jax.vmap(parts.mask, in_axes=(0, simulate.CTX_AXES))(quantised, ctx)
        sctx = _server_ctx(ids, survived, round_key)
        unmasked, aborted = parts.unmask(sum_payloads(masked, survived), sctx)
        return unmasked, sum_payloads(quantised, survived), aborted, parts.dequantise(unmasked, aborted, sctx)

    return run


def _assert_exact(a, b, bits):
    mod = np.uint64(1 << bits)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == jnp.uint32
        np.testing.assert_array_equal(np.asarray(x, np.uint64) % mod, np.asarray(y, np.uint64) % mod)


@pytest.mark.parametrize("bits,neighbours,self_mask", [(32, None, True), (20, None, False), (32, 2, True)])
def test_masked_sum_is_exactly_the_quantised_sum_for_every_survivor_set(bits, neighbours, self_mask):
    k = 6
    ids = jnp.array([11, 3, 7, 42, 0, 19], jnp.int32)  # unsorted: masking signs follow ids, not positions
    parts = secagg.secure_sum_parts(bits, RANGES, neighbours, self_mask=self_mask, threshold=1)
    run = _pipeline(parts, k, ids, _key(1))
    contributions = _contributions(k)
    for n in range(1, k + 1):  # every non-empty survivor set (threshold 1: any one survivor suffices)
        for alive in itertools.combinations(range(k), n):
            survived = np.zeros(k, bool)
            survived[list(alive)] = True
            unmasked, plain, aborted, _ = run(contributions, survived)
            assert not bool(aborted)
            _assert_exact(unmasked, plain, bits)


def test_masks_do_not_cancel_without_dropout_recovery():
    # Power check of the test above: summing the survivors' payloads alone leaves the dropped clients' masks.
    k, ids, rk = 4, jnp.arange(4, dtype=jnp.int32), _key(2)
    parts = secagg.secure_sum_parts(32, RANGES, self_mask=False)
    ctx = simulate.client_contexts(rk, ids)
    contributions = _contributions(k)
    q = jax.jit(jax.vmap(parts.quantise, in_axes=(0, simulate.CTX_AXES)))(contributions, ctx)
    masked = jax.jit(jax.vmap(parts.mask, in_axes=(0, simulate.CTX_AXES)))(q, ctx)
    survived = jnp.array([True, True, True, False])
    raw = sum_payloads(masked, survived)
    assert not np.array_equal(np.asarray(raw["x"]["b"]), np.asarray(sum_payloads(q, survived)["x"]["b"]))
    _assert_exact(sum_payloads(masked, jnp.ones(k, bool)), sum_payloads(q, jnp.ones(k, bool)), 32)


def test_below_the_shamir_threshold_the_round_aborts():
    k, ids = 5, jnp.arange(5, dtype=jnp.int32)
    parts = secagg.secure_sum_parts(32, RANGES)  # default threshold: a majority, 3 of 5
    run = _pipeline(parts, k, ids, _key(3))
    contributions = _contributions(k, seed=1)
    for alive, expect_abort in [((0, 4), True), ((1,), True), ((0, 2, 4), False), ((0, 1, 2, 3), False)]:
        survived = np.isin(np.arange(k), alive)
        unmasked, plain, aborted, summed = run(contributions, survived)
        assert bool(aborted) == expect_abort
        if expect_abort:
            assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(summed["x"]))
        else:
            _assert_exact(unmasked, plain, 32)


def test_dequantised_sum_is_within_the_quantisation_bound_and_clipping_is_counted():
    k, ids, rk = 5, jnp.arange(5, dtype=jnp.int32), _key(4)
    contributions = _contributions(k, seed=2)
    contributions["x"]["b"] = contributions["x"]["b"].at[1, :3].set(jnp.array([5.0, -9.0, jnp.nan]))
    survived = np.array([True, True, False, True, True])
    for rounding, units in [("stochastic", 1.5), ("deterministic", 1.0)]:
        parts = secagg.secure_sum_parts(32, RANGES, rounding=rounding)
        _, _, _, summed = _pipeline(parts, k, ids, rk)(contributions, survived)
        for name in ("x", "w", "loss"):
            r = RANGES[name]
            bound = units * survived.sum() / secagg.quantisation_scale(r, k, 32)
            ref = jax.tree_util.tree_map(
                lambda v: np.where(
                    survived.reshape((-1,) + (1,) * (v.ndim - 1)),
                    np.clip(np.nan_to_num(np.asarray(v, np.float64), nan=0.0), -r, r),
                    0,
                ).sum(0),
                contributions[name],
            )
            for got, want in zip(jax.tree_util.tree_leaves(summed[name]), jax.tree_util.tree_leaves(ref)):
                assert np.max(np.abs(np.asarray(got, np.float64) - want)) <= bound + 1e-6 * np.abs(want).max()
        # Every value outside its range (incl. the 5.0, -9.0 and NaN planted above) of every survivor.
        expected = sum(
            int((~np.isfinite(v) | (np.abs(v) > RANGES[name]))[survived].sum())
            for name in RANGES
            for v in map(np.asarray, jax.tree_util.tree_leaves(contributions[name]))
        )
        assert expected >= 3 and int(summed[secagg.PROTOCOL_METRICS]["clipped"]) == expected


def test_stochastic_rounding_is_unbiased():
    # One client, a value between two grid points: the mean of many roundings is the value itself.
    parts = secagg.secure_sum_parts(4, {"x": 1.0, "default": 1.0}, rounding="stochastic", threshold=1)
    scale = secagg.quantisation_scale(1.0, 1, 4)  # 7 - 1 = 6 units per 1.0: a coarse grid
    v = jnp.full((4000,), 0.3, jnp.float32)  # 0.3 * 6 = 1.8 units
    one = ClientContext(jnp.int32(0), jnp.int32(0), jnp.array([0], jnp.int32), _key(5), _key(5, 1))
    q = parts.quantise({"x": v, "w": jnp.float32(0), "loss": jnp.float32(0)}, one)["x"]
    units = np.asarray(q).astype(np.int64)
    assert set(np.unique(units)) == {1, 2}
    assert abs(units.mean() / scale - 0.3) < 4 * np.sqrt(0.16 / 4000) / scale  # binomial std of the mean


def test_a_masked_payload_is_uniform_and_independent_of_its_input():
    k, n = 3, 20000
    ids = jnp.arange(k, dtype=jnp.int32)
    parts = secagg.secure_sum_parts(32, {"default": 1.0})
    rng = np.random.default_rng([SEED, 6])
    structured = jnp.asarray(np.sin(np.linspace(0, 40, n)) * 0.9, jnp.float32)  # far from uniform
    zeros = jnp.zeros((n,), jnp.float32)

    @jax.jit
    def encode_all(contributions, rk):
        ctx = simulate.client_contexts(rk, ids)
        q = jax.vmap(parts.quantise, in_axes=(0, simulate.CTX_AXES))(contributions, ctx)
        return jax.vmap(parts.mask, in_axes=(0, simulate.CTX_AXES))(q, ctx), q

    def payload_of_client0(x0, round_idx):
        xs = jnp.stack([x0, jnp.asarray(rng.normal(size=n), jnp.float32) * 0.1, zeros])
        masked, q = encode_all({"x": xs, "w": jnp.ones(k), "loss": jnp.zeros(k)}, _key(7, round_idx))
        return np.asarray(masked["x"][0]), np.asarray(q["x"][0])

    masked_a, quant_a = payload_of_client0(structured, 0)
    masked_b, _ = payload_of_client0(zeros, 1)
    # Uniform on uint32: chi-square over 64 equal bins of the top 6 bits.
    counts = np.bincount(masked_a >> np.uint32(26), minlength=64)
    assert stats.chisquare(counts).pvalue > 1e-4
    assert stats.kstest(masked_a / 2.0**32, "uniform").pvalue > 1e-4
    # Uncorrelated with the input, while the unmasked quantised payload is (the test has power).
    signed = lambda u: u.astype(np.int64) - (u >= 2**31) * 2**32  # noqa: E731
    assert abs(np.corrcoef(masked_a.astype(np.float64), np.asarray(structured))[0, 1]) < 5 / np.sqrt(n)
    assert np.corrcoef(signed(quant_a), np.asarray(structured))[0, 1] > 0.99
    # Two very different inputs give indistinguishable payload distributions.
    assert stats.ks_2samp(masked_a, masked_b).pvalue > 1e-4


def test_shamir_reconstructs_from_any_t_shares_and_not_from_fewer():
    p, n, t = secagg.P, 6, 3
    rng = np.random.default_rng([SEED, 8])
    secret = rng.integers(0, p, size=secagg.L)
    coeffs = rng.integers(0, p, size=(t - 1, secagg.L))
    shares = np.asarray(
        secagg.shamir_share(jnp.asarray(secret, jnp.uint32), jnp.asarray(coeffs, jnp.uint32), n)
    )
    # Independent reference: Python integers, the polynomial evaluated directly.
    for j in range(n):
        x = j + 1
        want = [
            (int(s) + sum(int(c[i]) * x ** (d + 1) for d, c in enumerate(coeffs))) % p
            for i, s in enumerate(secret)
        ]
        assert shares[j].tolist() == want
    reconstruct = jax.jit(secagg.shamir_reconstruct)
    for size in range(1, n + 1):
        for subset in itertools.combinations(range(n), size):
            use = np.isin(np.arange(n), subset)
            got = np.asarray(reconstruct(jnp.asarray(shares), jnp.asarray(use)))
            # Python-int Lagrange at 0 over the same subset.
            ref = [
                sum(
                    int(shares[j, i]) * math.prod((m + 1) * pow(m - j, -1, p) for m in subset if m != j)
                    for j in subset
                )
                % p
                for i in range(secagg.L)
            ]
            assert got.tolist() == [int(r) for r in ref]
            assert (got.tolist() == secret.tolist()) == (size >= t)  # fewer than t shares: wrong (whp)


def test_diffie_hellman_agreement_is_symmetric_and_matches_python_pow():
    rng = np.random.default_rng([SEED, 9])
    a, b = rng.integers(1, secagg.P - 1, size=(2, 64))
    ga = secagg.powmod(jnp.full(64, secagg.G, jnp.uint32), jnp.asarray(a, jnp.uint32))
    gb = secagg.powmod(jnp.full(64, secagg.G, jnp.uint32), jnp.asarray(b, jnp.uint32))
    assert np.asarray(ga).tolist() == [pow(secagg.G, int(e), secagg.P) for e in a]
    s_ab = secagg.agree(jnp.asarray(a, jnp.uint32), gb)
    np.testing.assert_array_equal(np.asarray(s_ab), np.asarray(secagg.agree(jnp.asarray(b, jnp.uint32), ga)))
    assert np.asarray(s_ab).tolist() == [pow(secagg.G, int(x) * int(y), secagg.P) for x, y in zip(a, b)]


def _mask_expansions(protocol, k):
    """Lengths of the scans in one client's encode (the pair-mask scan runs once per neighbour)."""
    ids = jnp.arange(k, dtype=jnp.int32)
    ctx = simulate.client_contexts(_key(10), ids)
    one = ctx._replace(position=ctx.position[0], client_id=ctx.client_id[0], key=ctx.key[0])
    c = {"x": jnp.zeros((8,)), "w": jnp.float32(1), "loss": jnp.float32(0)}
    jaxpr = str(jax.make_jaxpr(protocol.encode)(c, one))
    return [int(x) for x in re.findall(r"length=(\d+)", jaxpr)]


def test_sparse_neighbour_graph_expands_fewer_masks():
    k = 10
    assert k - 1 in _mask_expansions(secagg.secure_sum(32, RANGES), k)  # complete graph: K - 1 pair masks
    scans = _mask_expansions(secagg.secure_sum(32, RANGES, neighbours=4), k)
    assert 4 in scans and k - 1 not in scans  # k-regular: k pair masks per client (O(K k) per round)


@pytest.mark.parametrize("aggregator_name", ["weighted_mean", "dp_fedavg"])
def test_aggregators_under_secure_sum_match_the_plain_protocol(aggregator_name):
    k = 5
    ids = jnp.array([4, 9, 1, 6, 2], jnp.int32)
    rng = np.random.default_rng([SEED, 11])
    msgs = {
        "w": jnp.asarray(rng.normal(size=(k, 6, 3)) * 0.3, jnp.float32),
        "b": jnp.asarray(rng.normal(size=(k, 3)) * 0.3, jnp.float32),
    }
    weights = jnp.asarray([3.0, 1.0, 4.0, 2.0, 5.0])
    losses = jnp.asarray(rng.uniform(0, 2, size=k), jnp.float32)
    if aggregator_name == "weighted_mean":
        agg, ranges = weighted_mean(), {"x": 8.0, "w": 8.0, "loss": 16.0}
    else:
        agg, ranges = dp.dp_fedavg(1.0, 0.0, k, adaptive=True, clipped_count_stddev=0.5), {
            "x": 1.0,
            "default": 1.0,
        }
    protocol = secagg.secure_sum(32, ranges)
    survived = jnp.array([True, False, True, True, False])

    @jax.jit
    def both(msgs):
        run = lambda p: simulate.aggregate(
            agg,
            msgs,
            weights,
            losses,
            agg.init(None),
            _key(12),
            ids,
            survived,  # noqa: E731
            protocol=p,
            num_clients=10,
        )
        return run(protocol), run(None)

    (mean_s, state_s, m_s, payloads), (mean_p, state_p, m_p, _) = both(msgs)
    chex.assert_trees_all_close(mean_s, mean_p, atol=2e-5)
    chex.assert_trees_all_close(state_s, state_p, atol=2e-5)
    assert int(m_s["secagg32/clipped"]) == 0 and not bool(m_s["secagg32/aborted"])
    assert all(
        x.dtype == jnp.uint32 for x in jax.tree_util.tree_leaves(payloads)
    )  # what crosses the boundary


def test_protocol_from_config_builds_secure_sum_and_names_bad_keys():
    p = secagg.protocol_from_config(
        {"bits": 20, "clip_range": {"x": 1.0, "default": 64.0}, "neighbours": 0}, 4
    )
    assert p.name == "secagg20"
    with pytest.raises(ValueError, match="config key m.secure.bitz: unknown"):
        secagg.protocol_from_config({"bitz": 20}, 4, key="m.secure")
    with pytest.raises(ValueError, match="m.secure.threshold must be in 1..4"):
        secagg.protocol_from_config({"threshold": 5}, 4, key="m.secure")
    with pytest.raises(ValueError, match="config key m.secure: secure_sum: neighbours must be an even"):
        secagg.protocol_from_config({"neighbours": 3}, 4, key="m.secure")
