"""A federation of one run: the compiled round of an algorithm for the run's context (data, mesh, config),
and the resumable loop that trains it. The method runners (`runners.py`) and the style-sharing protocol
(`style_protocol.py`, which trains a shared style model the same way) both build on it, so neither needs
the other.

    compiled = compile_round(ctx, algorithm, clients_per_round=K, federated=True, ledger=ledger, ...)
    result = train_federation(ctx, tag, compiled, data, init_params=params, rounds=R, client_names=names)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from fedtransfer_jax.runs import engine, federation
from fedtransfer_jax.data.clients import ClientData, as_uint8_images
from fedtransfer_jax.fl import aggregators as agg_lib
from fedtransfer_jax.fl import boundary as boundary_lib, federated_round, strategy as strategy_lib
from fedtransfer_jax.fl.algorithms.base import Algorithm, LocalTraining
from fedtransfer_jax.runs.run_context import Context, place_clients


class CompiledRound(NamedTuple):
    round_fn: Any
    traces: list  # one entry per trace of the round (compilations)
    algorithm: Algorithm
    aggregator: agg_lib.Aggregator | None
    mesh: Any
    info: dict  # the resolved client strategy (for the summary)


def compile_round(
    ctx: Context,
    algorithm: Algorithm,
    *,
    clients_per_round: int,
    federated: bool,
    ledger: boundary_lib.PrivacyLedger | None = None,
    aggregator: agg_lib.Aggregator | None = None,
    protocol: agg_lib.SumProtocol | None = None,
    channel: str = "model_update",
    data: ClientData | None = None,
    init_params: Any = None,
) -> CompiledRound:
    """The jitted round of `algorithm` (traced on first use; reusable for several federations of the same
    shapes, e.g. every client's local model).

    `fl.strategy=auto` is planned here (fl/strategy.py): on an accelerator from a memory model probed by
    AOT-compiling the round for `data`'s shapes (the largest chunk that fits the device's memory); on the CPU
    it is `sequential` and nothing is compiled. With a mesh the plan is each device's share of the clients
    (`round.client_plan`; no memory probe). The plan is recorded in the round's `info`."""
    mesh = ctx.mesh if federated else None
    cfg = engine.round_config(ctx.config, clients_per_round, federated=federated, mesh=mesh)
    if cfg.strategy == "auto" and mesh is None and data is not None and init_params is not None:
        shapes = data_shapes(data)
        compile_probe = federated_round.round_compiler(
            algorithm,
            init_params,
            shapes,
            seed=int(ctx.config.seed),
            aggregator=aggregator,
            protocol=protocol,
            dropout_rate=cfg.dropout_rate,
        )
        plan = strategy_lib.plan_round("auto", clients_per_round, compile_round=compile_probe)
        cfg = cfg._replace(strategy=plan.strategy, chunk_size=plan.chunk)
    traces: list = []
    round_fn = federated_round.build_round(
        algorithm,
        cfg,
        seed=int(ctx.config.seed),
        aggregator=aggregator,
        protocol=protocol,
        ledger=ledger,
        mesh=mesh,
        on_trace=lambda: traces.append(1),
        channel=channel,
    )
    devices = 1 if mesh is None else int(mesh.devices.size)
    plan = federated_round.client_plan(cfg, devices)
    info = {"strategy": plan.strategy, "chunk": plan.chunk, "devices": devices}
    return CompiledRound(round_fn, traces, algorithm, aggregator, mesh, info)


def data_shapes(data: ClientData) -> dict:
    """ShapeDtypeStructs of the round's data as `place_clients` will place it (8-bit images as uint8)."""
    arrays = dict(data._asdict())
    images = as_uint8_images(arrays["images"])
    if images is not None:
        arrays["images"] = images
    return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in arrays.items()}


def train_federation(
    ctx: Context,
    tag: str,
    compiled: CompiledRound,
    data: ClientData,
    *,
    init_params: Any,
    rounds: int,
    client_names,
    ledger: boundary_lib.PrivacyLedger | None = None,
    channel: str = "model_update",
    validation: Any = None,
) -> federation.FederationResult:
    """Runs (or resumes) `rounds` rounds of the compiled round on `data` (`validation`: see
    federation.run_federation)."""
    placed = place_clients(data, compiled.mesh)
    state = federated_round.init_round_state(
        compiled.algorithm, init_params, placed["mask"].shape[0], aggregator=compiled.aggregator, mesh=compiled.mesh
    )
    return _run_federation(
        ctx,
        tag,
        rounds,
        round_fn=compiled.round_fn,
        init_state=state,
        data=placed,
        get_params=compiled.algorithm.get_params,
        client_names=client_names,
        ledger=ledger,
        ledger_channel=channel,
        traces=compiled.traces,
        validation=validation,
    )


def train_pooled(
    ctx: Context,
    tag: str,
    local_at: Callable[[Any], LocalTraining],
    data: ClientData,
    *,
    init_params: Any,
    rounds: int,
    validation: Any = None,
) -> federation.FederationResult:
    """Runs (or resumes) the pooled trainer (`federated_round.build_pooled_round`: one optimizer whose state
    persists across rounds) on `data` (one client holding the pooled tiles), with the run's learning-rate
    schedule and the federation loop's checkpoints, resume, log and validation. The round state's per-client
    part is the optimizer state, so a checkpoint carries Adam's count and moments and resume continues them."""
    traces: list = []
    round_fn = federated_round.build_pooled_round(
        local_at,
        seed=int(ctx.config.seed),
        schedule=engine.client_lr_schedule(ctx.config),
        on_trace=lambda: traces.append(1),
    )
    state = federated_round.init_pooled_state(local_at(None).optimizer, init_params)
    return _run_federation(
        ctx,
        tag,
        rounds,
        round_fn=round_fn,
        init_state=state,
        data=place_clients(data, None),
        get_params=lambda params: params,
        client_names=["pooled"],
        traces=traces,
        validation=validation,
    )


def _run_federation(ctx: Context, tag: str, rounds: int, **kw) -> federation.FederationResult:
    """`federation.run_federation` with the run's workdir, log, checkpoint cadence, fingerprint and console
    progress bar."""
    progress = ctx.console.progress(tag, rounds) if ctx.console is not None else None
    try:
        return federation.run_federation(
            workdir=ctx.workdir,
            tag=tag,
            rounds=rounds,
            log=ctx.log,
            checkpoint_every=int(ctx.config.checkpoint_every),
            progress=progress.update if progress is not None else None,
            config_fingerprint=ctx.fingerprint,
            on_checkpoint=ctx.on_checkpoint,
            **kw,
        )
    finally:
        if progress is not None:
            progress.close()
