"""FedProx (Li et al. 2020, "Federated optimization in heterogeneous networks"): FedAvg whose local
objective adds the proximal term mu/2 ||w - w_global||^2, which keeps heterogeneous clients' local models
near the global one. Implemented as FedAvg with the term's gradient mu (w - w_global) added to every local
minibatch gradient (identical to differentiating the augmented loss)."""

from __future__ import annotations

import optax

from fedtransfer_jax.fl.algorithms import base
from fedtransfer_jax.fl.algorithms.fedavg import fedavg


def fedprox(
    local: base.LocalTraining,
    server_optimizer: optax.GradientTransformation | None = None,
    *,
    mu: float = 0.01,
    name: str = "fedprox",
) -> base.Algorithm:
    if mu < 0:
        raise ValueError(f"fedprox: mu must be >= 0, got {mu}")
    return fedavg(local, server_optimizer, name=name, prox_mu=float(mu))
