"""Optimizers chosen by name from the config (client and server side)."""

from __future__ import annotations

import optax

_OPTIMIZERS = {
    "sgd": lambda lr, momentum, eps: optax.sgd(lr),
    "momentum": lambda lr, momentum, eps: optax.sgd(lr, momentum=momentum or 0.9),
    "adam": lambda lr, momentum, eps: optax.adam(lr, eps=eps or 1e-8),
    "adamw": lambda lr, momentum, eps: optax.adamw(lr, eps=eps or 1e-8),
    "yogi": lambda lr, momentum, eps: optax.yogi(lr, eps=eps or 1e-3),
    "adagrad": lambda lr, momentum, eps: optax.adagrad(lr, eps=eps or 1e-7),
}
NAMES = tuple(_OPTIMIZERS)


def make_optimizer(
    name: str,
    lr: float,
    momentum: float = 0.0,
    *,
    eps: float = 0.0,
    clip_norm: float = 0.0,
    key: str = "optimizer",
) -> optax.GradientTransformation:
    """`name` in NAMES; `eps` 0 = the optimizer's default (Reddi et al. use eps = tau = 1e-3 for the
    adaptive server optimizers); `clip_norm` > 0 clips each gradient's global norm first. `key` names the
    config key in errors."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"config key {key}: unknown optimizer {name!r}; choose from {sorted(_OPTIMIZERS)}")
    opt = _OPTIMIZERS[name](lr, momentum, eps)
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm else opt
