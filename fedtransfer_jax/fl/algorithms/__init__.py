"""Federated algorithms as configurations of one engine, and optimizers chosen by name.

  fedavg       clients: local SGD/Adam steps; server: SGD lr 1 on the mean delta (McMahan et al. 2017)
  fedprox      fedavg + proximal term mu/2 ||w - w_global||^2 in every local objective (Li et al. 2020)
  local        each client trains alone (a one-client "federation" per client; no aggregation)
  centralized  all training data pooled into one client: the upper bound that needs no privacy at all
  fedtransfer  fedavg + style sharing: clients share AdaIN style statistics of a federatedly trained style
               network and train on their images restyled into foreign styles (Ma et al. 2021)
  fedtransfer_fourier  the same with low-frequency Fourier amplitudes as the style (FedDG-ELCFS, Liu 2021)
Server optimizers other than SGD(1) give FedAvgM / FedAdam (Reddi et al. 2021) for free.
"""

from __future__ import annotations

from typing import NamedTuple

import optax

_OPTIMIZERS = {
    "sgd": lambda lr, momentum: optax.sgd(lr),
    "momentum": lambda lr, momentum: optax.sgd(lr, momentum=momentum or 0.9),
    "adam": lambda lr, momentum: optax.adam(lr),
    "adamw": lambda lr, momentum: optax.adamw(lr),
}


def make_optimizer(
    name: str, lr: float, momentum: float = 0.0, *, key: str = "optimizer", clip_norm: float = 0.0
) -> optax.GradientTransformation:
    if name not in _OPTIMIZERS:
        raise ValueError(f"config key {key}: unknown optimizer {name!r}; choose from {sorted(_OPTIMIZERS)}")
    opt = _OPTIMIZERS[name](lr, momentum)
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt


class Method(NamedTuple):
    name: str
    federated: bool  # clients share a global model
    pooled: bool  # all data in one client (centralized)
    prox: bool  # FedProx proximal term
    style: str = ""  # '' | 'adain' | 'fourier': FedTransfer style sharing


METHODS = {
    "local": Method("local", federated=False, pooled=False, prox=False),
    "centralized": Method("centralized", federated=False, pooled=True, prox=False),
    "fedavg": Method("fedavg", federated=True, pooled=False, prox=False),
    "fedprox": Method("fedprox", federated=True, pooled=False, prox=True),
    "fedtransfer": Method("fedtransfer", federated=True, pooled=False, prox=False, style="adain"),
    "fedtransfer_fourier": Method(
        "fedtransfer_fourier", federated=True, pooled=False, prox=False, style="fourier"
    ),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"config key methods: unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]
