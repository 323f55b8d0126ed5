"""Orbax checkpoints of a federation, one directory per method (and per client for `local`).

Each step holds three items:
  state   the whole round state (server state, per-client state, aggregator state, round): what resume needs
  params  the global model's params alone: what inference needs (restored without knowing the algorithm,
          its server optimizer or its client state)
  meta    JSON: round, rounds planned, the privacy ledger so far, compilations, the config fingerprint

Orbax writes each step to a temporary directory and renames it when complete, so a crash never leaves a
half-written checkpoint that a restart would pick up.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def manager(directory: str, save_every: int, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, save_every), max_to_keep=max_to_keep, create=True
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, params, meta: dict, *, force: bool = False) -> None:
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            params=ocp.args.StandardSave(params),
            meta=ocp.args.JsonSave(meta),
        ),
        force=force,
    )


def abstract(tree) -> Any:
    """Shapes, dtypes and shardings of `tree` (concrete or abstract), for restoring onto the same placement."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


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
    return restored.state, dict(restored.meta or {}), step


def restore_params(directory: str, params_template) -> tuple[Any, dict, int]:
    """(params, meta, step) of the latest checkpoint under `directory`, or (None, {}, 0) when there is none."""
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
                params=ocp.args.StandardRestore(abstract(params_template)), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.params, dict(restored.meta or {}), step
    finally:
        mngr.close()
