"""Client-side local training: what one lab does with the global model and its own data.

Everything here runs *on the client*: it reads the client's images and labels, and its only output that
may leave the client is the `ClientUpdate` (a model delta and scalar statistics), which the round
compiler passes through `fl.boundary.send_to_server`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[chex.ArrayTree, dict, chex.PRNGKey], tuple[jax.Array, dict]]
# Optional per-batch transform applied on the client before the loss (e.g. style mixing):
# batch_transform(batch, client_id, rng) -> batch.
BatchTransform = Callable[[dict, jax.Array, chex.PRNGKey], dict]


class LocalConfig(NamedTuple):
    local_steps: int
    batch_size: int
    prox_mu: float = 0.0  # FedProx proximal term mu/2 * ||w - w_global||^2 (0 = FedAvg).
    unroll: bool = False  # Unroll the local-step loop instead of lax.scan.


class ClientUpdate(NamedTuple):
    delta: chex.ArrayTree  # Local params minus the global params.
    num_examples: jax.Array  # Real (unpadded) examples the client holds; the aggregation weight.
    loss: jax.Array  # Mean training loss over the local steps.
    aux: Any = ()  # Optional client-reported statistics (weighted-averaged by the server).


def batch_indices(key: chex.PRNGKey, mask: jax.Array, local_steps: int, batch_size: int) -> jax.Array:
    """Indices [local_steps, batch_size] into a padded client array, cycling through a random permutation
    of the client's real examples (so one local epoch sees each real example once).

    Padded slots are sorted to the end of the permutation and never used unless the client has no data
    (then every index is a padding slot and the batch mask is all False).
    """
    n_total = mask.shape[0]
    n_real = jnp.maximum(mask.sum(), 1)
    order = jnp.argsort(jnp.where(mask, jax.random.uniform(key, (n_total,)), 2.0))
    flat = jnp.arange(local_steps * batch_size) % n_real
    return order[flat].reshape(local_steps, batch_size)


def make_client_update(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    cfg: LocalConfig,
    batch_transform: BatchTransform | None = None,
) -> Callable:
    """Builds `client_update(global_params, images, labels, mask, client_id, rng) -> ClientUpdate`.

    The client optimizer state starts fresh every round (clients are stateless, as in FedAvg).
    """

    def objective(params, global_params, batch, rng):
        loss, aux = loss_fn(params, batch, rng)
        if cfg.prox_mu:
            sq = sum(
                jnp.sum(jnp.square(p - g))
                for p, g in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(global_params))
            )
            loss = loss + 0.5 * cfg.prox_mu * sq
        return loss, aux

    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    def client_update(global_params, images, labels, mask, client_id, rng) -> ClientUpdate:
        idx = batch_indices(jax.random.fold_in(rng, 0), mask, cfg.local_steps, cfg.batch_size)

        def step(carry, xs):
            params, opt_state = carry
            step_idx, step_i = xs
            step_rng = jax.random.fold_in(jax.random.fold_in(rng, 1), step_i)
            batch = {"images": images[step_idx], "labels": labels[step_idx], "mask": mask[step_idx]}
            if batch_transform is not None:
                batch = batch_transform(batch, client_id, jax.random.fold_in(step_rng, 0))
            (loss, _), grads = value_and_grad(params, global_params, batch, jax.random.fold_in(step_rng, 1))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), loss

        carry = (global_params, optimizer.init(global_params))
        steps = jnp.arange(cfg.local_steps)
        if cfg.unroll:
            losses = []
            for s in range(cfg.local_steps):
                carry, loss = step(carry, (idx[s], steps[s]))
                losses.append(loss)
            losses = jnp.stack(losses)
        else:
            carry, losses = jax.lax.scan(step, carry, (idx, steps))
        params, _ = carry
        delta = jax.tree_util.tree_map(lambda p, g: p - g, params, global_params)
        return ClientUpdate(delta=delta, num_examples=mask.sum().astype(jnp.float32), loss=losses.mean())

    return client_update
