"""FedAvg and its FedOpt variants (fl/algorithms/fedavg.py: fedavg, fedavgm, fedadam, fedyogi) on the
quadratic toy, against closed forms and numpy; dropout through the round, on FedAvg(M)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.fl.algorithms.base import LocalTraining
from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state
from fl_toy import A, B, LR, fedavg_fixed_point, global_optimum, local, quad_data, quad_loss, run


def test_fedavg_converges_to_its_biased_fixed_point():
    w_star, w_avg = global_optimum(), fedavg_fixed_point()
    assert np.linalg.norm(w_avg - w_star) > 0.1  # the setting is heterogeneous enough to matter
    fedavg_state, _ = run(algorithms.fedavg(local()), 150)
    np.testing.assert_allclose(fedavg_state.server.params["w"], w_avg, atol=1e-4)


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
