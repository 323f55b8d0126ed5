"""How client messages become one server update: an `Aggregator` (what each client contributes and how the
sum becomes a mean) and a `SumProtocol` (how the server learns the sum), both small NamedTuples of pure
functions that the round compiler calls inside the one jitted round.

    contribution, cm = aggregator.client_encode(message, weight, loss, agg_state, client_ctx)  # on client
    payload = protocol.encode(contribution, client_ctx)                  # on client; crosses the boundary
    total = sum of the survivors' payloads (leaf-wise; integer leaves wrap: modular arithmetic)
    summed = protocol.decode(total, server_ctx)                           # server: the sum of contributions
    mean_message, agg_state, metrics = aggregator.server_decode(summed, agg_state, server_ctx)

A contribution is a dict with at least `x` (a tree shaped like the message), `w` (scalar weight) and
`loss` (scalar, weighted like `x`); aggregators may add more scalar or tree entries (e.g. DP's clipping
indicator). Every entry is summed over the clients whose message arrived, nothing else: the server never
touches an individual contribution except through the protocol's payload, which is what the privacy
ledger records.

  weighted_mean()  FedAvg's example-weighted mean (the default)
  plain_sum()      the server sees each payload in the clear (the default protocol)
DP-FedAvg (`fedtransfer_jax.privacy.dp`) is another aggregator; secure aggregation
(`fedtransfer_jax.privacy.secagg`) is another protocol; any aggregator runs under any protocol.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

PyTree = Any
# Key of the summed-contribution dict under which a protocol's decode may return its own scalar metrics
# (e.g. {'aborted': bool}); the round compiler pops it before the aggregator's server_decode.
PROTOCOL_METRICS = "protocol_metrics"


class ClientContext(NamedTuple):
    """What a client knows about the round when it encodes its contribution."""

    position: jax.Array  # int32: index of this client among the round's sampled clients (0..K-1)
    client_id: jax.Array  # int32: global client id
    sampled_ids: jax.Array  # int32 [K]: every sampled client (public: the server announced them)
    round_key: chex.PRNGKey  # the round's shared key (pairwise secrets are derived from it)
    key: chex.PRNGKey  # this client's private key for the round


class ServerContext(NamedTuple):
    """What the server knows when it decodes the summed payloads."""

    sampled_ids: jax.Array  # int32 [K]
    survived: jax.Array  # bool [K]: whose payload arrived (the rest dropped out)
    num_clients: int  # clients in the federation (static)
    round_key: chex.PRNGKey  # the round's shared key
    key: chex.PRNGKey  # the server's private key for the round (e.g. DP noise)


class Aggregator(NamedTuple):
    name: str
    init: Callable[[PyTree], PyTree]  # message template -> aggregator state
    client_encode: Callable[..., tuple[dict, dict]]
    server_decode: Callable[..., tuple[PyTree, PyTree, dict]]


class SumProtocol(NamedTuple):
    name: str
    encode: Callable[[dict, ClientContext], PyTree]  # contribution -> payload (crosses the boundary)
    decode: Callable[[PyTree, ServerContext], dict]  # summed payloads -> summed contribution


def safe_divide(tree: PyTree, denom: jax.Array) -> PyTree:
    """`tree / denom`; a zero denominator (no data, nobody survived) yields zeros, not NaNs."""
    d = jnp.maximum(denom, jnp.finfo(jnp.float32).tiny)
    return jax.tree_util.tree_map(lambda s: jnp.where(denom > 0, s / d, 0.0).astype(s.dtype), tree)


def weighted_mean() -> Aggregator:
    """The mean of the messages weighted by the clients' aggregation weights (FedAvg: example counts)."""

    def client_encode(message, weight, loss, state, ctx):
        del state, ctx
        w = jnp.asarray(weight, jnp.float32)
        x = jax.tree_util.tree_map(lambda m: (w * m).astype(jnp.float32), message)
        return {"x": x, "w": w, "loss": w * loss}, {}

    def server_decode(summed, state, ctx):
        del ctx
        mean = safe_divide(summed["x"], summed["w"])
        return mean, state, {"loss": safe_divide(summed["loss"], summed["w"])}

    return Aggregator("weighted_mean", lambda template: (), client_encode, server_decode)


def plain_sum() -> SumProtocol:
    """No protection: the server adds the contributions it receives."""
    return SumProtocol("plain", lambda contribution, ctx: contribution, lambda total, ctx: total)


def sum_payloads(payloads: PyTree, arrived: jax.Array) -> PyTree:
    """Sum over the leading client axis of the payloads that arrived (float leaves in float32; integer leaves
    in their own dtype, so unsigned sums wrap modulo 2**bits as secure aggregation needs)."""

    def one(x):
        keep = arrived.reshape((-1,) + (1,) * (x.ndim - 1))
        if jnp.issubdtype(x.dtype, jnp.integer):
            return jnp.sum(jnp.where(keep, x, jnp.zeros_like(x)), axis=0, dtype=x.dtype)
        return jnp.sum(jnp.where(keep, x, 0.0).astype(jnp.float32), axis=0)

    return jax.tree_util.tree_map(one, payloads)


def add_payloads(a: PyTree, b: PyTree) -> PyTree:
    """Running sum of partial payload sums (chunked strategies); integers wrap like `sum_payloads`."""
    return jax.tree_util.tree_map(lambda x, y: (x + y).astype(x.dtype), a, b)
