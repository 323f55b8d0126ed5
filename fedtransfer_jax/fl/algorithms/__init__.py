"""Federated algorithms, one module each, behind one interface (`base.Algorithm`), picked by name.

How to add an algorithm:
  1. Write `fl/algorithms/<name>.py` (paper reference in its docstring) exporting
     `DEFAULTS`: a dict of every hyper-parameter with its default, and
     `build(name, local, hparams, client_lr, key) -> base.Algorithm`, where `hparams` is `DEFAULTS` updated
     by the config and `key` is the config key to name in errors.
  2. Import it below and register it with one line: `register("<name>", <name>_lib)`.
  3. Add `tests/test_algorithm_<name>.py` with its known result; the contract tests pick it up by themselves.
  Configs then take it as `method_specs.<m>.algorithm = "<name>"` with `method_specs.<m>.hparams.*` checked
  against `DEFAULTS`.

  fedavg    McMahan et al. 2017                   fedavg.py   (server SGD lr 1)
  fedavgm   Hsu et al. 2019                       fedavg.py   (server momentum)
  fedadam   Reddi et al. 2021                     fedavg.py   (server Adam, eps = tau)
  fedyogi   Reddi et al. 2021                     fedavg.py   (server Yogi)
  fedprox   Li et al. 2020                        fedprox.py  (proximal term mu)
  scaffold  Karimireddy et al. 2020               scaffold.py (client control variates)
  feddyn    Acar et al. 2021                      feddyn.py   (dynamic regularisation)

A method in the config names an algorithm and its own hyper-parameters (`config.method_specs.<method>`),
so two FedProx mu values can run in one job.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Mapping, NamedTuple

from fedtransfer_jax.fl.algorithms import base
from fedtransfer_jax.fl.algorithms import feddyn as feddyn_lib
from fedtransfer_jax.fl.algorithms import fedavg as fedavg_lib
from fedtransfer_jax.fl.algorithms import fedprox as fedprox_lib
from fedtransfer_jax.fl.algorithms import scaffold as scaffold_lib
from fedtransfer_jax.fl.algorithms.base import Algorithm, ClientOutput, LocalTraining, RoundInfo

# The algorithm functions, for direct use (`algorithms.fedavg(local)`): imported after the modules, whose
# names they take as attributes of this package.
from fedtransfer_jax.fl.algorithms.feddyn import feddyn
from fedtransfer_jax.fl.algorithms.fedavg import fedavg
from fedtransfer_jax.fl.algorithms.fedprox import fedprox
from fedtransfer_jax.fl.algorithms.scaffold import scaffold
from fedtransfer_jax.fl.optimizers import make_optimizer

class AlgorithmEntry(NamedTuple):
    build: Callable[[str, LocalTraining, dict, float, str], Algorithm]  # (name, local, hp, client_lr, key)
    defaults: dict  # every hyper-parameter the algorithm takes, with its default


REGISTRY: dict[str, AlgorithmEntry] = {}
NAMES: tuple[str, ...] = ()


def register(name: str, module: ModuleType, *, variant: str | None = None) -> None:
    """Make `module` (its `build` and `DEFAULTS`) the algorithm `name`; `variant`: a named set of defaults
    from the module's `VARIANTS` instead (one module, several registry names: the FedOpt family)."""
    global NAMES
    if name in REGISTRY:
        raise ValueError(f"algorithm {name!r} is already registered")
    defaults = module.VARIANTS[variant] if variant else module.DEFAULTS
    REGISTRY[name] = AlgorithmEntry(module.build, dict(defaults))
    NAMES = tuple(REGISTRY)


def unregister(name: str) -> None:
    """Remove `name` (tests that register a toy algorithm clean up with this)."""
    global NAMES
    del REGISTRY[name]
    NAMES = tuple(REGISTRY)


register("fedavg", fedavg_lib)
register("fedavgm", fedavg_lib, variant="fedavgm")
register("fedadam", fedavg_lib, variant="fedadam")
register("fedyogi", fedavg_lib, variant="fedyogi")
register("fedprox", fedprox_lib)
register("scaffold", scaffold_lib)
register("feddyn", feddyn_lib)


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
    "register",
    "resolve_hparams",
    "scaffold",
    "unregister",
]
