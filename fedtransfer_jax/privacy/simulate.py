"""A reference driver of one aggregation step, exactly as `fl/aggregators.py` specifies it, for tests, the
audit and benchmarks of the privacy components without the full round compiler:

    contribution, cm = aggregator.client_encode(message, weight, loss, agg_state, client_ctx)   # vmapped
    payload = protocol.encode(contribution, client_ctx)                                        # vmapped
    total = sum_payloads(payloads, survived)
    summed = protocol.decode(total, server_ctx)
    mean, agg_state, metrics = aggregator.server_decode(summed, agg_state, server_ctx)

Keys follow the project's convention (fold_in from one key): client k's private key is
fold_in(fold_in(round_key, 1), client_id), the server's fold_in(round_key, 2).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fedtransfer_jax.fl.aggregators import (
    PROTOCOL_METRICS,
    Aggregator,
    ClientContext,
    ServerContext,
    SumProtocol,
    plain_sum,
    sum_payloads,
)

PyTree = Any


def client_contexts(round_key: jax.Array, client_ids: jax.Array) -> ClientContext:
    """Batched `ClientContext` for the sampled `client_ids` [K] (round_key and sampled_ids shared)."""
    client_ids = jnp.asarray(client_ids, jnp.int32)
    keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.fold_in(round_key, 1), c))(client_ids)
    return ClientContext(
        position=jnp.arange(client_ids.shape[0], dtype=jnp.int32),
        client_id=client_ids,
        sampled_ids=client_ids,
        round_key=round_key,
        key=keys,
    )


CTX_AXES = ClientContext(position=0, client_id=0, sampled_ids=None, round_key=None, key=0)


def encode_clients(
    aggregator: Aggregator, protocol: SumProtocol, messages, weights, losses, agg_state, ctx: ClientContext
):
    """The client half, vmapped over the leading client axis: returns (payloads, contributions, metrics)."""

    def one(message, weight, loss, c):
        contribution, cm = aggregator.client_encode(message, weight, loss, agg_state, c)
        return protocol.encode(contribution, c), contribution, cm

    return jax.vmap(one, in_axes=(0, 0, 0, CTX_AXES))(messages, weights, losses, ctx)


def aggregate(
    aggregator: Aggregator,
    messages: PyTree,
    weights: jax.Array,
    losses: jax.Array,
    agg_state: PyTree,
    round_key: jax.Array,
    client_ids: jax.Array,
    survived: jax.Array | None = None,
    *,
    protocol: SumProtocol | None = None,
    num_clients: int | None = None,
) -> tuple[PyTree, PyTree, dict, PyTree]:
    """One aggregation step over K sampled clients (messages with a leading [K] axis).

    Returns (mean message, new aggregator state, server metrics, payloads [K, ...] as the server saw them).
    """
    protocol = protocol or plain_sum()
    client_ids = jnp.asarray(client_ids, jnp.int32)
    k = client_ids.shape[0]
    survived = jnp.ones((k,), bool) if survived is None else jnp.asarray(survived, bool)
    ctx = client_contexts(round_key, client_ids)
    payloads, _, _ = encode_clients(aggregator, protocol, messages, weights, losses, agg_state, ctx)
    total = sum_payloads(payloads, survived)
    server_ctx = ServerContext(
        sampled_ids=client_ids,
        survived=survived,
        num_clients=int(num_clients or k),
        round_key=round_key,
        key=jax.random.fold_in(round_key, 2),
    )
    summed = dict(protocol.decode(total, server_ctx))
    # A protocol may report its own scalars (e.g. secure aggregation's clipped count) under this key.
    protocol_metrics = summed.pop(PROTOCOL_METRICS, {})
    mean, agg_state, metrics = aggregator.server_decode(summed, agg_state, server_ctx)
    metrics = {**metrics, **{f"{protocol.name}/{k}": v for k, v in protocol_metrics.items()}}
    return mean, agg_state, metrics, payloads
