"""Tiny federated problems with closed forms, shared by the round and algorithm tests.

Linear: a linear model on per-example feature vectors, with a numpy full-batch SGD reference per client.
Quadratic: client i holds f_i(w) = 1/2 (w - b_i)^T A_i (w - b_i), heterogeneous curvature and optima; known
result (Karimireddy et al. 2020): with many local steps FedAvg converges to a biased fixed point, SCAFFOLD
(and FedDyn, Acar et al. 2021) to the global optimum.
"""

import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.fl.algorithms.base import LocalTraining
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
