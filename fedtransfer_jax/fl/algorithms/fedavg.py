"""FedAvg and the FedOpt family on one module: local optimizer steps on every sampled client, the
example-weighted mean of the model deltas, and a server optimizer step on the negated mean delta.

  FedAvg   McMahan et al. 2017, "Communication-efficient learning of deep networks from decentralized
           data": server SGD with lr 1 (the new model is the weighted mean of the client models).
  FedAvgM  Hsu et al. 2019: server SGD with momentum.
  FedAdam / FedYogi / FedAdagrad  Reddi et al. 2021, "Adaptive federated optimization": server Adam /
           Yogi / Adagrad on the pseudo-gradient -mean_delta.

Which one it is depends only on the server optimizer (`fl/optimizers.py`); clients are stateless, so the
four registry names are variants of this one module: the same `build`, different server defaults.
"""

from __future__ import annotations

import optax

from fedtransfer_jax.fl.algorithms import base
from fedtransfer_jax.fl.optimizers import make_optimizer


def _server(optimizer: str, lr: float, momentum: float = 0.0, eps: float = 0.0) -> dict:
    return {"server_optimizer": optimizer, "server_lr": lr, "server_momentum": momentum, "server_eps": eps}


# Every variant takes the same four hyper-parameters (so `fedavg` with server_optimizer='adam' is FedAdam);
# only the defaults differ. eps = tau = 1e-3 for the adaptive ones, as in Reddi et al. 2021.
VARIANTS = {
    "fedavg": _server("sgd", 1.0),
    "fedavgm": _server("momentum", 1.0, 0.9),
    "fedadam": _server("adam", 0.01, eps=1e-3),
    "fedyogi": _server("yogi", 0.01, eps=1e-3),
}
DEFAULTS = VARIANTS["fedavg"]


def server_optimizer(hparams: dict, key: str) -> optax.GradientTransformation:
    """The server optimizer the FedOpt hyper-parameters name (`key`: the config key errors name)."""
    return make_optimizer(
        hparams["server_optimizer"],
        hparams["server_lr"],
        hparams["server_momentum"],
        eps=hparams["server_eps"],
        key=f"{key}.server_optimizer",
    )


def build(name: str, local: base.LocalTraining, hparams: dict, client_lr: float, key: str) -> base.Algorithm:
    del client_lr  # the client optimizer is in `local`
    return fedavg(local, server_optimizer(hparams, key), name=name)


def fedavg(
    local: base.LocalTraining,
    server_optimizer: optax.GradientTransformation | None = None,
    *,
    name: str = "fedavg",
    prox_mu: float = 0.0,
) -> base.Algorithm:
    """FedAvg with a server optimizer (default SGD lr 1). `prox_mu > 0` adds FedProx's proximal term
    (see `fedprox`), which is the same algorithm with a gradient correction."""
    server_optimizer = server_optimizer or optax.sgd(1.0)

    def server_init(params):
        params = base.fresh_copy(params)
        return base.ServerOptState(params, server_optimizer.init(params))

    def client_update(global_params, client_state, data, client_id, rng):
        correction = None
        if prox_mu:
            # d/dw of mu/2 ||w - w_global||^2.
            correction = lambda p: base.tree_scale(base.tree_sub(p, global_params), prox_mu)
        params, loss = base.run_local_training(local, global_params, data, client_id, rng, correction)
        return base.ClientOutput(
            message=base.tree_sub(params, global_params),
            weight=base.num_examples(data),
            state=client_state,
            loss=loss,
        )

    def server_update(state, mean_delta, info):
        del info
        return base.server_opt_step(server_optimizer, state, mean_delta)

    return base.Algorithm(
        name=name,
        server_init=server_init,
        client_init=lambda params: (),
        broadcast=lambda state: state.params,
        client_update=client_update,
        server_update=server_update,
        get_params=lambda state: state.params,
        message_template=lambda state: state.params,  # a delta shaped like the public model
    )
