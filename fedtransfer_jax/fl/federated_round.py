"""The round compiler: one federated round of any `Algorithm` (client sampling, dropout, every sampled
client's local update, the aggregator, the sum protocol, the server update, the per-client state scatter)
as ONE jitted function.

    state = init_round_state(algorithm, params, num_clients, aggregator)
    round_fn = build_round(algorithm, RoundConfig(clients_per_round=K), seed=0)
    state, metrics = round_fn(state, data)          # data: dict of [C, N, ...] arrays incl. `mask` [C, N]

The round state carries `(server state, per-client state [C, ...], aggregator state, round)`; the sampled
clients' states are gathered by id inside the round and the survivors' new states scattered back, so a
stateful algorithm (SCAFFOLD, FedDyn) costs one jitted function like FedAvg. On one device the clients run
by `fl/strategy.py`'s plan: `jax.vmap` over all (DrJAX-style: map over a `clients` axis, reduce with a sum),
chunks of vmapped clients in a scan, or a scan over single clients (a client whose message cannot arrive, a
dropout or a padding slot, is then skipped, not computed). With a device mesh the round is a `shard_map`
over the mesh's `clients` axis: the sampled clients' data and states are gathered into slot order, each
device runs the plan on its own ceil(K / devices) slots (`client_plan`) and the partial sums meet in one
all-reduce. The same program serves a GPU cluster and a CPU host split into one device per core
(`fedtransfer_jax/runtime/host_devices.py`). Every strategy and device count computes the same round (up to the order
of float sums; tests/test_sharding.py).

Keys: everything derives from `fold_in(PRNGKey(seed), round)`: sampling, dropout, the server's key (e.g. DP
noise), the shared round key (secure aggregation's pairwise secrets) and each client's key
`fold_in(client_base, client id)`, so no random draw depends on the strategy or the device count.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fedtransfer_jax.runtime import distributed
from fedtransfer_jax.fl import aggregators as agg_lib
from fedtransfer_jax.fl import strategy as strategy_lib
from fedtransfer_jax.fl.algorithms.base import Algorithm, RoundInfo, fresh_copy, run_local_steps
from fedtransfer_jax.fl.boundary import PrivacyLedger, send_to_server

STRATEGIES = strategy_lib.STRATEGIES
CLIENT_AXIS = "clients"
PyTree = Any


class RoundConfig(NamedTuple):
    clients_per_round: int
    strategy: str = "auto"
    chunk_size: int = 0  # for 'chunked'
    dropout_rate: float = 0.0  # probability that a sampled client's message never arrives


class RoundState(NamedTuple):
    server: PyTree  # the algorithm's server state
    clients: PyTree  # per-client state, leading axis [C] (() for stateless algorithms)
    aggregator: PyTree  # the aggregator's state (e.g. DP's adaptive clip norm)
    round: jax.Array  # int32 scalar: rounds completed


class RoundKeys(NamedTuple):
    sample: chex.PRNGKey
    clients: chex.PRNGKey  # client c uses fold_in(clients, c)
    dropout: chex.PRNGKey
    server: chex.PRNGKey
    shared: chex.PRNGKey  # the round key every participant knows (pairwise secrets)


def round_keys(seed: int, round_idx: jax.Array) -> RoundKeys:
    rkey = jax.random.fold_in(jax.random.PRNGKey(seed), round_idx)
    return RoundKeys(*(jax.random.fold_in(rkey, i) for i in range(5)))


def make_client_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the `clients` axis of the first `num_devices` devices (default: all). The round maps
    over it with shard_map; Auto axis type lets the compiler place everything outside that map."""
    n = num_devices or jax.device_count()
    return jax.make_mesh((n,), (CLIENT_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n])


def stack_client_state(one: PyTree, num_clients: int) -> PyTree:
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(jnp.asarray(x), (num_clients,) + jnp.shape(x)).copy(), one
    )


def init_round_state(
    algorithm: Algorithm,
    params: PyTree,
    num_clients: int,
    aggregator: agg_lib.Aggregator | None = None,
    mesh: Mesh | None = None,
) -> RoundState:
    """The round state before round 1. With a mesh, the server and aggregator states are replicated on it
    and the per-client state is sharded over its `clients` axis (padded to a multiple of the device count,
    like the client data), so a fresh or restored state matches the round's output placement."""
    aggregator = aggregator or agg_lib.weighted_mean()
    server = algorithm.server_init(params)
    clients = stack_client_state(algorithm.client_init(params), num_clients)
    state = RoundState(
        server, clients, aggregator.init(algorithm.message_template(server)), jnp.zeros((), jnp.int32)
    )
    return place_round_state(state, mesh)


def place_round_state(state: RoundState, mesh: Mesh | None) -> RoundState:
    """The state on `mesh`: server, aggregator and round replicated, per-client state sharded over the
    `clients` axis. With a mesh over several processes each process places only its own shards
    (`distributed.put`); every process computes the same initial state, so the shards agree."""
    if mesh is None:
        return state
    replicated = NamedSharding(mesh, P())
    return RoundState(
        distributed.put_tree(state.server, replicated),
        jax.tree_util.tree_map(lambda x: shard_client_axis(x, mesh), state.clients),
        distributed.put_tree(state.aggregator, replicated),
        distributed.put(state.round, replicated),
    )


def shard_client_axis(x, mesh: Mesh) -> jax.Array:
    """`x` [C, ...] padded with zeros to a multiple of the mesh's device count (padding clients hold no data,
    so they are never sampled) and sharded over its `clients` axis; with several processes each process
    uploads only its own shards (`distributed.put`). Host (numpy) arrays are padded on the host."""
    pad = (-x.shape[0]) % mesh.devices.size
    if pad:
        xp = np if isinstance(x, np.ndarray) else jnp
        x = xp.concatenate([x, xp.zeros((pad,) + x.shape[1:], x.dtype)])
    return distributed.put(x, NamedSharding(mesh, P(CLIENT_AXIS)))


def pin_round_outputs(state: RoundState, metrics: dict, mesh: Mesh | None) -> tuple[RoundState, dict]:
    """Inside the round: the output state placed as `place_round_state` places the input (so a donated
    state comes back with the same shardings and resume restores onto them), and the metrics replicated,
    so that every process can read them on the host (`float(loss)`, the sampled ids) from its own copy."""
    if mesh is None:
        return state, metrics
    replicated = NamedSharding(mesh, P())

    def pin(tree, sharding):
        return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    state = RoundState(
        pin(state.server, replicated),
        pin(state.clients, NamedSharding(mesh, P(CLIENT_AXIS))),
        pin(state.aggregator, replicated),
        pin(state.round, replicated),
    )
    return state, pin(metrics, replicated)


def sample_clients(key: chex.PRNGKey, has_data: jax.Array, k: int) -> jax.Array:
    """k distinct client ids, uniformly among clients that hold data (inside jit)."""
    num = has_data.shape[0]
    if k == num:
        return jnp.arange(num)
    p = has_data.astype(jnp.float32)
    p = jnp.where(p.sum() > 0, p / jnp.maximum(p.sum(), 1.0), 1.0 / num)
    return jax.random.choice(key, num, (k,), replace=False, p=p)


def as_data_dict(data) -> dict:
    """Client data as a dict of [C, N, ...] arrays (accepts `ClientData`-like NamedTuples)."""
    if isinstance(data, dict):
        return data
    if hasattr(data, "_asdict"):
        return dict(data._asdict())
    raise TypeError(f"client data must be a dict or a NamedTuple of arrays, got {type(data).__name__}")


def client_plan(cfg: RoundConfig, num_devices: int = 1) -> strategy_lib.Plan:
    """How each device runs its share of the round's K sampled clients: ceil(K / devices) clients, by
    `cfg.strategy` (one device: all K)."""
    share = -(-int(cfg.clients_per_round) // max(1, int(num_devices)))
    return strategy_lib.resolve(cfg.strategy, share, cfg.chunk_size)


def build_round(
    algorithm: Algorithm,
    cfg: RoundConfig,
    *,
    seed: int,
    aggregator: agg_lib.Aggregator | None = None,
    protocol: agg_lib.SumProtocol | None = None,
    ledger: PrivacyLedger | None = None,
    mesh: Mesh | None = None,
    on_trace: Callable[[], Any] | None = None,
    jit: bool = True,
    channel: str = "model_update",
) -> Callable:
    """Returns `round_fn(state: RoundState, data) -> (RoundState, metrics)` (jitted, donating the state).

    `data` is a dict (or NamedTuple) of client arrays with leading [C, N] axes and a bool `mask` [C, N].
    `metrics`: `loss` (the aggregator's mean client loss), `client_ids` [K], `survived` [K] bool,
    `num_survivors`, `total_weight` and the aggregator's metrics under `aggregator/<name>`.
    `on_trace` is called each time the round is traced (to count compilations); `channel` names the
    client messages in the privacy ledger.
    """
    aggregator = aggregator or agg_lib.weighted_mean()
    protocol = protocol or agg_lib.plain_sum()
    k = int(cfg.clients_per_round)
    if k < 1:
        raise ValueError(f"clients_per_round must be >= 1, got {k}")
    if not 0.0 <= float(cfg.dropout_rate) < 1.0:
        raise ValueError(f"config key fl.dropout_rate must be in [0, 1), got {cfg.dropout_rate}")
    n_dev = 1 if mesh is None else int(mesh.shape[CLIENT_AXIS])
    plan = client_plan(cfg, n_dev)
    chunk, n_chunks = plan.chunk, plan.n_chunks
    per_device = n_chunks * chunk
    slots = n_dev * per_device  # K sampled clients + padding slots (never arrive, never computed)
    pad = slots - k

    def run_clients(shared, positions, cids, arrived, data, states, rows, public):
        """The slots' local updates, encodings and the partial sum of what arrived: a scan over chunks of
        `chunk` vmapped clients. `rows[i]` indexes slot i's client in `data` and `states`; `public` is the
        published message format (shapes only)."""
        payload_to_clients, agg_state, ids, keys = shared

        def one_client(position, cid, row):
            client_data = {name: x[row] for name, x in data.items()}
            client_state = jax.tree_util.tree_map(lambda s: s[row], states)
            ckey = jax.random.fold_in(keys.clients, cid)
            out = algorithm.client_update(
                payload_to_clients, client_state, client_data, cid, jax.random.fold_in(ckey, 0)
            )
            ctx = agg_lib.ClientContext(position, cid, ids, keys.shared, jax.random.fold_in(ckey, 1))
            contribution, client_metrics = aggregator.client_encode(
                out.message, out.weight, out.loss, agg_state, ctx
            )
            return protocol.encode(contribution, ctx), out.state, client_metrics

        def run_chunk(pos, chunk_cids, chunk_rows, chunk_arrived):
            if chunk == 1:
                # One client per scan step: a client whose message cannot arrive (a padding slot, a dropout)
                # is not computed at all (its outputs are never used).
                args = (pos[0], chunk_cids[0], chunk_rows[0])
                shapes = jax.eval_shape(one_client, *args)
                skipped = lambda *_: jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
                out = jax.lax.cond(chunk_arrived[0], one_client, skipped, *args)
                payload, new_state, cm = jax.tree_util.tree_map(lambda x: x[None], out)
            else:
                payload, new_state, cm = jax.vmap(one_client)(pos, chunk_cids, chunk_rows)
            # Everything the server sees goes through the boundary (and so into the ledger).
            inbox = send_to_server(payload, ledger, channel=channel, public_template=public)
            return agg_lib.sum_payloads(inbox.payload, chunk_arrived), new_state, cm

        split = lambda x: x.reshape((n_chunks, chunk) + x.shape[1:])
        if n_chunks == 1:
            return run_chunk(positions, cids, rows, arrived)
        shapes = jax.eval_shape(lambda: run_chunk(positions[:chunk], cids[:chunk], rows[:chunk], arrived[:chunk])[0])
        zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

        def body(acc, xs):
            part, new_state, cm = run_chunk(*xs)
            return agg_lib.add_payloads(acc, part), (new_state, cm)

        total, (new_states, client_metrics) = jax.lax.scan(
            body, zeros, (split(positions), split(cids), split(rows), split(arrived))
        )
        merge = lambda x: x.reshape((n_chunks * chunk,) + x.shape[2:])
        return (total, *jax.tree_util.tree_map(merge, (new_states, client_metrics)))

    def round_fn(state: RoundState, data):
        if on_trace is not None:
            on_trace()
        data = as_data_dict(data)
        num_clients = data["mask"].shape[0]
        keys = round_keys(seed, state.round)
        ids = sample_clients(keys.sample, data["mask"].any(axis=1), k)
        if cfg.dropout_rate > 0:
            survived = jax.random.uniform(keys.dropout, (k,)) >= cfg.dropout_rate
        else:
            survived = jnp.ones((k,), bool)
        if algorithm.broadcast_at is not None:  # e.g. a client learning-rate schedule: the round's lr
            payload_to_clients = algorithm.broadcast_at(state.server, state.round)
        else:
            payload_to_clients = algorithm.broadcast(state.server)

        def template_payload():
            ctx = agg_lib.ClientContext(jnp.int32(0), jnp.int32(0), ids, keys.shared, keys.clients)
            message = algorithm.message_template(state.server)
            contribution, _ = aggregator.client_encode(
                message, jnp.float32(0), jnp.float32(0), state.aggregator, ctx
            )
            return protocol.encode(contribution, ctx)

        # The message format the server publishes (public: derived from the server state only).
        public = jax.eval_shape(template_payload)
        positions = jnp.arange(slots, dtype=jnp.int32)
        ids_p = jnp.concatenate([ids, jnp.zeros((pad,), ids.dtype)])
        arrived_p = jnp.concatenate([survived, jnp.zeros((pad,), bool)])
        shared = (payload_to_clients, state.aggregator, ids, keys)

        if mesh is None:
            # Clients read their data and state by id from the resident arrays (no copy of the sampled data).
            total, new_states, client_metrics = run_clients(
                shared, positions, ids_p, arrived_p, data, state.clients, ids_p, public
            )
        else:
            # DrJAX-style map over the `clients` mesh axis: the sampled clients' data and states are gathered
            # into slot order, sharded so that each device holds `per_device` consecutive slots, and every
            # device runs its own scan over its slots (shard_map: no partitioner guesswork, no replicated
            # client work). The partial sums meet in one all-reduce; integer payloads wrap like sum_payloads.
            sharded = NamedSharding(mesh, P(CLIENT_AXIS))
            take = lambda x: jax.lax.with_sharding_constraint(x[ids_p], sharded)
            sampled_data = {name: take(x) for name, x in data.items()}
            sampled_states = jax.tree_util.tree_map(take, state.clients)

            def on_each_device(shared, positions, cids, arrived, d, st):
                total, new_states, cm = run_clients(
                    shared, positions, cids, arrived, d, st, jnp.arange(per_device, dtype=jnp.int32), public
                )
                return jax.lax.psum(total, CLIENT_AXIS), new_states, cm

            total, new_states, client_metrics = jax.shard_map(
                on_each_device,
                mesh=mesh,
                in_specs=(P(), P(CLIENT_AXIS), P(CLIENT_AXIS), P(CLIENT_AXIS), P(CLIENT_AXIS), P(CLIENT_AXIS)),
                out_specs=(P(), P(CLIENT_AXIS), P(CLIENT_AXIS)),
                # The custom_vjp convs/norms differentiate replicated params inside a per-device client: their
                # cotangents vary by device by construction, which the varying-axes checker cannot see.
                check_vma=False,
            )(shared, positions, ids_p, arrived_p, sampled_data, sampled_states)

        sctx = agg_lib.ServerContext(ids, survived, num_clients, keys.shared, keys.server)
        summed = dict(protocol.decode(total, sctx))
        # A protocol may report its own scalars (secure aggregation: clipped values, an aborted round).
        protocol_metrics = summed.pop(agg_lib.PROTOCOL_METRICS, {})
        mean, agg_state, agg_metrics = aggregator.server_decode(summed, state.aggregator, sctx)
        num_survivors = survived.sum()
        info = RoundInfo(state.round, jnp.int32(k), num_survivors, summed["w"], num_clients)
        # A round in which every sampled client dropped out, or whose secure aggregation aborted (fewer
        # survivors than its threshold), leaves the server (and aggregator) unchanged.
        anyone = (num_survivors > 0) & ~jnp.asarray(protocol_metrics.get("aborted", False))
        keep_if_nobody = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(anyone, n, o), new, old)
        server = keep_if_nobody(algorithm.server_update(state.server, mean, info), state.server)
        agg_state = keep_if_nobody(agg_state, state.aggregator)

        # Survivors keep their new client state; dropped clients never finished the round.
        def scatter(all_states, new):
            new = new[:k]
            keep = survived.reshape((k,) + (1,) * (new.ndim - 1))
            return all_states.at[ids].set(jnp.where(keep, new, all_states[ids]))

        clients = jax.tree_util.tree_map(scatter, state.clients, new_states)
        metrics = {
            "loss": agg_metrics.get("loss", jnp.zeros(())),
            "client_ids": ids,
            "survived": survived,
            "num_survivors": num_survivors,
            "total_weight": summed["w"],
            **{f"aggregator/{name}": v for name, v in agg_metrics.items() if name != "loss"},
            **{f"protocol/{name}": v for name, v in protocol_metrics.items()},
        }
        # Per-client metrics from client_encode stay inside the round: reporting them to the host would be a
        # per-client side channel around the aggregator (and around secure aggregation).
        del client_metrics
        return pin_round_outputs(RoundState(server, clients, agg_state, state.round + 1), metrics, mesh)

    return jax.jit(round_fn, donate_argnums=(0,)) if jit else round_fn


def round_compiler(
    algorithm: Any,
    params: Any,
    data: dict,
    *,
    seed: int,
    aggregator: Any = None,
    protocol: Any = None,
    dropout_rate: float = 0.0,
) -> Callable[[int, int], Any]:
    """`compile_round(K, chunk)` for `strategy.probe_memory_model`/`strategy.plan_round`: `algorithm`'s round with K sampled
    clients in chunks of `chunk`, AOT-compiled against the shapes and dtypes of `data` (the placed client
    arrays, or ShapeDtypeStructs of them: uint8 images count 1 byte) and of the round state built from
    `params`. Nothing runs, nothing is donated, no privacy ledger records the probe's tracing."""
    shapes = lambda tree: jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree
    )  # noqa: E731
    data = shapes(dict(data))
    num_clients = data["mask"].shape[0]
    state = shapes(
        jax.eval_shape(lambda p: init_round_state(algorithm, p, num_clients, aggregator), params)
    )

    def compile_round(k: int, chunk: int):
        cfg = RoundConfig(int(k), "chunked", int(chunk), dropout_rate)
        fn = build_round(algorithm, cfg, seed=seed, aggregator=aggregator, protocol=protocol)
        return fn.lower(state, data).compile()

    compile_round.num_clients = num_clients  # plan_round scales its probe points to it
    return compile_round


def init_pooled_state(optimizer, params: PyTree) -> RoundState:
    """The pooled trainer's state before round 1, shaped like a round state (so the federation loop, its
    checkpoints and `get_params` serve it unchanged): server = the params, clients = the optimizer state
    (it persists across rounds), no aggregator state."""
    params = fresh_copy(params)
    return RoundState(params, optimizer.init(params), (), jnp.zeros((), jnp.int32))


def build_pooled_round(
    local_at: Callable[[Any], Any],
    *,
    seed: int,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    on_trace: Callable[[], Any] | None = None,
    jit: bool = True,
) -> Callable:
    """A plain (non-federated) trainer on one client's data, one "round" = `local_at(lr).local_steps` steps:
    `round_fn(state, data) -> (state, metrics)` like `build_round`'s, with `state` from `init_pooled_state`.

    Unlike a one-client FedAvg round, the optimizer state is carried from round to round (Adam's count and
    moments continue), so R rounds of S steps are one uninterrupted R x S-step run; split into rounds only
    for checkpoints, logs and validation. `local_at(lr)` is the local training (optimizer, batch size, batch
    transform) with learning rate `lr` (None: the configured one); with a `schedule` the steps of round r
    use schedule(r), as every federated client of round r does. The optimizer state's structure does not
    depend on the learning rate, so a per-round rebuild continues the same state. Keys: round r's batches
    and steps derive from `fold_in(fold_in(round_keys(seed, r).clients, 0), 0)`, client 0's key in a round."""
    constant = local_at(None)

    def round_fn(state: RoundState, data):
        if on_trace is not None:
            on_trace()
        data = {name: x[0] for name, x in as_data_dict(data).items()}  # the one (pooled) client
        lt = constant if schedule is None else local_at(jnp.asarray(schedule(state.round), jnp.float32))
        rng = jax.random.fold_in(jax.random.fold_in(round_keys(seed, state.round).clients, 0), 0)
        params, opt_state, loss = run_local_steps(lt, state.server, state.clients, data, jnp.int32(0), rng)
        metrics = {"loss": loss, "client_ids": jnp.zeros((1,), jnp.int32), "survived": jnp.ones((1,), bool)}
        return RoundState(params, opt_state, (), state.round + 1), metrics

    return jax.jit(round_fn, donate_argnums=(0,)) if jit else round_fn
