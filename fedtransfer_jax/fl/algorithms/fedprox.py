"""FedProx (Li et al. 2020, "Federated optimization in heterogeneous networks"): FedAvg whose local
objective adds the proximal term mu/2 ||w - w_global||^2, which keeps heterogeneous clients' local models
near the global one. Implemented as FedAvg with the term's gradient mu (w - w_global) added to every local
minibatch gradient (identical to differentiating the augmented loss)."""

from __future__ import annotations

import optax

from fedtransfer_jax.fl.algorithms import base
from fedtransfer_jax.fl.algorithms import fedavg as fedavg_lib
from fedtransfer_jax.fl.algorithms.fedavg import fedavg

# FedAvg's server hyper-parameters plus the proximal weight.
DEFAULTS = {**fedavg_lib.DEFAULTS, "mu": 0.01}


def fedprox(
    local: base.LocalTraining,
    server_optimizer: optax.GradientTransformation | None = None,
    *,
    mu: float = DEFAULTS["mu"],
    name: str = "fedprox",
) -> base.Algorithm:
    if mu < 0:
        raise ValueError(f"fedprox: mu must be >= 0, got {mu}")
    return fedavg(local, server_optimizer, name=name, prox_mu=float(mu))


def build(name: str, local: base.LocalTraining, hparams: dict, client_lr: float, key: str) -> base.Algorithm:
    del client_lr
    return fedprox(local, fedavg_lib.server_optimizer(hparams, key), mu=hparams["mu"], name=name)
