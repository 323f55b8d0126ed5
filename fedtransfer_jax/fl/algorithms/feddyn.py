"""FedDyn (Acar et al. 2021, "Federated learning based on dynamic regularization").

Each client minimises a dynamically regularised objective whose stationary points agree with the global
objective's, so local optima stop drifting apart:

  client k:  theta_k = argmin L_k(theta) - <g_k, theta> + alpha/2 ||theta - theta_server||^2
             (local optimizer steps with gradient correction -g_k + alpha (theta - theta_server))
             g_k <- g_k - alpha (theta_k - theta_server)          (kept on the client)
             sends theta_k - theta_server
  server:    h <- h - alpha (|P| / m) mean_k(theta_k - theta_server)
             theta_server <- theta_server + mean_k(theta_k - theta_server) - h / alpha

Per-client state g_k (a tree shaped like the model, stacked [C, ...]); means are uniform over the clients
that report, as in the paper (m = all clients).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedtransfer_jax.fl.algorithms import base


DEFAULTS = {"alpha": 0.01}  # the dynamic regulariser's weight


class FedDynServerState(NamedTuple):
    params: base.PyTree
    h: base.PyTree


def feddyn(
    local: base.LocalTraining, *, alpha: float = DEFAULTS["alpha"], name: str = "feddyn"
) -> base.Algorithm:
    if alpha <= 0:
        raise ValueError(f"feddyn: alpha must be > 0, got {alpha}")

    def server_init(params):
        params = base.fresh_copy(params)
        return FedDynServerState(params, base.tree_zeros_like(params))

    def client_update(theta_s, g_k, data, client_id, rng):
        correction = lambda p: jax.tree_util.tree_map(
            lambda g, pp, s: -g + alpha * (pp - s), g_k, p, theta_s
        )
        theta_k, loss = base.run_local_training(local, theta_s, data, client_id, rng, correction)
        delta = base.tree_sub(theta_k, theta_s)
        has_data = base.num_examples(data) > 0
        g_new = jax.tree_util.tree_map(lambda g, d: jnp.where(has_data, g - alpha * d, g), g_k, delta)
        return base.ClientOutput(delta, has_data.astype(jnp.float32), g_new, loss)

    def server_update(state, mean_delta, info):
        frac = info.num_survivors.astype(jnp.float32) / info.num_clients
        h = jax.tree_util.tree_map(lambda hh, d: hh - alpha * frac * d, state.h, mean_delta)
        params = jax.tree_util.tree_map(lambda p, d, hh: p + d - hh / alpha, state.params, mean_delta, h)
        return FedDynServerState(params, h)

    return base.Algorithm(
        name=name,
        server_init=server_init,
        client_init=base.tree_zeros_like,
        broadcast=lambda state: state.params,
        client_update=client_update,
        server_update=server_update,
        get_params=lambda state: state.params,
        message_template=lambda state: state.params,
    )


def build(name: str, local: base.LocalTraining, hparams: dict, client_lr: float, key: str) -> base.Algorithm:
    del client_lr, key
    return feddyn(local, alpha=hparams["alpha"], name=name)
