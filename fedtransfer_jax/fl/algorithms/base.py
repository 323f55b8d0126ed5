"""What a federated algorithm is: a small NamedTuple of pure functions (optax-style), and the local
training loop every algorithm's client shares.

The round compiler (`fl/federated_round.py`) drives an `Algorithm` like this, inside one jitted function:

    server_state = alg.server_init(params)                       # once, on the server
    client_state = alg.client_init(params)                       # once per client (stacked [C, ...])
    ... every round:
    payload = alg.broadcast(server_state)                        # what the sampled clients receive
    out = alg.client_update(payload, client_state[c], data[c], c, rng)   # on client c (vmapped)
    #   out.message crosses the boundary (fl.boundary.send_to_server -> privacy ledger), weighted by
    #   out.weight, through the configured aggregator (fl.aggregators); out.state stays on the client
    mean = aggregate(out.message, out.weight)                    # fl.aggregators: weighted mean, DP, ...
    server_state = alg.server_update(server_state, mean, info)   # skipped when no client survived
    params = alg.get_params(server_state)

`alg.message_template(server_state)` is the message format the server publishes (the ledger does not flag
a tensor of that format even when its shape happens to equal an image's, e.g. a 3x3x64x64 kernel on 64 px
tiles). Algorithms with no per-client state return `()` from `client_init`: stateless clients cost nothing.

Client data is a dict of arrays with a leading example axis (`images`, `labels`, ..., and `mask` marking the
real examples of a padded client); a batch is the same dict indexed by example ids.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from fedtransfer_jax.runtime.pixels import UINT8_TO_UNIT

PyTree = Any
LossFn = Callable[[PyTree, dict, chex.PRNGKey], tuple[jax.Array, dict]]
# Optional per-batch transform applied on the client before the loss (e.g. style mixing):
# batch_transform(batch, client_id, rng) -> batch.
BatchTransform = Callable[[dict, jax.Array, chex.PRNGKey], dict]
# Optional replacement of the minibatch gradient of a local step, computed from the client's whole data:
# gradient_fn(loss_fn, params, data, prepare, rng) -> (grads, loss), where prepare(batch, rng) -> batch decodes
# uint8 images and applies the batch transform. E.g. DP-SGD's sampled, per-unit clipped and noised gradient
# (`fedtransfer_jax.privacy.dpsgd`).
GradientFn = Callable[[LossFn, PyTree, dict, Callable[[dict, chex.PRNGKey], dict], chex.PRNGKey], tuple[PyTree, jax.Array]]


class ClientOutput(NamedTuple):
    """One client's result of a round."""

    message: PyTree  # crosses the client -> server boundary (through the aggregator)
    weight: jax.Array  # scalar aggregation weight (0: contributes nothing)
    state: PyTree  # the client's new persistent state (never leaves the client; () when stateless)
    loss: jax.Array  # mean local training loss (reported to the server as a scalar)


class RoundInfo(NamedTuple):
    """What the server knows about a round when it updates its state."""

    round: jax.Array  # int32: rounds completed before this one
    num_sampled: jax.Array  # clients sampled this round
    num_survivors: jax.Array  # clients whose message arrived (dropout)
    total_weight: jax.Array  # sum of the survivors' aggregation weights
    num_clients: int  # clients in the federation (static)


class Algorithm(NamedTuple):
    """A federated algorithm: pure functions over explicit state (see the module docstring)."""

    name: str
    server_init: Callable[[PyTree], PyTree]
    client_init: Callable[[PyTree], PyTree]
    broadcast: Callable[[PyTree], PyTree]
    client_update: Callable[[PyTree, PyTree, dict, jax.Array, chex.PRNGKey], ClientOutput]
    server_update: Callable[[PyTree, PyTree, RoundInfo], PyTree]
    get_params: Callable[[PyTree], PyTree]
    message_template: Callable[[PyTree], PyTree]
    # Optional: `broadcast_at(server_state, round)` replaces `broadcast` when the payload depends on the round
    # (rounds completed before this one), e.g. a client learning-rate schedule (`with_client_lr_schedule`).
    broadcast_at: Callable[[PyTree, jax.Array], PyTree] | None = None


class LocalTraining(NamedTuple):
    """How a client trains locally: shared by every algorithm (they differ in the gradient correction)."""

    loss_fn: LossFn
    optimizer: optax.GradientTransformation
    local_steps: int
    batch_size: int
    batch_transform: BatchTransform | None = None
    unroll: bool = False  # unroll the local-step loop instead of lax.scan
    gradient_fn: GradientFn | None = None  # replaces the minibatch gradient (batch_size is then unused)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: x - y, a, b)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: x + y, a, b)


def tree_scale(a: PyTree, s) -> PyTree:
    return jax.tree_util.tree_map(lambda x: (x * s).astype(x.dtype), a)


def tree_zeros_like(a: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.zeros_like, a)


def tree_sq_norm(a: PyTree) -> jax.Array:
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(a))


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


def decode_images(images: jax.Array) -> jax.Array:
    """8-bit images as kept on device (uint8: 4x less memory, so thousands of clients stay resident) ->
    float32 in [0, 1]; float images pass through unchanged. uint8 is decoded by the table the host uses
    (``data.pixels``), so a round is the same whether its images were stored as uint8 or float32."""
    if not jnp.issubdtype(images.dtype, jnp.integer):
        return images
    if images.dtype == jnp.uint8:
        return jnp.asarray(UINT8_TO_UNIT)[images.astype(jnp.int32)]  # bitwise the host's decode_uint8
    return images.astype(jnp.float32) / 255.0


def num_examples(data: dict) -> jax.Array:
    """Real (unpadded) examples a client holds, float32 scalar: FedAvg's aggregation weight."""
    return data["mask"].sum().astype(jnp.float32)


def run_local_training(
    lt: LocalTraining,
    params: PyTree,
    data: dict,
    client_id: jax.Array,
    rng: chex.PRNGKey,
    grad_correction: Callable[[PyTree], PyTree] | None = None,
) -> tuple[PyTree, jax.Array]:
    """`lt.local_steps` optimizer steps from `params` on the client's own data.

    `grad_correction(params) -> tree` is added to every minibatch gradient: FedProx's mu (w - w_global),
    SCAFFOLD's c - c_i, FedDyn's -g_i + alpha (w - w_global). The optimizer state starts fresh every round.
    Integer (uint8) `images` are decoded to float32 in [0, 1] as each batch is drawn, before the batch
    transform. Returns (final params, mean minibatch loss). Keys: batches from fold_in(rng, 0), step s uses
    fold_in(fold_in(rng, 1), s) (batch transform: fold_in(., 0), loss: fold_in(., 1)). With
    `lt.gradient_fn` the step's gradient is `lt.gradient_fn(loss_fn, p, data, prepare, step_rng)` on the whole
    client data instead of a minibatch (`prepare` decodes and transforms whatever batch it is given).
    """
    params, _, loss = run_local_steps(lt, params, lt.optimizer.init(params), data, client_id, rng, grad_correction)
    return params, loss


def run_local_steps(
    lt: LocalTraining,
    params: PyTree,
    opt_state: optax.OptState,
    data: dict,
    client_id: jax.Array,
    rng: chex.PRNGKey,
    grad_correction: Callable[[PyTree], PyTree] | None = None,
) -> tuple[PyTree, optax.OptState, jax.Array]:
    """`run_local_training` continuing from a given optimizer state: (params, optimizer state, mean loss).
    The pooled trainer (`federated_round.build_pooled_round`) carries the state from round to round."""
    idx = batch_indices(jax.random.fold_in(rng, 0), data["mask"], lt.local_steps, lt.batch_size)
    grad_fn = jax.value_and_grad(lt.loss_fn, has_aux=True)

    def prepare(batch, prepare_rng):
        batch = dict(batch)
        if "images" in batch:  # decoded per batch: the client's data stay 8-bit on device
            batch["images"] = decode_images(batch["images"])
        if lt.batch_transform is not None:
            batch = lt.batch_transform(batch, client_id, prepare_rng)
        return batch

    def step(carry, xs):
        p, opt_state = carry
        step_idx, step_i = xs
        step_rng = jax.random.fold_in(jax.random.fold_in(rng, 1), step_i)
        if lt.gradient_fn is not None:
            grads, loss = lt.gradient_fn(lt.loss_fn, p, data, prepare, step_rng)
        else:
            batch = prepare({k: v[step_idx] for k, v in data.items()}, jax.random.fold_in(step_rng, 0))
            (loss, _), grads = grad_fn(p, batch, jax.random.fold_in(step_rng, 1))
        if grad_correction is not None:
            grads = tree_add(grads, grad_correction(p))
        updates, opt_state = lt.optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    carry = (params, opt_state)
    steps = jnp.arange(lt.local_steps)
    if lt.unroll:
        losses = []
        for s in range(lt.local_steps):
            carry, loss = step(carry, (idx[s], steps[s]))
            losses.append(loss)
        losses = jnp.stack(losses)
    else:
        carry, losses = jax.lax.scan(step, carry, (idx, steps))
    return carry[0], carry[1], losses.mean()


def with_client_lr_schedule(build: Callable[[Any], Algorithm], schedule: Callable[[jax.Array], jax.Array]) -> Algorithm:
    """The algorithm `build(lr)` (its local training's optimizer built with learning rate `lr`) whose clients
    train round r with lr = schedule(r). The server state, messages and checkpoints are `build`'s own; the
    payload to the clients is (payload, lr), and each client rebuilds the algorithm with that traced lr inside
    the jitted round (optax takes an array learning rate), so SCAFFOLD's control update also sees the round's
    lr. A round in which nobody's message arrived still advances the schedule (the round counter does)."""
    ref = build(float(schedule(0)))

    def client_update(payload, client_state, data, client_id, rng):
        inner, lr = payload
        return build(lr).client_update(inner, client_state, data, client_id, rng)

    return ref._replace(
        client_update=client_update,
        broadcast=lambda state: (ref.broadcast(state), jnp.asarray(schedule(0), jnp.float32)),
        broadcast_at=lambda state, r: (ref.broadcast(state), jnp.asarray(schedule(r), jnp.float32)),
    )


class ServerOptState(NamedTuple):
    """Server state of the FedOpt family (FedAvg, FedAvgM, FedAdam, FedYogi, FedProx)."""

    params: PyTree
    opt_state: optax.OptState


def server_opt_step(
    server_optimizer: optax.GradientTransformation, state: ServerOptState, mean_delta: PyTree
) -> ServerOptState:
    """Reddi et al. 2021: the server optimizer treats -mean_delta as a pseudo-gradient (SGD lr 1 = FedAvg)."""
    pseudo_grad = jax.tree_util.tree_map(jnp.negative, mean_delta)
    updates, opt_state = server_optimizer.update(pseudo_grad, state.opt_state, state.params)
    return ServerOptState(optax.apply_updates(state.params, updates), opt_state)


def fresh_copy(params: PyTree) -> PyTree:
    """A copy without weak types (round 2's inputs must match round 1's: one compilation) that the round
    may donate."""
    return jax.tree_util.tree_map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype, copy=True), params)
