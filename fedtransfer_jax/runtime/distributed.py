"""Several processes, one run (multi-controller JAX): joining them, the primary process, barriers, and
placing host data onto a mesh that spans every process's devices.

`jax.distributed` is the engine. `initialize` joins the processes: the coordinator address, the process
count and this process's id come from flags, or (none given) from the cluster environment that
`jax.distributed.initialize()` reads by itself (Cloud TPU pods, SLURM, Open MPI, `JAX_COORDINATOR_ADDRESS`).
Every process then runs the same program on the same (deterministically prepared) data:

  - arrays whose sharding spans several processes are built from this process's own shards (`put`), so no
    process transfers or holds device data for devices it does not own;
  - host code reads round outputs only through `fetch` / `to_local` (a fully replicated array is read from
    the local copy; anything else is gathered with `multihost_utils.process_allgather`);
  - only the primary process (0) writes the workdir's files (`is_primary`); steps the others must wait for
    (the workdir check, the tfds cache build) run through `on_primary`, which hands process 0's failure to
    every process, so nobody is left waiting at a later collective.

With one process every helper is the plain single-process call, so single-process runs are unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

T = TypeVar("T")
_MESSAGE_BYTES = 4096  # process 0's error message, broadcast to the others (longer ones are cut)


class PrimaryError(RuntimeError):
    """Process 0 failed in a step the other processes waited for (its message follows)."""


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """`jax.distributed.initialize` with the values given; the others come from the cluster environment
    (called bare on a TPU pod or under SLURM/Open MPI). Must run before any JAX computation."""
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})


def process_count() -> int:
    return jax.process_count()


def process_index() -> int:
    return jax.process_index()


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_primary() -> bool:
    """The process that writes the workdir (summaries, metrics.jsonl, figures, config.json, log.txt)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (a no-op with one process)."""
    if is_multiprocess():
        multihost_utils.sync_global_devices(name)


def broadcast_text(text: str) -> str:
    """Process 0's `text` on every process (a collective: every process must call it)."""
    if not is_multiprocess():
        return text
    buf = np.zeros(_MESSAGE_BYTES, np.uint8)
    raw = text.encode("utf-8")[:_MESSAGE_BYTES]
    buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return bytes(out.astype(np.uint8)).rstrip(b"\0").decode("utf-8", errors="replace")


def on_primary(fn: Callable[[], T]) -> T | None:
    """Runs `fn` on process 0 while the others wait; returns its result there (None elsewhere).

    When `fn` raises, every process raises: process 0 its own exception, the others `PrimaryError` with
    its message. Without that, the others would wait at their next collective until the heartbeat
    timeout kills them, with no word of why.
    """
    if not is_multiprocess():
        return fn()
    result, error, text = None, None, ""
    if is_primary():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - handed to every process below
            error, text = e, f"{type(e).__name__}: {e}"
    text = broadcast_text(text)
    if error is not None:
        raise error
    if text:
        raise PrimaryError(f"process 0 failed: {text}")
    return result


def from_primary(fn: Callable[[], Any]) -> Any:
    """The pytree of arrays `fn()` computes, computed by process 0 alone and broadcast to every process
    (each gets it on its own default device, as `fn` would have left it).

    For values every process would compute identically but at a cost, e.g. the model's initial params:
    an eager init compiles one small program per op, and only process 0 finds them in the persistent
    compilation cache (JAX writes it from process 0, and the other processes' keys name their devices).
    It also guarantees that every process starts from the same values."""
    if not is_multiprocess():
        return fn()
    tree = on_primary(fn)  # a failure on process 0 reaches every process, not only the broadcast's waiters
    if not is_primary():
        tree = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(fn))
    return jax.tree_util.tree_map(jnp.asarray, multihost_utils.broadcast_one_to_all(tree))


# ----------------------------------------------------------------------------------------------------------
# Placement and host reads.
# ----------------------------------------------------------------------------------------------------------
def put(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """`x` (the same value on every process) placed with `sharding`.

    Where this process holds every device of the sharding this is `jax.device_put`. Otherwise the global
    array is assembled from this process's own shards (`jax.make_array_from_callback` asks only for the
    slices of addressable devices), so each process uploads its part of the client axis and nothing else.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global: a reshard between processes' devices
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put_tree(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree_util.tree_map(lambda x: put(x, sharding), tree)


def _host_value(x: Any) -> np.ndarray:
    """The whole value of `x` in host memory. A fully addressable or fully replicated array is read
    locally; an array sharded over other processes' devices is gathered (a collective)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def fetch(tree: Any) -> Any:
    """Round outputs (metrics) as numpy, safe with several processes (see `_host_value`)."""
    return jax.tree_util.tree_map(_host_value, tree)


def to_local(tree: Any) -> Any:
    """Arrays that span several processes as this process's own copy (uncommitted, on its default
    device), for single-device work such as evaluation and style rendering. With one process, or for
    arrays this process holds entirely, the tree is returned as it is."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        return jnp.asarray(_host_value(x))

    return jax.tree_util.tree_map(one, tree)


def host_local_to_numpy(tree: Any) -> Any:
    """With several processes, arrays that live on one process's devices only (a round run without a
    mesh, e.g. the local baselines, which every process computes alike) as numpy: orbax saves global
    arrays and replicated numpy (by process 0), but refuses process-local device arrays."""
    if not is_multiprocess():
        return tree
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x, tree
    )
