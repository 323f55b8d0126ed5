"""The round compiler: one federated round (sampling, local training, aggregation, server update) as one
jitted function.

Clients are vectorised with `jax.vmap` (DrJAX-style: map over a `clients` axis, reduce with a weighted
sum) and, when a device mesh is given, the client axis is sharded over the mesh's `clients` axis so the
reduction becomes a cross-device all-reduce. The client-parallel strategy trades memory for parallelism:

  vmap        all K sampled clients at once                      (memory ~ K)
  chunked     a scan over chunks of `chunk_size` vmapped clients  (memory ~ chunk_size)
  sequential  a scan over clients, one at a time                  (memory ~ 1)

  auto        the measured default for the backend (`default_strategy`)

All strategies compute the same round: client keys depend on (seed, round, client id) only, and the
weighted sum is accumulated in float32.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fedtransfer_jax.fl import aggregation
from fedtransfer_jax.fl.boundary import PrivacyLedger, send_to_server
from fedtransfer_jax.fl.client import ClientUpdate

STRATEGIES = ("auto", "vmap", "chunked", "sequential")
CLIENT_AXIS = "clients"


def default_strategy(backend: str | None = None) -> str:
    """Measured on a 2-core CPU (benchmarks/round_speed.py, models/conv.py): every conv already uses all
    cores, so vmapping clients buys no parallelism there and per-client weights cost a grouped/batched
    conv; a scan over clients is fastest. Accelerators want the batch parallelism of vmap."""
    backend = backend or jax.default_backend()
    return "sequential" if backend == "cpu" else "vmap"


class RoundConfig(NamedTuple):
    clients_per_round: int
    strategy: str = "auto"
    chunk_size: int = 0  # for 'chunked'


class ServerState(NamedTuple):
    params: chex.ArrayTree
    opt_state: optax.OptState
    round: jax.Array  # int32 scalar: rounds completed


def make_client_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the `clients` axis. Auto axis type: the compiler propagates the client sharding
    through sampling and vmap (DrJAX-style), and the weighted sum over clients becomes an all-reduce."""
    n = num_devices or jax.device_count()
    return jax.make_mesh((n,), (CLIENT_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def init_server_state(params, server_optimizer: optax.GradientTransformation) -> ServerState:
    # A fresh copy (the round donates its state) without weak types (e.g. from Python scalars), so round
    # 2's inputs match round 1's: one compilation.
    params = jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype, copy=True), params)
    return ServerState(params, server_optimizer.init(params), jnp.zeros((), jnp.int32))


def sample_clients(key: chex.PRNGKey, has_data: jax.Array, k: int) -> jax.Array:
    """k distinct client ids, uniformly among clients that hold data (inside jit)."""
    num = has_data.shape[0]
    if k == num:
        return jnp.arange(num)
    p = has_data.astype(jnp.float32)
    p = jnp.where(p.sum() > 0, p / jnp.maximum(p.sum(), 1.0), 1.0 / num)
    return jax.random.choice(key, num, (k,), replace=False, p=p)


def round_keys(seed: int, round_idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sampling key, client base key) for a round; client c uses fold_in(client_base, c)."""
    rkey = jax.random.fold_in(jax.random.PRNGKey(seed), round_idx)
    return jax.random.fold_in(rkey, 0), jax.random.fold_in(rkey, 1)


def build_round(
    client_update: Callable[..., ClientUpdate],
    server_optimizer: optax.GradientTransformation,
    cfg: RoundConfig,
    *,
    seed: int,
    ledger: PrivacyLedger | None = None,
    mesh: Mesh | None = None,
    on_trace: Callable[[], Any] | None = None,
    jit: bool = True,
    channel: str = "model_update",
) -> Callable:
    """Returns `round_fn(state: ServerState, data) -> (ServerState, metrics)`.

    `data` is a `ClientData`-like tuple (images [C,N,...], labels [C,N,...], mask [C,N]) resident on device.
    `metrics` holds the weighted mean client loss, the sampled client ids and the total weight.
    `on_trace` is called each time the round is traced (used to count compilations).
    `channel` names the client messages in the privacy ledger.
    """
    if cfg.strategy not in STRATEGIES:
        raise ValueError(
            f"config key fl.strategy: unknown strategy {cfg.strategy!r}; choose from {STRATEGIES}"
        )
    k = cfg.clients_per_round
    strategy = default_strategy() if cfg.strategy == "auto" else cfg.strategy
    chunk = {"vmap": k, "sequential": 1, "chunked": cfg.chunk_size or k}[strategy]
    chunk = min(chunk, k)
    n_chunks = math.ceil(k / chunk)

    def constrain(x):
        if mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(CLIENT_AXIS)))

    def round_fn(state: ServerState, data):
        if on_trace is not None:
            on_trace()
        images, labels, mask = data[0], data[1], data[2]
        sample_key, client_key = round_keys(seed, state.round)
        ids = sample_clients(sample_key, mask.any(axis=1), k)
        pad = n_chunks * chunk - k
        valid = jnp.concatenate([jnp.ones((k,), bool), jnp.zeros((pad,), bool)])
        ids_p = jnp.concatenate([ids, jnp.zeros((pad,), ids.dtype)])

        def one_client(cid):
            return client_update(
                state.params, images[cid], labels[cid], mask[cid], cid, jax.random.fold_in(client_key, cid)
            )

        # The message format the server publishes: a delta shaped like the public model, two scalars.
        public = ClientUpdate(delta=state.params, num_examples=jnp.zeros(()), loss=jnp.zeros(()))

        def reduce_chunk(cids, ok):
            if chunk == 1:
                upd = jax.tree_util.tree_map(lambda x: x[None], one_client(cids[0]))
            else:
                upd = jax.vmap(one_client)(constrain(cids))
            # Everything the server sees goes through the boundary (and so into the ledger).
            inbox = send_to_server(upd, ledger, channel=channel, public_template=public)
            msg: ClientUpdate = inbox.payload
            w = msg.num_examples * ok
            return (
                aggregation.weighted_sum(msg.delta, w),
                w.sum(),
                (msg.loss * w).sum(),
                aggregation.weighted_sum(msg.aux, w),
            )

        ids_c, valid_c = ids_p.reshape(n_chunks, chunk), valid.reshape(n_chunks, chunk)
        if n_chunks == 1:
            sum_delta, total_w, loss_sum, sum_aux = reduce_chunk(ids_c[0], valid_c[0])
        else:
            aux_shapes = jax.eval_shape(one_client, ids_p[0]).aux
            zeros = (
                jax.tree_util.tree_map(jnp.zeros_like, state.params),
                jnp.zeros(()),
                jnp.zeros(()),
                jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), aux_shapes),
            )

            def body(acc, xs):
                part = reduce_chunk(*xs)
                return jax.tree_util.tree_map(jnp.add, acc, part), None

            (sum_delta, total_w, loss_sum, sum_aux), _ = jax.lax.scan(body, zeros, (ids_c, valid_c))

        mean_delta = aggregation.weighted_mean(sum_delta, total_w)
        # The server optimizer treats -mean_delta as a pseudo-gradient: FedAvg is SGD with lr 1.
        pseudo_grad = jax.tree_util.tree_map(jnp.negative, mean_delta)
        updates, opt_state = server_optimizer.update(pseudo_grad, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss_sum / jnp.maximum(total_w, 1e-12),
            "client_ids": ids,
            "total_weight": total_w,
            "client_aux": aggregation.weighted_mean(sum_aux, total_w),
        }
        return ServerState(params, opt_state, state.round + 1), metrics

    return jax.jit(round_fn, donate_argnums=(0,)) if jit else round_fn
