"""Standalone federated protocol of a style method, for the style checks CLI and tests.

The trainer runs the same protocol with the one-jit round engine and the privacy ledger; this module is a
small, dependency-free version (a Python loop over clients with one jitted local-training function, FedAvg
with server SGD lr 1) so that style methods can be checked without the trainer:

    shared = train_shared(method, clients, ...)      # FedAvg of method.shared_loss (skipped if None)
    bank = share_styles(method, shared, clients, k, seed)   # client messages -> server bank

Each client only ever touches its own data; what leaves it is the model update (training) and the
``client_message`` (checked to hold no image-shaped array).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.data.seeds import STYLE_MODEL_INIT_TAG
from fedtransfer_jax.fl.algorithms import base
from fedtransfer_jax.style.methods.base import StyleMethod, check_message

PyTree = Any
TAG_INIT = STYLE_MODEL_INIT_TAG  # the trainer's init key too, so both protocols start from one model
TAG_TRAIN, TAG_MESSAGE, TAG_SAMPLE = 0x7A1, 0x3E5, 0x5A3


class SharedTraining(NamedTuple):
    """Result of ``train_shared``: the shared params, wall seconds, mean client loss per round."""

    params: PyTree
    seconds: float
    losses: list


def train_shared(
    method: StyleMethod,
    clients: Sequence[dict],
    *,
    seed: int,
    tile: int,
    rounds: int,
    local_steps: int,
    batch_size: int,
    lr: float,
) -> SharedTraining:
    """FedAvg (Adam on the clients, server SGD lr 1) of ``method.shared_loss`` from
    ``method.init_shared(fold_in(PRNGKey(seed), TAG_INIT), tile)``. ``clients``: dicts with ``images``,
    ``labels``, ``mask`` (same shapes for every client: one compilation). Methods without a shared model
    return ``params=None`` at no cost."""
    root = jax.random.PRNGKey(seed)
    params = method.init_shared(jax.random.fold_in(root, TAG_INIT), tile)
    if method.shared_loss is None or params is None or rounds == 0:
        return SharedTraining(params, 0.0, [])
    opt = optax.adam(lr)
    if method.shared_trainable is not None:
        opt = optax.masked(opt, method.shared_trainable(params))
    lt = base.LocalTraining(method.shared_loss, opt, local_steps, batch_size)
    local = jax.jit(lambda p, d, c, k: base.run_local_training(lt, p, d, c, k))
    t0 = time.time()
    losses = []
    for r in range(rounds):
        deltas, weights, round_loss = [], [], []
        for c, data in enumerate(clients):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, TAG_TRAIN), r), c)
            p, loss = local(params, data, jnp.int32(c), key)
            deltas.append(base.tree_sub(p, params))
            weights.append(float(np.sum(np.asarray(data["mask"]))))
            round_loss.append(float(loss))
        w = np.asarray(weights) / max(np.sum(weights), 1.0)
        mean = jax.tree_util.tree_map(lambda *d: sum(wi * di for wi, di in zip(w, d)), *deltas)
        params = base.tree_add(params, mean)
        losses.append(float(np.mean(round_loss)))
    jax.block_until_ready(params)
    return SharedTraining(params, time.time() - t0, losses)


def style_sample(mask: np.ndarray, k: int, seed: int, client_id: int) -> np.ndarray:
    """Indices of up to k real examples of one client whose styles it shares (sorted)."""
    real = np.flatnonzero(np.asarray(mask))
    rng = np.random.default_rng([seed, TAG_SAMPLE, client_id])
    return np.sort(rng.permutation(real)[:k])


def share_styles(
    method: StyleMethod, shared: PyTree, clients: Sequence[dict], *, k: int, seed: int
) -> tuple[PyTree, list[dict]]:
    """Every client's ``client_message`` on k of its examples, checked for image-shaped arrays, stacked
    by ``method.build_bank``. Returns ``(bank, messages)`` (messages as numpy, e.g. for a ledger)."""
    messages = []
    message_fn = jax.jit(method.client_message)  # one compilation for every client sharing k styles
    for c, data in enumerate(clients):
        idx = style_sample(data["mask"], k, seed, c)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), TAG_MESSAGE), c)
        msg = message_fn(
            shared,
            jnp.asarray(np.asarray(data["images"])[idx], jnp.float32),
            jnp.asarray(np.asarray(data["labels"])[idx]),
            jnp.ones(len(idx), bool),
            key,
        )
        msg = {name: np.asarray(v) for name, v in msg.items()}
        check_message(msg, tuple(np.shape(data["images"])[1:3]))
        messages.append(msg)
    return method.build_bank(messages), messages


__all__ = ["SharedTraining", "train_shared", "style_sample", "share_styles"]
