"""DP-FedAvg as an `Aggregator`: user-level (client-level) differential privacy for the federated round.

McMahan, Ramage, Talwar & Zhang 2018, "Learning differentially private recurrent language models" (ICLR):
every sampled client clips its whole update to L2 norm C, the server sums the clipped updates, adds
Gaussian noise N(0, (z C)^2) and divides by the *expected* number of clients per round m (the
fixed-denominator estimator), so one client changes the noised sum by at most C whatever the others do:
the round is a Gaussian mechanism with noise multiplier z, and `privacy.accounting` turns (z, q, rounds)
into (epsilon, delta).

Adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021, "Differentially private learning with
adaptive clipping", NeurIPS): C tracks the `target_quantile` of the clients' update norms. Each client also
sends b_i - 1/2 with b_i = [||Delta_i|| <= C] (sensitivity 1/2); the server noises that sum with std
sigma_b, estimates the unclipped fraction b = (sum + noise) / m + 1/2 and updates C <- C exp(-eta (b - gamma))
(geometric update). The two queries share the privacy budget: with the update noise multiplier
z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) the pair is exactly as private as one Gaussian query with noise
multiplier z (Andrew et al., Thm. 1), so the accountant is called with z.

What the guarantee covers: everything derived from the noised sums (the model, the clip norm). Not
covered: the participation pattern (the server knows who was sampled and who dropped, see
`privacy.accounting` on amplification) and, with `report_loss=True`, the clients' training loss, which
then crosses in the clear for monitoring. Noise is added by the server (central DP): combine with
`privacy.secagg.secure_sum` so that the server also never sees an individual clipped update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedtransfer_jax.fl.aggregators import Aggregator, safe_divide


class DPState(NamedTuple):
    """DP-FedAvg aggregator state: the clip norm of the next round (fixed unless adaptive)."""

    clip_norm: jax.Array  # float32 scalar


def split_noise_multiplier(noise_multiplier: float, clipped_count_stddev: float) -> float:
    """Noise multiplier of the update query so that (update, clipped count) together have `noise_multiplier`.

    Andrew et al. 2021, Thm. 1: z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2); the count query (bits b - 1/2,
    sensitivity 1/2) has noise multiplier 2 sigma_b. Requires z < 2 sigma_b.
    """
    z, sb = float(noise_multiplier), float(clipped_count_stddev)
    if z == 0.0:
        return 0.0
    if not 2.0 * sb > z:
        raise ValueError(
            f"adaptive clipping needs noise_multiplier < 2 * clipped_count_stddev; got z={z}, sigma_b={sb}"
        )
    return (z**-2 - (2.0 * sb) ** -2) ** -0.5


def effective_noise_multiplier(update_noise_multiplier: float, clipped_count_stddev: float) -> float:
    """Inverse of `split_noise_multiplier`: the z to give the accountant for a given update noise."""
    zd, sb = float(update_noise_multiplier), float(clipped_count_stddev)
    if zd == 0.0 or sb == 0.0:
        return 0.0
    return (zd**-2 + (2.0 * sb) ** -2) ** -0.5


def clip_by_global_norm(tree, clip_norm: jax.Array) -> tuple[object, jax.Array]:
    """`tree * min(1, C / ||tree||)` over the whole pytree (global L2 norm) and the norm before clipping.

    A zero tree stays zero (no 0/0); the scale is computed in float32 whatever the leaves' dtype.
    """
    norm = optax.global_norm(tree).astype(jnp.float32)
    scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
    return jax.tree_util.tree_map(lambda x: (x * scale).astype(jnp.float32), tree), norm


def _gaussian_like(key: jax.Array, tree, stddev: jax.Array):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = [jax.random.fold_in(key, i) for i in range(len(leaves))]  # one stream per leaf, by position
    noise = [stddev * jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, noise)


def dp_fedavg(
    clip_norm: float,
    noise_multiplier: float,
    expected_clients_per_round: float,
    *,
    adaptive: bool = False,
    target_quantile: float = 0.5,
    clip_lr: float = 0.2,
    clipped_count_stddev: float | None = None,
    report_loss: bool = False,
) -> Aggregator:
    """DP-FedAvg (McMahan et al. 2018), optionally with adaptive clipping (Andrew et al. 2021).

    Args:
      clip_norm: L2 clip norm C of each client's whole message (the initial C when adaptive).
      noise_multiplier: z, the noise std in units of C (with `adaptive`, the *effective* z of the update
        and count queries together: give this one to the accountant).
      expected_clients_per_round: m, the fixed denominator (clients_per_round for fixed-size sampling,
        q * num_clients for Poisson sampling). Dropped clients still count in m: the estimate shrinks
        rather than the sensitivity growing.
      adaptive: track the `target_quantile` of the update norms with a geometric update of C.
      target_quantile: gamma, the fraction of clients that should end up unclipped.
      clip_lr: eta, the geometric learning rate of C.
      clipped_count_stddev: sigma_b, the noise std of the count of unclipped clients; must exceed z / 2.
        Default max(0.05 m, z): 0.05 m as in Andrew et al. / TFF for many clients per round; with few (the
        labs of this project) 0.05 m < z / 2, so sigma_b = z, which costs the update query sqrt(4/3) more
        noise (z_update = 1.155 z) in exchange for adaptive clipping.
      report_loss: send the client's training loss in the clear (outside the DP guarantee); when False the
        loss contribution is 0 and the metric `loss` reads 0.

    Returns:
      an `Aggregator` whose state is `DPState` and whose server metrics are `clip_norm` (the C used this
      round), `noise_std` (per-coordinate std of the noise in the mean), `total_weight` (clients with data
      that arrived), `loss`, and with `adaptive` `clipped_fraction` (noisy estimate) and `next_clip_norm`.
    """
    if clip_norm <= 0 or noise_multiplier < 0 or expected_clients_per_round <= 0:
        raise ValueError(
            "dp_fedavg needs clip_norm > 0, noise_multiplier >= 0, expected_clients_per_round > 0; got "
            f"{clip_norm}, {noise_multiplier}, {expected_clients_per_round}"
        )
    m = float(expected_clients_per_round)
    if adaptive:
        sigma_b = max(0.05 * m, float(noise_multiplier)) if clipped_count_stddev is None else float(clipped_count_stddev)
        z_update = split_noise_multiplier(noise_multiplier, sigma_b)
    else:
        sigma_b, z_update = 0.0, float(noise_multiplier)

    def init(template):
        del template
        return DPState(clip_norm=jnp.asarray(clip_norm, jnp.float32))

    def client_encode(message, weight, loss, state, ctx):
        del ctx
        # Uniform weight 1 per client that has data: the estimator is unweighted, so no client's example
        # count can scale its influence beyond C.
        w = (jnp.asarray(weight) > 0).astype(jnp.float32)
        clipped, norm = clip_by_global_norm(message, state.clip_norm)
        contribution = {
            "x": jax.tree_util.tree_map(lambda v: w * v, clipped),
            "w": w,
            "loss": w * jnp.asarray(loss, jnp.float32) if report_loss else jnp.zeros((), jnp.float32),
        }
        if adaptive:
            # Centred bit b - 1/2 (sensitivity 1/2), so the server needs no count of participants.
            contribution["unclipped"] = w * ((norm <= state.clip_norm).astype(jnp.float32) - 0.5)
        # No client metrics: a per-client norm would be an unprotected side channel if it were logged.
        return contribution, {}

    def server_decode(summed, state, ctx):
        c = state.clip_norm
        noise_sum = jnp.float32(z_update) * c
        noised = jax.tree_util.tree_map(
            lambda s, n: s + n,
            summed["x"],
            _gaussian_like(jax.random.fold_in(ctx.key, 0), summed["x"], noise_sum),
        )
        mean = jax.tree_util.tree_map(lambda s: s / jnp.float32(m), noised)
        metrics = {
            "clip_norm": c,
            "noise_std": noise_sum / jnp.float32(m),
            "total_weight": summed["w"],
            "loss": safe_divide(summed["loss"], summed["w"]),
        }
        if adaptive:
            count_noise = sigma_b * jax.random.normal(jax.random.fold_in(ctx.key, 1), (), jnp.float32)
            unclipped = (summed["unclipped"] + count_noise) / jnp.float32(m) + 0.5
            new_c = c * jnp.exp(-clip_lr * (unclipped - target_quantile))
            metrics.update(clipped_fraction=1.0 - unclipped, next_clip_norm=new_c)
            state = DPState(clip_norm=new_c.astype(jnp.float32))
        return mean, state, metrics

    return Aggregator("dp_fedavg", init, client_encode, server_decode)


_CONFIG_KEYS = (
    "clip_norm",
    "noise_multiplier",
    "expected_clients_per_round",
    "adaptive",
    "target_quantile",
    "clip_lr",
    "clipped_count_stddev",
    "report_loss",
)


def aggregator_from_config(cfg, clients_per_round: int, *, key: str = "aggregator") -> Aggregator:
    """`dp_fedavg` from a config section (a method spec's `aggregator` without its `name`).

    Keys: `clip_norm` and `noise_multiplier` (required), `expected_clients_per_round` (default
    `clients_per_round`: fixed-size sampling; give q * num_clients for Poisson sampling), `adaptive`,
    `target_quantile`, `clip_lr`, `clipped_count_stddev` (0 or absent: max(0.05 m, z)), `report_loss`. Unknown keys
    are errors naming `key`.
    """
    cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    unknown = sorted(set(cfg) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"config key {key}.{unknown[0]}: unknown; DP-FedAvg takes {list(_CONFIG_KEYS)}")
    for required in ("clip_norm", "noise_multiplier"):
        if required not in cfg:
            raise ValueError(f"config key {key}.{required} is required for the 'dp' aggregator")
    try:
        return dp_fedavg(
            float(cfg["clip_norm"]),
            float(cfg["noise_multiplier"]),
            float(cfg.get("expected_clients_per_round") or clients_per_round),
            adaptive=bool(cfg.get("adaptive", False)),
            target_quantile=float(cfg.get("target_quantile", 0.5)),
            clip_lr=float(cfg.get("clip_lr", 0.2)),
            clipped_count_stddev=(
                float(cfg["clipped_count_stddev"]) if cfg.get("clipped_count_stddev") else None
            ),
            report_loss=bool(cfg.get("report_loss", False)),
        )
    except ValueError as e:
        raise ValueError(f"config key {key}: {e}") from e
