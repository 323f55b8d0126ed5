"""The one-jit federated round against hand-written numpy references (FedAvg on the linear toy of fl_toy.py;
each algorithm's own results are in tests/test_algorithm_<name>.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax.fl.algorithms.base import batch_indices
from fedtransfer_jax.fl.boundary import PrivacyLedger
from fl_toy import client_xy, make_data, numpy_sgd_client, run_round


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
