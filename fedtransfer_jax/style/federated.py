"""Standalone federated protocol of a style technique, for the style checks CLI and tests.

The trainer runs the protocol inside a run (style_protocol.py: the run's context, its mesh, checkpoints and
the privacy ledger); this module is the same protocol on plain per-client arrays, on the same one-jit round
engine, so that style techniques can be checked and tested without a run:

    shared = train_shared(method, clients, ...)      # FedAvg of method.shared_loss (skipped if None)
    bank = share_styles(method, shared, clients, k, seed)   # client messages -> server bank

Each client only ever touches its own data; what leaves it is the model update (training) and the
``client_message`` (checked to hold no image-shaped array).
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.runtime.pixels import decode_uint8
from fedtransfer_jax.fl import federated_round
from fedtransfer_jax.data.seeds import STYLE_MODEL_INIT_TAG
from fedtransfer_jax.fl.algorithms import base
from fedtransfer_jax.fl.algorithms.fedavg import fedavg
from fedtransfer_jax.style.techniques.base import StyleTechnique, check_message

PyTree = Any
TAG_INIT = STYLE_MODEL_INIT_TAG  # the trainer's init key too, so both protocols start from one model
TAG_MESSAGE, TAG_SAMPLE = 0x3E5, 0x5A3


class SharedTraining(NamedTuple):
    """Result of ``train_shared``: the shared params, wall seconds, mean client loss per round."""

    params: PyTree
    seconds: float
    losses: list


def train_shared(
    method: StyleTechnique,
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
    ``method.init_shared(fold_in(PRNGKey(seed), TAG_INIT), tile)``, every client in every round, on the
    engine's one-jit round (`fl/federated_round.py`, clients one after another). ``clients``: dicts with ``images``,
    ``labels``, ``mask`` (same shapes for every client). Methods without a shared model return
    ``params=None`` at no cost."""
    params = method.init_shared(jax.random.fold_in(jax.random.PRNGKey(seed), TAG_INIT), tile)
    if method.shared_loss is None or params is None or rounds == 0:
        return SharedTraining(params, 0.0, [])
    opt = optax.adam(lr)
    if method.shared_trainable is not None:
        opt = optax.masked(opt, method.shared_trainable(params))
    algorithm = fedavg(base.LocalTraining(method.shared_loss, opt, local_steps, batch_size), optax.sgd(1.0))
    data = {k: jnp.asarray(np.stack([np.asarray(c[k]) for c in clients])) for k in ("images", "labels", "mask")}
    state = federated_round.init_round_state(algorithm, params, len(clients))
    # Keys as in the trainer's style-model federation: the round's keys from (seed, round, client id).
    round_fn = federated_round.build_round(algorithm, federated_round.RoundConfig(len(clients), "sequential"), seed=seed)
    t0 = time.time()
    losses = []
    for _ in range(rounds):
        state, metrics = round_fn(state, data)
        losses.append(float(metrics["loss"]))
    params = algorithm.get_params(state.server)
    jax.block_until_ready(params)
    return SharedTraining(params, time.time() - t0, losses)


def style_sample(mask: np.ndarray, k: int, seed: int, client_id: int) -> np.ndarray:
    """Indices of up to k real examples of one client whose styles it shares (sorted)."""
    real = np.flatnonzero(np.asarray(mask))
    rng = np.random.default_rng([seed, TAG_SAMPLE, client_id])
    return np.sort(rng.permutation(real)[:k])


def share_styles(
    method: StyleTechnique,
    shared: PyTree,
    clients: Sequence[dict],
    *,
    k: int,
    seed: int,
    send: Callable[[dict, int], dict] | None = None,
) -> tuple[PyTree, list[dict]]:
    """Every client's ``client_message`` on k of its examples, checked for image-shaped arrays, passed to
    ``send(message, client_id)`` (what the server receives: the trainer sends it through the privacy
    boundary; default: as is) and stacked by ``method.build_bank``. ``clients``: dicts of one client's
    ``images`` (float in [0, 1] or uint8), ``labels``, ``mask``. Returns ``(bank, received messages)``."""
    messages = []
    message_fn = jax.jit(method.client_message)  # one compilation for every client sharing k styles
    for c, data in enumerate(clients):
        idx = style_sample(data["mask"], k, seed, c)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), TAG_MESSAGE), c)
        images = decode_uint8(np.asarray(data["images"])[idx])
        msg = message_fn(
            shared,
            jnp.asarray(images, jnp.float32),
            jnp.asarray(np.asarray(data["labels"])[idx]),
            jnp.ones(len(idx), bool),
            key,
        )
        msg = {name: np.asarray(v) for name, v in msg.items()}
        check_message(msg, tuple(np.shape(data["images"])[1:3]))  # a style message is never a picture
        messages.append(msg if send is None else send(msg, c))
    return method.build_bank(messages), messages


__all__ = ["SharedTraining", "train_shared", "style_sample", "share_styles"]
