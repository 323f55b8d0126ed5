"""The method runner: trains one method of `config.methods` with the shared engine and evaluates it.

  federated    the method's algorithm over all clients, `fl.clients_per_round` sampled per round (with
               style sharing first when the spec names a style technique)
  local        the same compiled round on one client's data at a time (each client its own model)
  centralized  a plain pooled trainer on all training tiles (optimizer state persists across rounds;
               the same examples seen, batch size, batch transform and lr schedule as the federated methods)

Every runner validates on the validation tiles every `eval.every_rounds` rounds (`Validation`: rows in
metrics.jsonl) and scores on test the params `eval.select` picks ('last' or 'best_val').
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from fedtransfer_jax.runtime import checkpointing, distributed
from fedtransfer_jax.runs import engine, evaluation, style_protocol
from fedtransfer_jax.data.clients import ClientData, pad_clients
from fedtransfer_jax.runs.federated_training import compile_round, train_federation, train_pooled
from fedtransfer_jax.fl import boundary as boundary_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import postprocess_choice
from fedtransfer_jax.runs.run_context import Context


def _eval_kw(ctx: Context) -> dict:
    return dict(threshold=float(ctx.config.eval.threshold), tolerance=float(ctx.config.eval.tolerance))


VAL_KEYS = ("ari", "boundary_f1", "miou", "vi")  # what a validation row of metrics.jsonl carries


class Validation:
    """Validation curves and model selection of one federation (a method, or one client's local model),
    host-side between jitted rounds (federation.run_federation calls `start` and `after_round`).

    Every `eval.every_rounds` rounds (and after the last one; 0 = never) the current params are scored with
    the run's thresholded metrics on the validation tiles of `splits` (never the test tiles) and a row
    `{"method": tag, "round": r, "eval": "val", "ari", "boundary_f1", ...}` goes to metrics.jsonl. Its rows
    past a restored checkpoint are dropped with the training rows and re-written by the re-run rounds
    (deterministic), so a resumed run logs every (tag, round, 'val') once. Scoring never touches the
    training state or any random key: the trained params are the same with or without it.

    `eval.select='best_val'`: the params with the best validation ARI (the earliest such round on ties) are
    kept, on disk too (`<workdir>/best_val/<tag>`, params-only checkpoint), so a resume starts from the best
    stored so far; a stored best from rounds the resumed run re-runs is matched again, never beaten (the same
    scores), so the choice equals an uninterrupted run's. With `ledger`, each client's scores cross the
    boundary (channel `val_scores`): in a federation the clients score the broadcast model themselves."""

    def __init__(self, ctx: Context, tag: str, splits: dict, *, ledger=None, client_ids: dict | None = None):
        ev = ctx.config.eval
        self.ctx, self.tag = ctx, tag
        self.every = int(ev.get("every_rounds", 0))
        self.select = str(ev.get("select", "last"))
        self.splits = {n: v for n, v in splits.items() if len(v[0])}
        self.enabled = self.every > 0 and bool(self.splits)
        self.ledger, self.client_ids = ledger, client_ids
        self.directory = os.path.join(ctx.workdir, "best_val", tag)
        self.best: tuple | None = None  # (round, val ARI, params on the host)

    def start(self, restored_round: int) -> None:
        self.best = None
        if self.enabled and self.select == "best_val":
            params, meta, _ = checkpointing.restore_params(self.directory, self.ctx.init_params)
            if params is not None:
                self.best = (int(meta["round"]), float(meta["ari"]), jax.device_get(params))

    def after_round(self, r: int, rounds: int, params_fn) -> None:
        if not self.enabled or (r % self.every and r != rounds):
            return
        params = params_fn()
        per_client = evaluation.evaluate_splits(self.ctx.prob_fn, params, self.splits, **_eval_kw(self.ctx))
        if self.ledger is not None and self.client_ids is not None:
            for n, m in per_client.items():
                scores = np.array([m["ari"], m["boundary_f1"]], np.float32)
                boundary_lib.send_from_client({"val_scores": scores}, self.ledger, "val_scores", self.client_ids[n], r)
        mean = evaluation.mean_over_clients(per_client)
        self.ctx.log.write({"method": self.tag, "round": r, "eval": "val", **{k: mean[k] for k in VAL_KEYS}})
        ari = float(mean["ari"])
        if self.select == "best_val" and (self.best is None or ari > self.best[1]):
            self.best = (r, ari, jax.device_get(params))
            checkpointing.save_params(self.directory, r, params, {"round": r, "ari": ari, "tag": self.tag})

    def chosen(self, last_params, rounds: int) -> tuple[Any, dict]:
        """(the params to score on test, the summary's `model_selection`)."""
        out = {"select": self.select, "every_rounds": self.every, "chosen_round": int(rounds), "best_val_ari": None}
        if self.select != "best_val":
            return last_params, out
        if self.best is None:
            out["note"] = "no validation score (no validation tiles): the last round's params"
            return last_params, out
        out.update(chosen_round=self.best[0], best_val_ari=self.best[1])
        return self.best[2], out


def run_federated(ctx: Context, spec: engine.MethodSpec) -> tuple[Any, dict]:
    """A federated method: (final params, extra summary entries: privacy ledger, style, rounds)."""
    names = ctx.data.client_names
    k = engine.clients_per_round(ctx.config, len(names))
    # A recipient lab without labels sends its style message only (style_protocol.style_client_names).
    ledger_names = style_protocol.style_client_names(ctx.data) if spec.style else names
    ledger = boundary_lib.PrivacyLedger(image_hw=tuple(ctx.data.train.images.shape[2:4]), client_names=ledger_names)
    extra: dict = {"spec": spec.as_dict()}
    train_data, batch_transform = ctx.data.train, None
    if spec.style:
        train_data, batch_transform, extra["style"] = style_protocol.setup_style_sharing(ctx, spec, ledger, k)
    mechanism = engine.dpsgd_mechanism(spec)  # example-level DP inside every client, or None
    local_at = lambda lr: engine.local_training(
        ctx.config, ctx.loss_fn, batch_transform=batch_transform, lr=lr, dpsgd=mechanism
    )
    algorithm = engine.build_method_algorithm(ctx.config, spec, local_at)
    aggregator, protocol = engine.build_aggregation(spec, k)
    ids = {n: i for i, n in enumerate(names)}
    validation = Validation(ctx, spec.name, ctx.data.val, ledger=ledger, client_ids=ids)
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
        validation=validation,
    )
    params, extra["model_selection"] = validation.chosen(result.params, int(ctx.config.fl.rounds))
    extra["_ledger"] = ledger  # the post-processing scores still have to cross (methods.postprocess)
    accounting = engine.privacy_accounting(
        spec, rounds=int(ctx.config.fl.rounds), clients_per_round=k, num_clients=len(names)
    )
    if accounting is not None:
        extra["differential_privacy"] = accounting
    if mechanism is not None:
        extra["example_level_dp"] = engine.example_privacy_accounting(
            spec,
            rounds=int(ctx.config.fl.rounds),
            local_steps=int(ctx.config.fl.local_steps),
            units_per_client=_micrographs_per_client(
                ctx.data.train.mask, names, mechanism.tiles_per_unit, key=f"method_specs.{spec.name}.dpsgd"
            ),
        )
    extra["round_compilations"] = result.round_compilations
    extra["resumed_from_round"] = result.resumed_from
    extra["client_strategy"] = compiled.info
    return params, extra


def _micrographs_per_client(mask, names, tiles_per_unit: int, *, key: str) -> dict[str, int]:
    """Real micrographs each client holds: groups of `tiles_per_unit` consecutive tiles with a real one."""
    mask = np.asarray(mask)
    t = int(tiles_per_unit)
    if mask.shape[1] % t:
        raise ValueError(
            f"config key {key}.tiles_per_unit={t}: {mask.shape[1]} tiles per client is not a multiple of it"
        )
    units = mask.reshape(mask.shape[0], -1, t).any(axis=2).sum(axis=1)
    return {n: int(u) for n, u in zip(names, units)}


def run_centralized(ctx: Context, spec: engine.MethodSpec) -> tuple[Any, dict]:
    """A plain pooled trainer (federated_training.train_pooled): all training tiles in one client, one
    optimizer whose state (Adam's count and moments) persists across rounds, the run's batch size, batch
    transform and learning-rate schedule. A "round" is `fl.local_steps x K` steps (K = fl.clients_per_round),
    so over the run it sees rounds x K x local_steps x batch_size examples: exactly as many as a federated
    method's K clients per round, each taking local_steps batches of batch_size. Rounds only mark its
    checkpoints, log rows and validation points."""
    data = ctx.data.train
    mask = np.asarray(data.mask)
    pooled = pad_clients([(np.asarray(data.images)[mask], np.asarray(data.labels)[mask])])
    k = engine.clients_per_round(ctx.config, len(ctx.data.client_names))
    steps = int(ctx.config.fl.local_steps) * k
    local_at = lambda lr: engine.local_training(ctx.config, ctx.loss_fn, local_steps=steps, lr=lr)
    validation = Validation(ctx, spec.name, ctx.data.val)
    rounds = int(ctx.config.fl.rounds)
    result = train_pooled(ctx, spec.name, local_at, pooled, init_params=ctx.init_params, rounds=rounds, validation=validation)
    params, selection = validation.chosen(result.params, rounds)
    return params, {
        "round_compilations": result.round_compilations,
        "resumed_from_round": result.resumed_from,
        "model_selection": selection,
        "trainer": {
            "kind": "pooled",
            "steps_per_round": steps,
            "batch_size": int(ctx.config.fl.batch_size),
            "examples_seen": rounds * steps * int(ctx.config.fl.batch_size),
            "optimizer_state": "persists across rounds",
        },
    }


def run_local(ctx: Context, spec: engine.MethodSpec) -> tuple[dict, dict]:
    """One model per client, each trained only on its own data: ({client: params}, extra)."""
    local_at = lambda lr: engine.local_training(ctx.config, ctx.loss_fn, lr=lr)
    algorithm = engine.build_method_algorithm(ctx.config, engine.MethodSpec(spec.name), local_at)
    compiled = compile_round(ctx, algorithm, clients_per_round=1, federated=False)  # shared by every client
    per_client, resumed, compilations, selection = {}, {}, 0, {}
    for c, name in enumerate(ctx.data.client_names):
        one = ClientData(*(np.asarray(a)[c : c + 1] for a in ctx.data.train))
        # Each client's model is validated (and chosen) on its own validation tiles only.
        validation = Validation(ctx, f"{spec.name}/{name}", {name: ctx.data.val[name]} if name in ctx.data.val else {})
        result = train_federation(
            ctx,
            f"{spec.name}/{name}",
            compiled,
            one,
            init_params=ctx.init_params,
            rounds=int(ctx.config.fl.rounds),
            client_names=[name],
            validation=validation,
        )
        per_client[name], selection[name] = validation.chosen(result.params, int(ctx.config.fl.rounds))
        resumed[name] = result.resumed_from
        compilations = max(compilations, result.round_compilations)
    return per_client, {"round_compilations": compilations, "resumed_from_round": resumed, "model_selection": selection}


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
            if n not in data.val:  # no validation tiles (a data-poor recipient): built-in defaults
                continue
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


def _settings_of(ctx: Context, choice: dict | None) -> tuple[pps.PostprocessSettings, str]:
    """The post-processing of the whole-image endpoint: the choice on validation tiles, or (no validation
    tiles) the built-in defaults with the run's threshold, as predict would use them."""
    if choice and "settings" in choice:
        return pps.PostprocessSettings.from_dict(choice["settings"]), postprocess_choice.SOURCE_CHOSEN
    settings, _ = postprocess_choice.resolve_settings(None, None, None, float(ctx.config.eval.threshold))
    return settings, postprocess_choice.SOURCE_BUILTIN + " (no validation tiles)"


def _whole_image_scorer(ctx: Context):
    """`score(params, (images, labels), settings)`: `evaluation.evaluate_whole_images` at the run's tile."""
    tile = int(ctx.config.data.tile_size)
    return lambda p, arrays, st: evaluation.evaluate_whole_images(ctx.prob_fn, p, *arrays, st, tile)


def _whole_image_entry(per_client: dict, unseen: dict) -> dict:
    """The per-lab scores and their means, as `whole_images` entries carry them in summary.json."""
    out: dict = {"per_client": per_client}
    if per_client:
        out["mean"] = evaluation.mean_over_clients(per_client)
    if unseen:
        out["unseen"] = {"per_client": unseen, "mean": evaluation.mean_over_clients(unseen)}
    return out


def _score_one_model(ctx: Context, params, settings: pps.PostprocessSettings) -> dict:
    """One model (a global method's, or the untrained floor's) on every whole test image, seen and unseen."""
    score = _whole_image_scorer(ctx)
    return _whole_image_entry(
        {n: score(params, arrays, settings) for n, arrays in ctx.whole_test.items()},
        {u: score(params, arrays, settings) for u, arrays in ctx.whole_unseen.items()},
    )


def whole_images(ctx: Context, spec: engine.MethodSpec, name: str, post: dict | None) -> dict | None:
    """The v2 primary endpoint (docs/PROTOCOL.md): every whole test image of the seen and unseen labs
    (`ctx.whole_test`, `ctx.whole_unseen`) through predict's sliding window (`inference.sliding_window_prob`,
    scale 1), post-processed with the settings chosen on validation tiles, then scored
    (`evaluation.whole_image_metrics`: ARI, F1 at 1 px, grain-size errors), beside the trivial all-boundary
    map's F1 on the same images. A local method: each client's model (and its own choice) on its own lab;
    an unseen lab: the mean over the client models."""
    if not ctx.whole_test and not ctx.whole_unseen:
        return None
    t0 = time.time()
    params = ctx.final_params[name]
    out: dict = {}
    if spec.kind == "local":
        score = _whole_image_scorer(ctx)
        chosen = {n: _settings_of(ctx, ((post or {}).get("per_client") or {}).get(n)) for n in params}
        per_client = {n: score(params[n], ctx.whole_test[n], chosen[n][0]) for n in ctx.whole_test if n in params}
        unseen = {
            u: evaluation.mean_over_clients({c: score(params[c], arrays, chosen[c][0]) for c in params})
            for u, arrays in ctx.whole_unseen.items()
        }
        out["settings"] = {n: {"settings": st.to_dict(), "source": src} for n, (st, src) in chosen.items()}
        out.update(_whole_image_entry(per_client, unseen))
    else:
        settings, source = _settings_of(ctx, post)
        out["settings"] = {"settings": settings.to_dict(), "source": source}
        out.update(_score_one_model(ctx, params, settings))
    trivial = lambda d: {n: evaluation.trivial_boundary_f1(arrays[1]) for n, arrays in d.items()}
    t_seen, t_unseen = trivial(ctx.whole_test), trivial(ctx.whole_unseen)
    out["trivial_f1"] = {
        "per_client": t_seen,
        "mean": float(np.mean(list(t_seen.values()))) if t_seen else None,
        "unseen": {"per_client": t_unseen, "mean": float(np.mean(list(t_unseen.values())))} if t_unseen else None,
    }
    out["image_size"] = int(ctx.config.eval.get("whole_image_size", 256))
    out["images_per_lab"] = int(ctx.config.eval.get("whole_images", 0))
    out["tolerance_px"] = evaluation.WHOLE_TOLERANCE
    out["path"] = "inference.sliding_window_prob (predict's sliding window), scale 1, overlap tile/4, no flips"
    if ctx.whole_notes:
        out["notes"] = list(ctx.whole_notes)
    out["wall_seconds"] = time.time() - t0
    return out


def untrained_whole_images(ctx: Context) -> dict | None:
    """The floor of the whole-image endpoint: the starting model (no training step) through the same path as
    every method (post-processing chosen on the validation tiles, predict's sliding window, the same scores).
    Post-processing can turn a map that knows nothing about boundaries into grain-like regions that follow
    the image's contrast, so the endpoint's floor is not 0; a method's number is read against this one. A run
    that starts from a trained model (`init_from`) is still scored against the seed's random init, the
    floor, not against its starting model. An evaluation instrument like the test scores themselves: it
    reads the validation and test tiles directly, as the test evaluation does, and is no part of the
    federated protocol."""
    if not ctx.whole_test and not ctx.whole_unseen:
        return None
    t0 = time.time()
    tile, tol = int(ctx.config.data.tile_size), float(ctx.config.eval.tolerance)
    if ctx.config.get("init_from", ""):
        params = distributed.from_primary(lambda: engine.init_params(ctx.config, ctx.model, tile))
    else:
        params = ctx.init_params  # the seed's random init, what every method started from
    choice = None
    if any(len(v[0]) for v in ctx.data.val.values()):
        choice = evaluation.choose_postprocessing(ctx.prob_fn, lambda c: params, ctx.data.val, tolerance=tol)
        if choice is not None:
            choice.pop("tables")
    settings, source = _settings_of(ctx, choice)
    out: dict = {
        "what": "the starting model, untrained, through the endpoint's path (its floor)",
        "settings": {"settings": settings.to_dict(), "source": source},
        **_score_one_model(ctx, params, settings),
    }
    out["wall_seconds"] = time.time() - t0
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
    whole = whole_images(ctx, spec, name, post)
    if whole:
        result["whole_images"] = whole
    result["lr_schedule"] = engine.lr_schedule_summary(ctx.config)
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
