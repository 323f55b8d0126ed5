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


# Learning-rate schedules over the rounds of a run (config.fl.lr_schedule). The index is the round (0-based:
# rounds completed before it), for every method alike: a client's learning rate in round r is schedule(r),
# constant over its local steps (federated, local), and the pooled trainer's steps of round r use the same
# value, so every method follows the same curve over the same examples seen.
SCHEDULES = ("constant", "cosine")


def make_schedule(
    name: str,
    lr: float,
    rounds: int,
    *,
    warmup_rounds: int = 0,
    final_fraction: float = 0.0,
    key: str = "fl.lr_schedule",
) -> optax.Schedule | None:
    """The schedule `name` in SCHEDULES as an optax schedule of the round index, or None for 'constant' (the
    callers then build exactly the optimizer they built before schedules existed: bit for bit the same).

    'cosine': optax's cosine decay from `lr` at round 0 to `final_fraction * lr` at round `rounds` (so the
    last round, index rounds - 1, is just above it); with `warmup_rounds` W > 0, a linear warmup from
    lr / (W + 1) at round 0 to `lr` at round W first (optax.warmup_cosine_decay_schedule, whose decay length
    counts the warmup). `key` names the config key in errors."""
    if name not in SCHEDULES:
        raise ValueError(f"config key {key}: unknown schedule {name!r}; choose from {SCHEDULES}")
    if name == "constant":
        return None
    rounds, warmup = int(rounds), int(warmup_rounds)
    if not 0 <= warmup < rounds:
        raise ValueError(f"config key fl.lr_warmup_rounds must be in [0, fl.rounds={rounds}), got {warmup_rounds}")
    if not 0.0 <= float(final_fraction) <= 1.0:
        raise ValueError(f"config key fl.lr_final_fraction must be in [0, 1], got {final_fraction}")
    end = float(lr) * float(final_fraction)
    if warmup == 0:
        return optax.cosine_decay_schedule(float(lr), decay_steps=rounds, alpha=float(final_fraction))
    return optax.warmup_cosine_decay_schedule(
        init_value=float(lr) / (warmup + 1), peak_value=float(lr), warmup_steps=warmup, decay_steps=rounds, end_value=end
    )
