"""Orbax checkpoints of a federation, one directory per method (and per client for `local`).

Each step holds three items:
  state   the whole round state (server state, per-client state, aggregator state, round): what resume needs
  params  the global model's params alone: what inference needs (restored without knowing the algorithm,
          its server optimizer or its client state)
  meta    JSON: round, rounds planned, the privacy ledger so far, compilations, the config fingerprint

Orbax writes each step to a temporary directory and renames it when complete, so a crash never leaves a
half-written checkpoint that a restart would pick up.

Several processes: every process calls save and restore (orbax coordinates them: each writes the shards
of its own devices, process 0 the metadata and the final rename). Arrays sharded over the mesh are saved
as they are; a state that lives on one process's devices only (a round without a mesh, which every
process computes alike) is saved as numpy by process 0 and restored as numpy, then put back on the local
device. The stored values are the same either way, so a checkpoint restores with any process count.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fedtransfer_jax.runtime import distributed


def manager(directory: str, save_every: int, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, save_every), max_to_keep=max_to_keep, create=True
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, params, meta: dict, *, force: bool = False) -> None:
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(distributed.host_local_to_numpy(state)),
            params=ocp.args.StandardSave(distributed.host_local_to_numpy(params)),
            meta=ocp.args.JsonSave(meta),
        ),
        force=force,
    )


def save_params(directory: str, step: int, params, meta: dict) -> None:
    """One params-only checkpoint at `directory` (the previous one removed once it lands; e.g. the params a
    method chose on its validation tiles), written synchronously; `restore_params` reads it back."""
    mngr = manager(directory, 1, max_to_keep=1)
    try:
        if step in mngr.all_steps():  # a resumed run re-chose the same round: the same params
            return
        for old in mngr.all_steps():  # e.g. a later round's, stored by a process killed before it checkpointed
            mngr.delete(old)
        mngr.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(distributed.host_local_to_numpy(params)), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        mngr.wait_until_finished()
    finally:
        mngr.close()


def abstract(tree) -> Any:
    """Shapes, dtypes and shardings of `tree` (concrete or abstract), for restoring onto the same placement.
    With several processes a process-local array becomes a numpy template (orbax restores it as numpy)."""
    if distributed.is_multiprocess():
        return jax.tree_util.tree_map(
            lambda x: np.zeros(x.shape, x.dtype) if _process_local(x) else ocp.utils.to_shape_dtype_struct(x),
            tree,
        )
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _process_local(x) -> bool:
    return isinstance(x, jax.Array) and x.is_fully_addressable


def _back_on_device(template, restored):
    """Numpy leaves restored for process-local arrays (multi-process, see `abstract`) back on the device."""
    if not distributed.is_multiprocess():
        return restored
    return jax.tree_util.tree_map(
        lambda t, r: jnp.asarray(r) if _process_local(t) and isinstance(r, np.ndarray) else r,
        template,
        restored,
    )


def restore_latest(mngr: ocp.CheckpointManager, state_template) -> tuple[Any, dict, int]:
    """(state, meta, step) from the latest checkpoint, or (None, {}, 0) when there is none."""
    step = mngr.latest_step()
    if step is None:
        return None, {}, 0
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract(state_template)), meta=ocp.args.JsonRestore()
        ),
    )
    return _back_on_device(state_template, restored.state), dict(restored.meta or {}), step


def on_this_device(template) -> Any:
    """`template` with this process's first device as the sharding of every leaf that names none. A
    checkpoint remembers the devices it was saved from (e.g. a 4-device mesh, or several processes'
    devices); without a target sharding orbax refuses to restore it onto any other set of devices."""

    def one(x):
        if getattr(x, "sharding", None) is not None:
            return x
        return jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        )

    return jax.tree_util.tree_map(one, template)


def restore_params(directory: str, params_template) -> tuple[Any, dict, int]:
    """(params, meta, step) of the latest checkpoint under `directory`, or (None, {}, 0) when there is none.
    Leaves of `params_template` without a sharding are restored onto this process's first device."""
    if not os.path.isdir(directory):
        return None, {}, 0
    mngr = manager(directory, 1)
    try:
        step = mngr.latest_step()
        if step is None:
            return None, {}, 0
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(on_this_device(abstract(params_template))),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored.params, dict(restored.meta or {}), step
    finally:
        mngr.close()
