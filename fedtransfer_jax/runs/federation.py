"""The federation loop: run a compiled round for a number of rounds, with checkpoints, resume and a log.

One federation = one checkpoint directory (`<workdir>/checkpoints/<tag>`). Every checkpoint carries the
whole round state, the global params (for inference) and a JSON `meta` with the privacy ledger so far, the
round count and the compilations, so a resumed run reports the same ledger and counts as an uninterrupted
one. Rows of `metrics.jsonl` past the restored round (written by the interrupted process after its last
checkpoint) are dropped before the rounds are re-run, so the log has every (method, round) once.

Several processes run this loop in lockstep (the round is one SPMD program over all their devices): each
reads the round's metrics from its own replicated copy (`distributed.fetch`), keeps the same ledger, and
saves the same checkpoints (orbax coordinates); only process 0's log writes reach the disk.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, NamedTuple

import numpy as np

from fedtransfer_jax.runtime import checkpointing, distributed, faults, interrupts
from fedtransfer_jax.fl.boundary import PrivacyLedger


# Where the run is (for the one-line "interrupted at <tag> round r" of launch.py): the method being run
# (set by train.py), and the federation and round in progress (set here before each round).
POSITION: dict[str, Any] = {}


def position_text() -> str:
    """'fedavg round 3 of 20' / 'fedavg (before its first round)' / 'start-up (before training)'."""
    if POSITION.get("round"):
        where = f"{POSITION['tag']} round {POSITION['round']} of {POSITION['rounds']}"
        return where + (" (its rounds were done)" if POSITION.get("finished") else "")
    if POSITION.get("method"):
        return f"{POSITION['method']} (before its first round)"
    return "start-up (before training)"


class FederationResult(NamedTuple):
    state: Any  # the final round state
    params: Any  # the final global params (this process's own copy: evaluation runs on one device)
    rounds_run: int  # rounds run by this process (0: restored complete)
    resumed_from: int  # round of the restored checkpoint (0: fresh start)
    round_compilations: int  # traces of the round (this process; the stored count when nothing ran)
    seconds: float  # wall time of the rounds run by this process


def _round_record(tag: str, r: int, metrics: dict, client_names) -> dict:
    ids = np.asarray(metrics["client_ids"])
    survived = np.asarray(metrics.get("survived", np.ones(len(ids), bool)))
    record = {
        "method": tag,
        "round": r,
        "loss": float(metrics["loss"]),
        "clients": [client_names[int(i)] for i, s in zip(ids, survived) if int(i) < len(client_names) and s],
    }
    if not survived.all():
        record["dropped"] = [client_names[int(i)] for i, s in zip(ids, survived) if int(i) < len(client_names) and not s]
    for name, value in metrics.items():
        if name.startswith(("aggregator/", "protocol/")) and np.ndim(value) == 0:
            record[name] = float(value)
    return record


def run_federation(
    *,
    workdir: str,
    tag: str,
    round_fn: Callable,
    init_state: Any,
    data: Any,
    rounds: int,
    get_params: Callable[[Any], Any],
    client_names,
    log,
    checkpoint_every: int,
    ledger: PrivacyLedger | None = None,
    ledger_channel: str = "model_update",
    traces: list | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    config_fingerprint: str = "",
    on_checkpoint: Callable[[str, int, int], None] | None = None,
    validation: Any = None,
) -> FederationResult:
    """Runs rounds `restored+1 .. rounds` of `round_fn` from `init_state` (or the latest checkpoint).

    `traces` is the list the round's `on_trace` appends to (compilation count); `progress(round, rounds,
    loss)` is called after every round (console display); the ledger records the sampled survivors of every
    round under `ledger_channel` and is restored from the checkpoint on resume.

    `validation` (host-side, outside the jitted round; runners.Validation): `validation.start(round)` once
    the checkpoint is restored (its rows past that round were dropped with the training rows), and
    `validation.after_round(round, rounds, params_fn)` after every round (`params_fn()`: this process's copy
    of the global params, valid until the next round donates them), before its checkpoint (it may record
    validation scores in the ledger, which the checkpoint then carries).
    """
    traces = traces if traces is not None else []
    ckpt_dir = os.path.join(workdir, "checkpoints", tag)
    mngr = checkpointing.manager(ckpt_dir, checkpoint_every)
    try:
        restored, meta, start = checkpointing.restore_latest(mngr, init_state)
        state = init_state if restored is None else restored
        if ledger is not None and meta.get("ledger") is not None:
            ledger.load_state_dict(meta["ledger"])
        # Rows the interrupted process wrote after its last checkpoint (or before its first) are redone.
        log.drop(lambda row: row.get("method") == tag and int(row.get("round", 0)) > start)
        start = min(start, rounds)
        if validation is not None:
            validation.start(start)
        num_clients = len(client_names)
        t0 = time.time()
        for r in range(start, rounds):
            interrupts.check()  # a Ctrl-C whose KeyboardInterrupt a finaliser swallowed
            POSITION.update(tag=tag, round=r + 1, rounds=rounds, finished=False)
            state, metrics = round_fn(state, data)
            metrics = distributed.fetch(metrics)  # host values, from this process's replicated copy
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"{tag}: training loss is {loss} in round {r + 1} "
                    f"(try a lower fl.client_lr, or fl.clip_norm > 0)"
                )
            log.write(_round_record(tag, r + 1, metrics, client_names))
            if ledger is not None:
                ids = np.asarray(metrics["client_ids"])
                survived = np.asarray(metrics["survived"])
                # Ids >= num_clients are the empty clients that pad the client axis to the device count.
                ledger.record_round(r + 1, ledger_channel, [int(i) for i, s in zip(ids, survived) if s and i < num_clients])
            if validation is not None:
                validation.after_round(r + 1, rounds, lambda: distributed.to_local(get_params(state.server)))
            if progress is not None:
                progress(r + 1, rounds, loss)
            meta = {
                "round": r + 1,
                "rounds": rounds,
                "round_compilations": len(traces),
                "ledger": ledger.state_dict() if ledger is not None else None,
                "config_fingerprint": config_fingerprint,
            }
            checkpointing.save(mngr, r + 1, state, get_params(state.server), meta, force=(r + 1 == rounds))
            if (r + 1) % max(1, checkpoint_every) == 0 or r + 1 == rounds:
                if on_checkpoint is not None:
                    on_checkpoint(tag, r + 1, rounds)
                if faults.armed():  # a crash test: let the async checkpoint land first
                    mngr.wait_until_finished()
                    faults.crash_point(f"checkpoint:{tag}:{r + 1}")
        mngr.wait_until_finished()
        interrupts.check()  # swallowed in the last round: stop before anything scores it
        POSITION["finished"] = bool(POSITION.get("round"))
    finally:
        mngr.close()
    ran = rounds - start
    compilations = len(traces) if ran else int(meta.get("round_compilations", 0))
    params = distributed.to_local(get_params(state.server))
    resumed_from = start if restored is not None else 0
    return FederationResult(state, params, ran, resumed_from, compilations, time.time() - t0)

