"""Server-side aggregation: weighted means of client messages (pure, jittable)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def weighted_sum(tree: chex.ArrayTree, weights: jax.Array) -> chex.ArrayTree:
    """Sum over the leading client axis of `tree`, weighted by `weights` [K]."""
    return jax.tree_util.tree_map(lambda x: jnp.tensordot(weights.astype(x.dtype), x, axes=(0, 0)), tree)


def weighted_mean(sum_tree: chex.ArrayTree, total_weight: jax.Array) -> chex.ArrayTree:
    """`sum_tree / total_weight`; an all-zero-weight round (no data) yields zeros, not NaNs."""
    denom = jnp.maximum(total_weight, jnp.finfo(jnp.float32).tiny)
    return jax.tree_util.tree_map(
        lambda s: jnp.where(total_weight > 0, s / denom, 0.0).astype(s.dtype), sum_tree
    )
