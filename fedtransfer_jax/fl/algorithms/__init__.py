"""Federated algorithms, one module each, behind one interface (`base.Algorithm`), picked by name.

  fedavg    McMahan et al. 2017                   fedavg.py   (server SGD lr 1)
  fedavgm   Hsu et al. 2019                       fedavg.py   (server momentum)
  fedadam   Reddi et al. 2021                     fedavg.py   (server Adam, eps = tau)
  fedyogi   Reddi et al. 2021                     fedavg.py   (server Yogi)
  fedprox   Li et al. 2020                        fedprox.py  (proximal term mu)
  scaffold  Karimireddy et al. 2020               scaffold.py (client control variates)
  feddyn    Acar et al. 2021                      feddyn.py   (dynamic regularisation)

A method in the config names an algorithm and its own hyper-parameters (`config.method_specs.<method>`),
so two FedProx mu values can run in one job. Adding an algorithm = one module, its test, one registry line.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from fedtransfer_jax.fl.algorithms import base
from fedtransfer_jax.fl.algorithms.base import Algorithm, ClientOutput, LocalTraining, RoundInfo
from fedtransfer_jax.fl.algorithms.feddyn import feddyn
from fedtransfer_jax.fl.algorithms.fedavg import fedavg
from fedtransfer_jax.fl.algorithms.fedprox import fedprox
from fedtransfer_jax.fl.algorithms.scaffold import scaffold
from fedtransfer_jax.fl.optimizers import make_optimizer


class AlgorithmEntry(NamedTuple):
    build: Callable[[str, LocalTraining, dict, float, str], Algorithm]  # (name, local, hp, client_lr, key)
    defaults: dict  # every hyper-parameter the algorithm takes, with its default


def _server_opt(hp: dict, key: str):
    return make_optimizer(
        hp["server_optimizer"],
        hp["server_lr"],
        hp["server_momentum"],
        eps=hp["server_eps"],
        key=f"{key}.server_optimizer",
    )


def _fedopt_defaults(opt: str, lr: float, momentum: float = 0.0, eps: float = 0.0) -> dict:
    return {"server_optimizer": opt, "server_lr": lr, "server_momentum": momentum, "server_eps": eps}


_FEDOPT = lambda name, local, hp, client_lr, key: fedavg(local, _server_opt(hp, key), name=name)

REGISTRY: dict[str, AlgorithmEntry] = {
    "fedavg": AlgorithmEntry(_FEDOPT, _fedopt_defaults("sgd", 1.0)),
    "fedavgm": AlgorithmEntry(_FEDOPT, _fedopt_defaults("momentum", 1.0, 0.9)),
    "fedadam": AlgorithmEntry(_FEDOPT, _fedopt_defaults("adam", 0.01, eps=1e-3)),
    "fedyogi": AlgorithmEntry(_FEDOPT, _fedopt_defaults("yogi", 0.01, eps=1e-3)),
    "fedprox": AlgorithmEntry(
        lambda name, local, hp, client_lr, key: fedprox(local, _server_opt(hp, key), mu=hp["mu"], name=name),
        {**_fedopt_defaults("sgd", 1.0), "mu": 0.01},
    ),
    "scaffold": AlgorithmEntry(
        lambda name, local, hp, client_lr, key: scaffold(
            local, client_lr=client_lr, server_lr=hp["server_lr"], name=name
        ),
        {"server_lr": 1.0},
    ),
    "feddyn": AlgorithmEntry(
        lambda name, local, hp, client_lr, key: feddyn(local, alpha=hp["alpha"], name=name), {"alpha": 0.01}
    ),
}
NAMES = tuple(REGISTRY)


def resolve_hparams(algorithm: str, hparams: Mapping[str, Any], key: str) -> dict:
    """The algorithm's defaults updated with `hparams`; an unknown key is an error naming `key.<k>`."""
    if algorithm not in REGISTRY:
        raise ValueError(f"config key {key}.algorithm: unknown algorithm {algorithm!r}; choose from {NAMES}")
    defaults = REGISTRY[algorithm].defaults
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(
            f"config key {key}.{unknown[0]}: algorithm {algorithm!r} takes no hyper-parameter {unknown[0]!r}; "
            f"it takes {sorted(defaults)}"
        )
    return {**defaults, **dict(hparams)}


def build_algorithm(
    algorithm: str,
    local: LocalTraining,
    hparams: Mapping[str, Any] | None = None,
    *,
    client_lr: float = 0.0,
    name: str | None = None,
    key: str = "method_specs",
) -> Algorithm:
    """The named algorithm with `hparams` over its defaults (`client_lr`: SCAFFOLD's control update)."""
    hp = resolve_hparams(algorithm, hparams or {}, key)
    return REGISTRY[algorithm].build(name or algorithm, local, hp, client_lr, key)


__all__ = [
    "Algorithm",
    "AlgorithmEntry",
    "ClientOutput",
    "LocalTraining",
    "NAMES",
    "REGISTRY",
    "RoundInfo",
    "base",
    "build_algorithm",
    "fedavg",
    "feddyn",
    "fedprox",
    "make_optimizer",
    "resolve_hparams",
    "scaffold",
]
