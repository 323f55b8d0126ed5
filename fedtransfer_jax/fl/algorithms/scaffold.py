"""SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: Stochastic controlled averaging for federated learning").

Heterogeneous clients that take many local steps drift toward their own optima, so FedAvg converges to a
biased point. SCAFFOLD corrects every local gradient by (c - c_i): the server's control variate c minus the
client's c_i (estimates of the global and the local gradient), so local steps follow the global direction.

  client i:  y <- y - lr (g_i(y) + c - c_i)  for K steps, from y = x
             c_i+ = c_i - c + (x - y) / (K lr)        (option II of the paper)
             sends (dy, dc) = (y - x, c_i+ - c_i); keeps c_i+
  server:    x <- x + lr_g * mean(dy);  c <- c + (|S| / N) mean(dc)

Per-client state: c_i (a tree shaped like the model), stacked [C, ...] by the round compiler and sharded
like the client data. Means are uniform over the clients that report (as in the paper); option II's
c_i+ formula assumes SGD local steps with learning rate `client_lr` (with another client optimizer it is an
estimate). Messages are twice a model's size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedtransfer_jax.fl.algorithms import base


DEFAULTS = {"server_lr": 1.0}  # lr_g; the client's lr is the run's client_lr (option II needs it)


class ScaffoldServerState(NamedTuple):
    params: base.PyTree
    control: base.PyTree  # c


class ScaffoldMessage(NamedTuple):
    delta: base.PyTree  # y - x
    control_delta: base.PyTree  # c_i+ - c_i


def scaffold(
    local: base.LocalTraining,
    *,
    client_lr: float,
    server_lr: float = DEFAULTS["server_lr"],
    name: str = "scaffold",
) -> base.Algorithm:
    if isinstance(client_lr, (int, float)) and client_lr <= 0:  # a traced lr (a schedule) is checked upstream
        raise ValueError(f"scaffold: client_lr must be > 0, got {client_lr}")

    def server_init(params):
        params = base.fresh_copy(params)
        return ScaffoldServerState(params, base.tree_zeros_like(params))

    def client_update(payload, c_i, data, client_id, rng):
        x, c = payload
        correction = lambda p: base.tree_sub(c, c_i)
        y, loss = base.run_local_training(local, x, data, client_id, rng, correction)
        scale = 1.0 / (local.local_steps * client_lr)
        c_new = jax.tree_util.tree_map(lambda ci, cc, xx, yy: ci - cc + (xx - yy) * scale, c_i, c, x, y)
        has_data = base.num_examples(data) > 0
        c_new = jax.tree_util.tree_map(lambda new, old: jnp.where(has_data, new, old), c_new, c_i)
        msg = ScaffoldMessage(base.tree_sub(y, x), base.tree_sub(c_new, c_i))
        return base.ClientOutput(msg, has_data.astype(jnp.float32), c_new, loss)

    def server_update(state, mean, info):
        params = jax.tree_util.tree_map(lambda p, d: p + server_lr * d, state.params, mean.delta)
        frac = info.num_survivors.astype(jnp.float32) / info.num_clients
        control = jax.tree_util.tree_map(lambda c, d: c + frac * d, state.control, mean.control_delta)
        return ScaffoldServerState(params, control)

    return base.Algorithm(
        name=name,
        server_init=server_init,
        client_init=base.tree_zeros_like,
        broadcast=lambda state: (state.params, state.control),
        client_update=client_update,
        server_update=server_update,
        get_params=lambda state: state.params,
        message_template=lambda state: ScaffoldMessage(state.params, state.params),
    )


def build(name: str, local: base.LocalTraining, hparams: dict, client_lr: float, key: str) -> base.Algorithm:
    del key
    return scaffold(local, client_lr=client_lr, server_lr=hparams["server_lr"], name=name)
