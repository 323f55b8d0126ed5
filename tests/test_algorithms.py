"""Federated algorithms on the one-jit round, against closed forms and numpy references.

Known result (Karimireddy et al. 2020): on heterogeneous quadratic clients with many local steps FedAvg
converges to a biased fixed point, SCAFFOLD (and FedDyn, Acar et al. 2021) to the global optimum.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.fl.algorithms.base import LocalTraining
from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state

# Client i: f_i(w) = 1/2 (w - b_i)^T A_i (w - b_i), heterogeneous curvature and optima.
A = np.array(
    [[[3.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 4.0]], [[2.0, -0.8], [-0.8, 1.5]], [[1.0, 0.3], [0.3, 0.6]]]
)
B = np.array([[1.0, -2.0], [-3.0, 0.5], [2.0, 2.0], [0.0, -1.0]])
LR, STEPS = 0.05, 40


def quad_loss(params, batch, rng):
    del rng
    d = params["w"][None, :] - batch["b"]
    per = 0.5 * jnp.einsum("ni,nij,nj->n", d, batch["A"], d)
    m = batch["mask"].astype(jnp.float32)
    return (per * m).sum() / jnp.maximum(m.sum(), 1.0), {}


def quad_data(c=4):
    return {
        "A": jnp.asarray(A[:c, None], jnp.float32),
        "b": jnp.asarray(B[:c, None], jnp.float32),
        "mask": jnp.ones((c, 1), bool),
    }


def run(alg, rounds, k=4, data=None, dropout=0.0, seed=0):
    data = quad_data() if data is None else data
    rf = build_round(alg, RoundConfig(k, "vmap", dropout_rate=dropout), seed=seed)
    state = init_round_state(alg, {"w": jnp.zeros(2)}, data["mask"].shape[0])
    history = []
    for _ in range(rounds):
        state, m = rf(state, data)
        history.append(m)
    return state, history


def local():
    return LocalTraining(quad_loss, optax.sgd(LR), local_steps=STEPS, batch_size=1)


def global_optimum():
    return np.linalg.solve(A.sum(0), np.einsum("cij,cj->i", A, B))


def fedavg_fixed_point():
    """Closed form: K SGD steps from w give b_i + M_i (w - b_i), M_i = (I - lr A_i)^K; FedAvg's map is the
    mean of those, whose fixed point is (I - mean M)^-1 mean (b_i - M_i b_i)."""
    m = np.stack([np.linalg.matrix_power(np.eye(2) - LR * a, STEPS) for a in A])
    rhs = np.mean(B - np.einsum("cij,cj->ci", m, B), axis=0)
    return np.linalg.solve(np.eye(2) - m.mean(0), rhs)


def test_fedavg_converges_to_its_biased_fixed_point_and_scaffold_to_the_optimum():
    w_star, w_avg = global_optimum(), fedavg_fixed_point()
    assert np.linalg.norm(w_avg - w_star) > 0.1  # the setting is heterogeneous enough to matter
    fedavg_state, _ = run(algorithms.fedavg(local()), 150)
    scaffold_state, _ = run(algorithms.scaffold(local(), client_lr=LR), 150)
    np.testing.assert_allclose(fedavg_state.server.params["w"], w_avg, atol=1e-4)
    np.testing.assert_allclose(scaffold_state.server.params["w"], w_star, atol=1e-4)


def test_feddyn_converges_to_the_optimum():
    state, _ = run(algorithms.feddyn(local(), alpha=0.5), 300)
    np.testing.assert_allclose(state.server.params["w"], global_optimum(), atol=1e-3)


def test_scaffold_client_state_only_changes_for_sampled_survivors():
    alg = algorithms.scaffold(local(), client_lr=LR)
    state, hist = run(alg, 1, k=2)
    ids = set(np.asarray(hist[0]["client_ids"]).tolist())
    for c in range(4):
        changed = float(jnp.abs(state.clients["w"][c]).sum()) > 0
        assert changed == (c in ids), (c, ids)


def test_fedadam_one_round_matches_numpy():
    # One local SGD step per client (full batch), then a server Adam step on -mean_delta.
    lt = LocalTraining(quad_loss, optax.sgd(LR), local_steps=1, batch_size=1)
    alg = algorithms.build_algorithm("fedadam", lt, {"server_lr": 0.1})
    state, _ = run(alg, 1)
    w0 = np.zeros(2)
    deltas = [-LR * a @ (w0 - b) for a, b in zip(A, B)]
    g = -np.mean(deltas, axis=0)
    m, v = 0.1 * g, 0.001 * g**2  # beta1 = 0.9, beta2 = 0.999, after bias correction: m_hat = g, v_hat = g^2
    m_hat, v_hat = m / 0.1, v / 0.001
    expected = w0 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-3)
    np.testing.assert_allclose(state.server.params["w"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", algorithms.NAMES)
def test_every_algorithm_compiles_once_and_is_strategy_independent(name):
    lt = LocalTraining(quad_loss, optax.sgd(LR), local_steps=3, batch_size=1)
    alg = algorithms.build_algorithm(name, lt, client_lr=LR)
    results = {}
    for strategy, chunk in (("vmap", 0), ("sequential", 0), ("chunked", 2)):
        traces = []
        rf = build_round(alg, RoundConfig(3, strategy, chunk), seed=0, on_trace=lambda: traces.append(1))
        state = init_round_state(alg, {"w": jnp.zeros(2)}, 4)
        for _ in range(3):
            state, _ = rf(state, quad_data())
        assert len(traces) == 1
        results[strategy] = state
    for strategy in ("sequential", "chunked"):
        chex.assert_trees_all_close(results[strategy], results["vmap"], rtol=1e-5, atol=1e-6)


def test_unknown_hyperparameter_names_the_key():
    with pytest.raises(ValueError, match=r"method_specs\.fedprox_big\.alpha"):
        algorithms.build_algorithm("fedprox", local(), {"alpha": 1.0}, key="method_specs.fedprox_big")
    with pytest.raises(ValueError, match="unknown algorithm"):
        algorithms.build_algorithm("fedsomething", local())


def test_dropout_aggregates_over_survivors_only():
    alg = algorithms.fedavg(LocalTraining(quad_loss, optax.sgd(LR), local_steps=2, batch_size=1))
    state, hist = run(alg, 1, dropout=0.5, seed=3)
    survived = np.asarray(hist[0]["survived"])
    ids = np.asarray(hist[0]["client_ids"])
    assert 0 < survived.sum() < 4  # this seed drops some but not all
    keep = ids[survived]
    sub = {k: v[keep] for k, v in quad_data().items()}
    ref, _ = run(alg, 1, k=len(keep), data=sub)
    chex.assert_trees_all_close(state.server.params, ref.server.params, rtol=1e-5, atol=1e-6)
    assert int(hist[0]["num_survivors"]) == survived.sum()


def test_round_where_everyone_drops_leaves_the_model_unchanged():
    alg = algorithms.build_algorithm("fedavgm", local())  # momentum: a zero update would still move it
    data = quad_data()
    rf = build_round(alg, RoundConfig(4, "vmap", dropout_rate=0.8), seed=0)
    state = init_round_state(alg, {"w": jnp.zeros(2)}, 4)
    counts = []
    for _ in range(12):
        before = jax.device_get(state.server)
        state, m = rf(state, data)
        counts.append(int(m["num_survivors"]))
        if counts[-1] == 0 and any(counts[:-1]):  # momentum is non-zero by now
            chex.assert_trees_all_equal(jax.device_get(state.server), before)
    # P(nobody survives) = 0.8^4 = 0.41 per round: this seed has such rounds after survivor rounds.
    assert any(c == 0 and any(counts[:i]) for i, c in enumerate(counts)), counts
