"""The method runner: trains one method of `config.methods` with the shared engine and evaluates it.

  federated    the method's algorithm over all clients, `fl.clients_per_round` sampled per round (with
               style sharing first when the spec names a style technique)
  local        the same compiled round on one client's data at a time (each client its own model)
  centralized  the same compiled round on one client holding the pooled training data
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedtransfer_jax.runtime import distributed
from fedtransfer_jax.runs import engine, evaluation, style_protocol
from fedtransfer_jax.data.clients import ClientData, pad_clients
from fedtransfer_jax.runs.federated_training import compile_round, train_federation
from fedtransfer_jax.fl import boundary as boundary_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import postprocess_choice
from fedtransfer_jax.runs.run_context import Context


def _eval_kw(ctx: Context) -> dict:
    return dict(threshold=float(ctx.config.eval.threshold), tolerance=float(ctx.config.eval.tolerance))


def run_federated(ctx: Context, spec: engine.MethodSpec) -> tuple[Any, dict]:
    """A federated method: (final params, extra summary entries: privacy ledger, style, rounds)."""
    names = ctx.data.client_names
    k = engine.clients_per_round(ctx.config, len(names))
    ledger = boundary_lib.PrivacyLedger(image_hw=tuple(ctx.data.train.images.shape[2:4]), client_names=names)
    extra: dict = {"spec": spec.as_dict()}
    train_data, batch_transform = ctx.data.train, None
    if spec.style:
        train_data, batch_transform, extra["style"] = style_protocol.setup_style_sharing(ctx, spec, ledger, k)
    local = engine.local_training(ctx.config, ctx.loss_fn, batch_transform=batch_transform)
    algorithm = engine.build_algorithm(spec, local, float(ctx.config.fl.client_lr))
    aggregator, protocol = engine.build_aggregation(spec, k)
    compiled = compile_round(
        ctx,
        algorithm,
        clients_per_round=k,
        federated=True,
        ledger=ledger,
        aggregator=aggregator,
        protocol=protocol,
        data=train_data,
        init_params=ctx.init_params,
    )
    result = train_federation(
        ctx,
        spec.name,
        compiled,
        train_data,
        init_params=ctx.init_params,
        rounds=int(ctx.config.fl.rounds),
        client_names=names,
        ledger=ledger,
    )
    extra["_ledger"] = ledger  # the post-processing scores still have to cross (methods.postprocess)
    accounting = engine.privacy_accounting(
        spec, rounds=int(ctx.config.fl.rounds), clients_per_round=k, num_clients=len(names)
    )
    if accounting is not None:
        extra["differential_privacy"] = accounting
    extra["round_compilations"] = result.round_compilations
    extra["resumed_from_round"] = result.resumed_from
    extra["client_strategy"] = compiled.info
    return result.params, extra


def run_centralized(ctx: Context, spec: engine.MethodSpec) -> tuple[Any, dict]:
    """All training tiles pooled in one client; as many local steps per round as the federated methods run
    in total per round, so every method spends the same gradient computations."""
    data = ctx.data.train
    mask = np.asarray(data.mask)
    pooled = pad_clients([(np.asarray(data.images)[mask], np.asarray(data.labels)[mask])])
    k = engine.clients_per_round(ctx.config, len(ctx.data.client_names))
    local = engine.local_training(ctx.config, ctx.loss_fn, local_steps=int(ctx.config.fl.local_steps) * k)
    algorithm = engine.build_algorithm(engine.MethodSpec(spec.name), local, float(ctx.config.fl.client_lr))
    compiled = compile_round(ctx, algorithm, clients_per_round=1, federated=False)
    result = train_federation(
        ctx,
        spec.name,
        compiled,
        pooled,
        init_params=ctx.init_params,
        rounds=int(ctx.config.fl.rounds),
        client_names=["pooled"],
    )
    return result.params, {"round_compilations": result.round_compilations, "resumed_from_round": result.resumed_from}


def run_local(ctx: Context, spec: engine.MethodSpec) -> tuple[dict, dict]:
    """One model per client, each trained only on its own data: ({client: params}, extra)."""
    local = engine.local_training(ctx.config, ctx.loss_fn)
    algorithm = engine.build_algorithm(engine.MethodSpec(spec.name), local, float(ctx.config.fl.client_lr))
    compiled = compile_round(ctx, algorithm, clients_per_round=1, federated=False)  # shared by every client
    per_client, resumed, compilations = {}, {}, 0
    for c, name in enumerate(ctx.data.client_names):
        one = ClientData(*(np.asarray(a)[c : c + 1] for a in ctx.data.train))
        result = train_federation(
            ctx,
            f"{spec.name}/{name}",
            compiled,
            one,
            init_params=ctx.init_params,
            rounds=int(ctx.config.fl.rounds),
            client_names=[name],
        )
        per_client[name] = result.params
        resumed[name] = result.resumed_from
        compilations = max(compilations, result.round_compilations)
    return per_client, {"round_compilations": compilations, "resumed_from_round": resumed}


def postprocess(ctx: Context, spec: engine.MethodSpec, name: str, ledger) -> dict | None:
    """Chooses the method's post-processing on the validation tiles (stored for predict/evaluate in
    `<workdir>/postprocess/<method>.json`, per client for local models) and scores it on the test tiles."""
    data, tol = ctx.data, float(ctx.config.eval.tolerance)
    if not any(len(v[0]) for v in data.val.values()):
        return None
    params = ctx.final_params[name]
    ids = {n: i for i, n in enumerate(data.client_names)}
    out: dict = {}
    if spec.kind == "local":
        per_client = {}
        for n in data.client_names:
            choice = evaluation.choose_postprocessing(ctx.prob_fn, lambda c: params[n], {n: data.val[n]}, tolerance=tol)
            if choice is None:
                continue
            choice.pop("tables")
            if distributed.is_primary():  # every process chose the same; process 0 writes the workdir
                postprocess_choice.save_choice(ctx.workdir, f"{name}/{n}", choice)
            settings = pps.PostprocessSettings.from_dict(choice["settings"])
            per_client[n] = {
                "settings": choice["settings"],
                **evaluation.evaluate_split_postprocessed(ctx.prob_fn, params[n], *data.test[n], settings, tolerance=tol),
            }
        out["per_client"] = per_client
        out["mean"] = evaluation.mean_over_clients({n: {k: v for k, v in m.items() if k != "settings"} for n, m in per_client.items()})
    else:
        choice = evaluation.choose_postprocessing(
            ctx.prob_fn, lambda c: params, data.val, tolerance=tol, ledger=ledger, client_ids=ids
        )
        tables = choice.pop("tables")
        if distributed.is_primary():
            postprocess_choice.save_choice(ctx.workdir, name, choice)
            # Each lab also keeps the setting best on its own tiles (from its own table; it never needs to be
            # shared): predict/evaluate --client <lab> use it, anyone else the federation's choice.
            for n, table in tables.items():
                postprocess_choice.save_choice(ctx.workdir, f"{name}/{n}", pps.choose({n: table}))
        settings = pps.PostprocessSettings.from_dict(choice["settings"])
        out["settings"] = choice["settings"]
        out["validation_objective"] = {"chosen": choice["objective"], "builtin_defaults": choice.get("builtin_defaults", {}).get("mean", {}).get("objective")}
        per_client = {
            n: evaluation.evaluate_split_postprocessed(ctx.prob_fn, params, *data.test[n], settings, tolerance=tol)
            for n in data.test
        }
        out["per_client"] = per_client
        out["mean"] = evaluation.mean_over_clients(per_client)
        if data.unseen:
            unseen = {
                u: evaluation.evaluate_split_postprocessed(ctx.prob_fn, params, *data.unseen[u], settings, tolerance=tol)
                for u in data.unseen
            }
            out["unseen"] = {"per_client": unseen, "mean": evaluation.mean_over_clients(unseen)}
    return out


def run_method(ctx: Context, name: str) -> dict:
    """Trains and evaluates method `name`; returns its summary entry."""
    spec = engine.method_spec(ctx.config, name)
    t0 = time.time()
    ev = _eval_kw(ctx)
    data = ctx.data
    if spec.kind == "local":
        per_client_params, extra = run_local(ctx, spec)
        ctx.final_params[name] = per_client_params
        per_client = {
            n: evaluation.evaluate_split(ctx.prob_fn, per_client_params[n], *data.test[n], **ev)
            for n in data.client_names
        }
        # A local model meets an unseen lab as any other foreign lab: average over the client models.
        runs = [evaluation.evaluate_splits(ctx.prob_fn, p, data.unseen, **ev) for p in per_client_params.values()]
        unseen = {
            u: evaluation.mean_over_clients({str(i): run[u] for i, run in enumerate(runs)}) for u in data.unseen
        }
    else:
        runner = run_centralized if spec.kind == "centralized" else run_federated
        params, extra = runner(ctx, spec)
        ctx.final_params[name] = params
        per_client = evaluation.evaluate_splits(ctx.prob_fn, params, data.test, **ev)
        unseen = evaluation.evaluate_splits(ctx.prob_fn, params, data.unseen, **ev)
    ledger = extra.pop("_ledger", None)
    post = postprocess(ctx, spec, name, ledger)
    if ledger is not None:
        extra["privacy_ledger"] = ledger.summary()
    result = {
        "per_client": per_client,
        "mean": evaluation.mean_over_clients(per_client),
        "round_compilations": extra.pop("round_compilations"),
        "wall_seconds": time.time() - t0,
    }
    if unseen:
        result["unseen"] = {"per_client": unseen, "mean": evaluation.mean_over_clients(unseen)}
    if post:
        result["postprocessed"] = post
    result.update(extra)
    ctx.log.drop(lambda row: row.get("method") == name and row.get("eval") == "test")  # re-evaluated on resume
    ctx.log.write(
        {
            "method": name,
            "eval": "test",
            **{k: result["mean"][k] for k in evaluation.METRIC_KEYS},
            "round_compilations": result["round_compilations"],
            "wall_seconds": result["wall_seconds"],
        }
    )
    return result
