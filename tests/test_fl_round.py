"""The one-jit federated round against hand-written numpy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.fl.algorithms.base import LocalTraining, batch_indices
from fedtransfer_jax.fl.boundary import PrivacyLedger
from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state

D = 3  # features of the toy linear model


def linear_loss(params, batch, rng):
    """Masked mean squared error of a linear model on per-example feature vectors (images[..., :D])."""
    del rng
    x = batch["images"].reshape(batch["images"].shape[0], -1)[:, :D]
    y = batch["labels"].reshape(batch["labels"].shape[0], -1)[:, 0].astype(jnp.float32)
    m = batch["mask"].astype(jnp.float32)
    err = x @ params["w"] + params["b"] - y
    return (jnp.square(err) * m).sum() / jnp.maximum(m.sum(), 1.0), {}


def make_data(counts, n_max, seed=0):
    """Clients with `counts` real examples each, padded to n_max with garbage (which must not matter)."""
    rng = np.random.default_rng(seed)
    c = len(counts)
    images = rng.normal(size=(c, n_max, 2, 2, 3)).astype(np.float32)
    labels = rng.integers(0, 5, size=(c, n_max, 2, 2)).astype(np.uint8)
    mask = np.zeros((c, n_max), bool)
    for i, n in enumerate(counts):
        mask[i, :n] = True
    return images, labels, mask


def numpy_sgd_client(w, b, x, y, lr, steps, mu=0.0):
    """Full-batch SGD on one client's real examples, with an optional FedProx term."""
    w0, b0 = np.copy(w), float(b)
    for _ in range(steps):
        err = x @ w + b - y
        gw = 2 * x.T @ err / len(y) + mu * (w - w0)
        gb = 2 * err.mean() + mu * (b - b0)
        w, b = w - lr * gw, b - lr * gb
    return w, b


def client_xy(images, labels, mask, c):
    x = images[c].reshape(images.shape[1], -1)[:, :D][mask[c]]
    y = labels[c].reshape(labels.shape[1], -1)[:, 0][mask[c]].astype(np.float64)
    return x.astype(np.float64), y


def run_round(
    data,
    *,
    clients_per_round,
    local_steps,
    batch_size,
    lr=0.05,
    mu=0.0,
    strategy="vmap",
    chunk_size=0,
    seed=0,
    rounds=1,
    ledger=None,
):
    params = {"w": jnp.array([0.1, -0.2, 0.3]), "b": jnp.array(0.05)}
    local = LocalTraining(linear_loss, optax.sgd(lr), local_steps=local_steps, batch_size=batch_size)
    alg = algorithms.fedprox(local, mu=mu) if mu else algorithms.fedavg(local)
    traces = []
    round_fn = build_round(
        alg,
        RoundConfig(clients_per_round, strategy, chunk_size),
        seed=seed,
        ledger=ledger,
        on_trace=lambda: traces.append(1),
    )
    state = init_round_state(alg, params, num_clients=data[2].shape[0])
    ids = []
    for _ in range(rounds):
        state, metrics = round_fn(state, dict(zip(("images", "labels", "mask"), map(jnp.asarray, data))))
        ids.append(np.asarray(metrics["client_ids"]))
    return state.server, ids, len(traces)


def test_fedavg_one_sgd_step_matches_numpy_weighted_average():
    # Client 0 holds 2 examples, client 1 holds 4; batch 4 cycles client 0's two examples twice,
    # so each client's single step is a full-batch gradient step on its own data.
    data = make_data([2, 4], n_max=4)
    state, _, _ = run_round(data, clients_per_round=2, local_steps=1, batch_size=4)
    w0, b0 = np.array([0.1, -0.2, 0.3]), 0.05
    updated = [numpy_sgd_client(w0, b0, *client_xy(*data, c), lr=0.05, steps=1) for c in range(2)]
    weights = np.array([2.0, 4.0])
    w_ref = sum(wt * u[0] for wt, u in zip(weights, updated)) / weights.sum()
    b_ref = sum(wt * u[1] for wt, u in zip(weights, updated)) / weights.sum()
    chex.assert_trees_all_close(state.params, {"w": w_ref, "b": b_ref}, rtol=1e-5, atol=1e-6)


def test_fedprox_two_steps_matches_numpy():
    data = make_data([4, 4], n_max=4)
    state, _, _ = run_round(data, clients_per_round=2, local_steps=2, batch_size=4, mu=0.5)
    w0, b0 = np.array([0.1, -0.2, 0.3]), 0.05
    updated = [numpy_sgd_client(w0, b0, *client_xy(*data, c), lr=0.05, steps=2, mu=0.5) for c in range(2)]
    w_ref = (updated[0][0] + updated[1][0]) / 2
    b_ref = (updated[0][1] + updated[1][1]) / 2
    chex.assert_trees_all_close(state.params, {"w": w_ref, "b": b_ref}, rtol=1e-5, atol=1e-6)
    # And the proximal term matters: plain FedAvg lands elsewhere.
    plain, _, _ = run_round(data, clients_per_round=2, local_steps=2, batch_size=4, mu=0.0)
    assert not np.allclose(plain.params["w"], state.params["w"], atol=1e-6)


def test_padded_client_and_padded_examples_change_nothing():
    base = make_data([2, 4], n_max=4)
    ref, _, _ = run_round(base, clients_per_round=2, local_steps=1, batch_size=4)
    # Same two clients plus an empty third one, and garbage in every padding slot.
    images, labels, mask = make_data([2, 4, 0], n_max=6, seed=1)
    images[:2, :4], labels[:2, :4] = base[0], base[1]
    padded, _, _ = run_round((images, labels, mask), clients_per_round=3, local_steps=1, batch_size=4)
    chex.assert_trees_all_close(padded.params, ref.params, rtol=1e-6, atol=1e-7)


def test_weights_follow_example_counts():
    # With 1 step, the aggregate equals the example-weighted mean: swapping counts changes the result.
    a, _, _ = run_round(make_data([1, 4], n_max=4), clients_per_round=2, local_steps=1, batch_size=4)
    images, labels, mask = make_data([1, 4], n_max=4)
    mask[0] = [True, True, True, True]
    mask[0, 1:] = False  # identical data, but now check the weight directly via a 1-client round
    solo, _, _ = run_round(
        (images[1:], labels[1:], mask[1:]), clients_per_round=1, local_steps=1, batch_size=4
    )
    solo0, _, _ = run_round(
        (images[:1], labels[:1], mask[:1]), clients_per_round=1, local_steps=1, batch_size=4
    )
    expected = jax.tree_util.tree_map(lambda p0, p1: (1 * p0 + 4 * p1) / 5, solo0.params, solo.params)
    chex.assert_trees_all_close(a.params, expected, rtol=1e-5, atol=1e-6)


def test_round_compiles_once_over_rounds():
    data = make_data([3, 4, 2], n_max=4)
    _, _, traces = run_round(data, clients_per_round=2, local_steps=2, batch_size=2, rounds=4)
    assert traces == 1


def test_sampling_is_deterministic_in_seed():
    data = make_data([2] * 8, n_max=2)
    kw = dict(clients_per_round=3, local_steps=1, batch_size=2, rounds=4)
    s1, ids1, _ = run_round(data, seed=0, **kw)
    s2, ids2, _ = run_round(data, seed=0, **kw)
    _, ids3, _ = run_round(data, seed=1, **kw)
    chex.assert_trees_all_equal(s1.params, s2.params)
    np.testing.assert_array_equal(np.stack(ids1), np.stack(ids2))
    assert not np.array_equal(np.stack(ids1), np.stack(ids3))
    for ids in ids1:  # distinct clients within a round
        assert len(set(ids.tolist())) == 3


def test_sampling_skips_empty_clients():
    data = make_data([2, 0, 2, 0, 2, 0], n_max=2)
    _, ids, _ = run_round(data, clients_per_round=3, local_steps=1, batch_size=2, rounds=3)
    for r in ids:
        assert sorted(r.tolist()) == [0, 2, 4]


@pytest.mark.parametrize("strategy,chunk", [("sequential", 0), ("chunked", 2), ("chunked", 3)])
def test_strategies_compute_the_same_round(strategy, chunk):
    data = make_data([2, 3, 4, 1, 4], n_max=4)
    kw = dict(clients_per_round=4, local_steps=3, batch_size=2, rounds=2)
    ref, _, _ = run_round(data, strategy="vmap", **kw)
    other, _, _ = run_round(data, strategy=strategy, chunk_size=chunk, **kw)
    chex.assert_trees_all_close(other.params, ref.params, rtol=1e-5, atol=1e-6)


def test_batch_indices_cycle_real_examples_only():
    mask = jnp.array([True, False, True, True, False])
    idx = np.asarray(batch_indices(jax.random.PRNGKey(0), mask, local_steps=2, batch_size=3))
    assert set(idx[0].tolist()) == {0, 2, 3}  # one epoch = every real example once
    assert set(idx.ravel().tolist()) <= {0, 2, 3}


def test_ledger_records_model_deltas_only():
    data = make_data([2, 4], n_max=4)
    ledger = PrivacyLedger(image_hw=(2, 2), client_names=["a", "b"])
    run_round(data, clients_per_round=2, local_steps=1, batch_size=4, ledger=ledger)
    names = {r.name for r in ledger.specs["model_update"]}
    assert names == {"model_update['x']['w']", "model_update['x']['b']", "model_update['w']", "model_update['loss']"}
    assert not ledger.image_shaped_arrays_sent
