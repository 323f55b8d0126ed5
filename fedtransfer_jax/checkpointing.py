"""Orbax checkpoints of the server state, one directory per method (and per client for `local`).

Orbax writes each step to a temporary directory and renames it when complete, so a crash never leaves a
half-written checkpoint that a restart would pick up.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def manager(directory: str, save_every: int, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, save_every), max_to_keep=max_to_keep, create=True
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, *, force: bool = False) -> None:
    mngr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(mngr: ocp.CheckpointManager, template):
    """Returns (state, step) from the latest checkpoint, or (None, 0) when there is none."""
    step = mngr.latest_step()
    if step is None:
        return None, 0
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract)), step
