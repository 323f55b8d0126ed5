"""One train loop that reads a config: trains every method in `config.methods`, evaluates, and writes the
workdir contract (summary.json, summary.md, metrics.jsonl, checkpoints/).

All methods share the engine in `fl.round` (a one-jit federated round):
  fedavg/fedprox  all clients, `fl.clients_per_round` sampled per round;
  local           the same compiled round on one client's data at a time (each client its own model);
  centralized     the same compiled round on one client holding the pooled training data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from fedtransfer_jax import checkpointing, inference, io_utils, metrics as metrics_lib, models
from fedtransfer_jax.data.clients import ClientData, FederatedData, pad_clients
from fedtransfer_jax.fl import algorithms, boundary as boundary_lib, client as client_lib, round as round_lib
from fedtransfer_jax import style as style_lib
from fedtransfer_jax.style import sharing

METRIC_KEYS = ("boundary_f1", "ari", "vi", "grain_count_rel_error", "miou")


# ----------------------------------------------------------------------------------------------------------
# Run context: what every method needs, built once from the config.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Context:
    config: ml_collections.ConfigDict
    workdir: str
    data: FederatedData
    model: Any
    loss_fn: Callable
    init_params: Any
    mesh: Any
    log: io_utils.JsonlWriter
    prob_fn: Callable  # jitted boundary probability, shared by every evaluation (one compilation)
    style_artifacts: dict = dataclasses.field(default_factory=dict)  # per method: renderer + bank (figures)
    final_params: dict = dataclasses.field(default_factory=dict)  # per method (per client for local)

    @property
    def fl(self):
        return self.config.fl


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the offending key (unknown override keys are already rejected by config_flags)."""
    for m in config.methods:
        algorithms.get_method(m)
    if config.fl.strategy not in round_lib.STRATEGIES:
        raise ValueError(
            f"config key fl.strategy: unknown strategy {config.fl.strategy!r}; "
            f"choose from {round_lib.STRATEGIES}"
        )
    for key in ("rounds", "local_steps", "batch_size"):
        if int(config.fl[key]) < 1:
            raise ValueError(f"config key fl.{key} must be >= 1, got {config.fl[key]}")


def make_mesh(config) -> Any:
    """A 1-D device mesh over the `clients` axis, or None on a single device."""
    n = jax.device_count()
    if not config.fl.get("shard_clients", True) or n == 1:
        return None
    return round_lib.make_client_mesh(n)


def place_clients(data: ClientData, mesh) -> tuple:
    """Puts client arrays on device; with a mesh, the client axis is sharded over it (padded to a multiple
    of the device count with empty clients, which are never sampled)."""
    images, labels, mask = data.images, data.labels, data.mask
    if mesh is None:
        return tuple(jnp.asarray(a) for a in (images, labels, mask))
    n_dev = mesh.devices.size
    pad = (-images.shape[0]) % n_dev
    if pad:
        padw = lambda a: np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
        images, labels, mask = padw(images), padw(labels), padw(mask)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(round_lib.CLIENT_AXIS))
    return tuple(jax.device_put(a, sharding) for a in (images, labels, mask))


# ----------------------------------------------------------------------------------------------------------
# Training one "federation" with the shared engine.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FederationResult:
    params: Any
    round_compilations: int
    rounds_run: int
    ledger: boundary_lib.PrivacyLedger | None


def build_engine(
    ctx: Context,
    method: algorithms.Method,
    *,
    clients_per_round: int,
    local_steps: int,
    ledger,
    on_trace,
    batch_transform=None,
    loss_fn=None,
    client_lr: float | None = None,
    channel: str = "model_update",
):
    fl = ctx.fl
    lr = fl.client_lr if client_lr is None else client_lr
    client_opt = algorithms.make_optimizer(
        fl.client_optimizer,
        lr,
        fl.get("client_momentum", 0.0),
        key="fl.client_optimizer",
        clip_norm=fl.get("clip_norm", 0.0),
    )
    server_opt = algorithms.make_optimizer(
        fl.server_optimizer, fl.server_lr, fl.get("server_momentum", 0.0), key="fl.server_optimizer"
    )
    local_cfg = client_lib.LocalConfig(
        local_steps=local_steps,
        batch_size=fl.batch_size,
        prox_mu=fl.prox_mu if method.prox else 0.0,
        unroll=fl.get("unroll_local_steps", False),
    )
    client_update = client_lib.make_client_update(
        loss_fn or ctx.loss_fn, client_opt, local_cfg, batch_transform=batch_transform
    )
    strategy = fl.strategy if method.federated else "vmap"  # one client: no client parallelism either way
    if ctx.mesh is not None and strategy == "auto":
        strategy = "vmap"  # sharded clients: every device takes its share of the vmapped client axis
    round_cfg = round_lib.RoundConfig(clients_per_round, strategy, fl.get("chunk_size", 0))
    round_fn = round_lib.build_round(
        client_update,
        server_opt,
        round_cfg,
        seed=ctx.config.seed,
        ledger=ledger,
        mesh=ctx.mesh if method.federated else None,
        on_trace=on_trace,
        channel=channel,
    )
    return round_fn, server_opt


def run_federation(
    ctx: Context,
    tag: str,
    round_fn,
    server_opt,
    data: tuple,
    client_names,
    *,
    init_params=None,
    on_round: Callable | None = None,
    rounds: int | None = None,
) -> tuple[Any, int]:
    """Runs `rounds` (default `config.fl.rounds`) rounds of `round_fn` on `data`, with checkpoints and resume.

    Returns (final params, rounds run in this process).
    """
    rounds = int(ctx.fl.rounds if rounds is None else rounds)
    ckpt_dir = os.path.join(ctx.workdir, "checkpoints", tag)
    mngr = checkpointing.manager(ckpt_dir, ctx.config.checkpoint_every)
    state = round_lib.init_server_state(ctx.init_params if init_params is None else init_params, server_opt)
    restored, start = checkpointing.restore_latest(mngr, state)
    if restored is not None:
        state = restored
        logging.info("%s: resumed from round %d", tag, start)
    sharding = getattr(data[0], "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
        # Clients are sharded over a mesh: the server state lives replicated on the same mesh, so a fresh
        # or restored state matches the round's output placement (no second compilation).
        state = jax.device_put(state, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()))
    start = min(start, rounds)
    bar = tqdm(
        range(start, rounds),
        desc=tag,
        initial=start,
        total=rounds,
        leave=False,
        disable=ctx.config.get("quiet", False),
    )
    for r in bar:
        state, m = round_fn(state, data)
        loss = float(m["loss"])
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{tag}: training loss is {loss} in round {r + 1} "
                f"(try a lower fl.client_lr, or fl.clip_norm > 0)"
            )
        bar.set_postfix(loss=f"{loss:.4f}")
        ctx.log.write(
            {
                "method": tag,
                "round": r + 1,
                "loss": loss,
                "clients": [
                    client_names[int(i)] for i in np.asarray(m["client_ids"]) if int(i) < len(client_names)
                ],
            }
        )
        if on_round is not None:
            on_round(r + 1, np.asarray(m["client_ids"]))
        checkpointing.save(mngr, r + 1, state, force=(r + 1 == rounds))
    mngr.wait_until_finished()
    mngr.close()
    return state.params, rounds - start


# ----------------------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------------------
def evaluate_split(predict_fn, params, images, labels, *, threshold: float, tolerance: float) -> dict:
    prob = inference.batched_probs(predict_fn, params, images)
    per_tile = [
        metrics_lib.segmentation_metrics(p > threshold, l > 0, tolerance=tolerance)
        for p, l in zip(prob, labels)
    ]
    return metrics_lib.summarize(per_tile)


def mean_over_clients(per_client: dict[str, dict]) -> dict:
    """Macro mean over clients of their mean metrics; `<key>_std` = spread of client means (for a single
    client: its own spread over test tiles)."""
    if len(per_client) == 1:
        return dict(next(iter(per_client.values())))
    keys = [k for k in next(iter(per_client.values())) if not k.endswith("_std")]
    out = {}
    for k in keys:
        vals = np.array([c[k] for c in per_client.values()], np.float64)
        out[k] = float(vals.mean())
        out[k + "_std"] = float(vals.std())
    return out


# ----------------------------------------------------------------------------------------------------------
# FedTransfer: style sharing.
# ----------------------------------------------------------------------------------------------------------
def ledger_recorder(ledger, channel: str, num_clients: int) -> Callable:
    # Ids >= num_clients are the empty clients that pad the client axis to the device count.
    return lambda r, ids: ledger.record_round(r, channel, [i for i in ids if i < num_clients])


def train_style_network(ctx: Context, tag: str, ledger, clients_per_round: int):
    """Trains the AdaIN style network federatedly with the same one-jit round engine (each client only
    ever uses its own images). Returns (StyleNet, params, round compilations)."""
    sc = ctx.config.style
    net = style_lib.StyleNet(features=tuple(sc.features), train_encoder=sc.train_encoder)
    tile = ctx.data.train.images.shape[2]
    params0 = style_lib.init_style_net(
        net, jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), 0x57), tile
    )
    loss_fn = functools.partial(
        style_lib.style_loss_fn,
        net,
        content_weight=sc.content_weight,
        style_weight=sc.style_weight,
        identity_weight=sc.identity_weight,
    )
    traces = []
    round_fn, server_opt = build_engine(
        ctx,
        algorithms.get_method("fedavg"),
        clients_per_round=clients_per_round,
        local_steps=sc.local_steps,
        ledger=ledger,
        on_trace=lambda: traces.append(1),
        loss_fn=loss_fn,
        client_lr=sc.lr,
        channel="style_net_update",
    )
    names = ctx.data.client_names
    params, _ = run_federation(
        ctx,
        f"{tag}_style_net",
        round_fn,
        server_opt,
        place_clients(ctx.data.train, ctx.mesh),
        names,
        init_params=params0,
        rounds=sc.rounds,
        on_round=ledger_recorder(ledger, "style_net_update", len(names)),
    )
    return net, params, len(traces)


def setup_style_sharing(ctx: Context, tag: str, mode: str, ledger, clients_per_round: int):
    """Runs the style-sharing protocol (style/sharing.py) and returns (training data, batch transform or
    None, info for the summary)."""
    sc = ctx.config.style
    train = ctx.data.train
    info: dict = {"mode": mode, "restyle": sc.restyle}
    net = style_params = None
    t0 = time.time()
    if mode == "adain":
        net, style_params, info["style_round_compilations"] = train_style_network(
            ctx, tag, ledger, clients_per_round
        )
    info["style_net_seconds"] = time.time() - t0
    render = sharing.make_renderer(
        mode, style_net=net, style_params=style_params, alpha=sc.alpha, beta=sc.fourier_beta
    )
    # Each client computes its style statistics on its own images; only the statistics cross the boundary.
    messages = []
    for c in range(len(ctx.data.client_names)):
        idx = sharing.style_sample(np.asarray(train.mask[c]), sc.styles_per_client, ctx.config.seed, c)
        msg = sharing.client_style_message(
            jnp.asarray(np.asarray(train.images[c])[idx]),
            mode,
            style_net=net,
            style_params=style_params,
            beta=sc.fourier_beta,
        )
        inbox = boundary_lib.send_from_client(msg, ledger, "style_stats", c)
        messages.append(
            {**{k: np.asarray(v) for k, v in inbox.payload.items()}, "valid": np.ones(len(idx), bool)}
        )
    bank = jax.tree_util.tree_map(jnp.asarray, style_lib.build_bank(messages))  # server: stack + broadcast
    lam = tuple(sc.fourier_lam)
    ctx.style_artifacts[tag] = {"mode": mode, "render": render, "bank": bank}
    if sc.restyle == "online":
        return (
            train,
            sharing.make_restyle_transform(bank, mode, render, mix_prob=sc.mix_prob, lam_range=lam),
            info,
        )
    if sc.restyle == "precomputed":
        t0 = time.time()
        images, labels, mask = sharing.precompute_restyled(
            np.asarray(train.images),
            np.asarray(train.labels),
            np.asarray(train.mask),
            bank,
            mode,
            render,
            copies=sc.precomputed_copies,
            seed=ctx.config.seed,
            lam_range=lam,
        )
        info["precompute_seconds"] = time.time() - t0
        return ClientData(images, labels, mask), None, info
    raise ValueError(f"config key style.restyle: unknown {sc.restyle!r}; choose 'online' or 'precomputed'")


# ----------------------------------------------------------------------------------------------------------
# Methods.
# ----------------------------------------------------------------------------------------------------------
def run_method(ctx: Context, name: str) -> dict:
    method = algorithms.get_method(name)
    data = ctx.data
    names = data.client_names
    cfg = ctx.config
    ev = dict(threshold=cfg.eval.threshold, tolerance=cfg.eval.tolerance)
    k = min(int(cfg.fl.clients_per_round) or len(names), len(names))
    traces = []
    on_trace = lambda: traces.append(1)
    t0 = time.time()
    extra = {}

    def evaluate(params, splits) -> dict:
        return {n: evaluate_split(ctx.prob_fn, params, *splits[n], **ev) for n in splits}

    if method.federated:
        ledger = boundary_lib.PrivacyLedger(image_hw=tuple(data.train.images.shape[2:4]), client_names=names)
        train_data, batch_transform = data.train, None
        if method.style:
            train_data, batch_transform, extra["style"] = setup_style_sharing(
                ctx, name, method.style, ledger, k
            )
        round_fn, server_opt = build_engine(
            ctx,
            method,
            clients_per_round=k,
            local_steps=cfg.fl.local_steps,
            ledger=ledger,
            on_trace=on_trace,
            batch_transform=batch_transform,
        )
        params, _ = run_federation(
            ctx,
            name,
            round_fn,
            server_opt,
            place_clients(train_data, ctx.mesh),
            names,
            on_round=ledger_recorder(ledger, "model_update", len(names)),
        )
        extra["privacy_ledger"] = ledger.summary()
    elif method.pooled:
        # Centralized: one client with all training tiles; as many local steps per round as the federated
        # methods run in total per round, so every method spends the same gradient computations.
        mask = np.asarray(data.train.mask)
        pooled = pad_clients([(np.asarray(data.train.images)[mask], np.asarray(data.train.labels)[mask])])
        round_fn, server_opt = build_engine(
            ctx,
            method,
            clients_per_round=1,
            local_steps=cfg.fl.local_steps * k,
            ledger=None,
            on_trace=on_trace,
        )
        params, _ = run_federation(ctx, name, round_fn, server_opt, place_clients(pooled, None), ["pooled"])
    else:
        # Local: one model per client, each trained only on its own data and tested on its own test split.
        round_fn, server_opt = build_engine(
            ctx, method, clients_per_round=1, local_steps=cfg.fl.local_steps, ledger=None, on_trace=on_trace
        )
        per_client, unseen_runs = {}, []
        for c, n in enumerate(names):
            one = ClientData(*(np.asarray(a)[c : c + 1] for a in data.train))
            params, _ = run_federation(
                ctx, f"{name}/{n}", round_fn, server_opt, place_clients(one, None), [n]
            )
            ctx.final_params.setdefault(name, {})[n] = params
            per_client[n] = evaluate_split(ctx.prob_fn, params, *data.test[n], **ev)
            unseen_runs.append(evaluate(params, data.unseen))
        # A local model meets an unseen lab as any other foreign lab: average over the client models.
        unseen = {
            u: mean_over_clients({str(i): run[u] for i, run in enumerate(unseen_runs)}) for u in data.unseen
        }
    if method.federated or method.pooled:  # one shared model: every client's test split, every unseen lab
        ctx.final_params[name] = params
        per_client = evaluate(params, data.test)
        unseen = evaluate(params, data.unseen)

    result = {
        "per_client": per_client,
        "mean": mean_over_clients(per_client),
        "round_compilations": len(traces),
        "wall_seconds": time.time() - t0,
    }
    if unseen:
        result["unseen"] = {"per_client": unseen, "mean": mean_over_clients(unseen)}
    result.update(extra)
    ctx.log.write(
        {
            "method": name,
            "eval": "test",
            **{k: result["mean"][k] for k in METRIC_KEYS},
            "round_compilations": len(traces),
            "wall_seconds": result["wall_seconds"],
        }
    )
    return result


# ----------------------------------------------------------------------------------------------------------
# Entry point.
# ----------------------------------------------------------------------------------------------------------
def build_context(config, workdir: str) -> Context:
    from fedtransfer_jax.data.clients import load_federated_data  # tfds is imported lazily there

    if config.get("quiet", False):
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    data = load_federated_data(config.data, workdir)
    model = models.build_model(config.model)
    loss_fn = models.make_segmentation_loss(
        model, boundary_weight=config.loss.boundary_weight, dice_weight=config.loss.dice_weight
    )
    init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x1217)
    tile = data.train.images.shape[2]
    init_params = model.init(init_key, jnp.zeros((1, tile, tile, 3), jnp.float32))["params"]
    logging.info(
        "model %s: %d params; clients %s",
        config.model.name,
        models.count_params(init_params),
        data.client_names,
    )
    return Context(
        config=config,
        workdir=workdir,
        data=data,
        model=model,
        loss_fn=loss_fn,
        init_params=init_params,
        mesh=make_mesh(config),
        log=io_utils.JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
        prob_fn=inference.make_prob_fn(model),
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    io_utils.write_json_atomic(os.path.join(workdir, "config.json"), io_utils.config_to_json(config))
    ctx = build_context(config, workdir)
    summary = {
        "methods": {},
        "config": io_utils.config_to_json(config),
        "clients": list(ctx.data.client_names),
        "unseen_clients": list(ctx.data.unseen),
        "device": f"{jax.default_backend()}:{jax.device_count()}",
    }
    for name in config.methods:
        summary["methods"][name] = run_method(ctx, name)
        # Written after every method, atomically: a crash leaves the last complete summary.
        io_utils.write_summary(workdir, summary)
    if config.get("figures", True):
        write_figures(ctx)
    ctx.log.close()
    return summary


def write_figures(ctx: Context) -> None:
    """Style grids for each style-sharing method and prediction overlays (one test tile per client)."""
    from fedtransfer_jax import figures  # matplotlib only when figures are wanted

    names = list(ctx.data.client_names)
    first = lambda split: (
        np.stack([split[n][0][0] for n in names]),
        np.stack([split[n][1][0] for n in names]),
    )
    images, labels = first(ctx.data.test)
    for method, art in ctx.style_artifacts.items():
        figures.style_grid(
            os.path.join(ctx.workdir, f"style_grid_{method}.png"),
            images,
            names,
            art["mode"],
            art["render"],
            art["bank"],
        )
    preds = {}
    for method, params in ctx.final_params.items():
        if method == "local":  # each client's own model on its own tile
            preds[method] = (
                np.stack(
                    [
                        inference.batched_probs(ctx.prob_fn, params[n], images[i : i + 1])[0]
                        for i, n in enumerate(names)
                    ]
                )
                > ctx.config.eval.threshold
            )
        else:
            preds[method] = inference.batched_probs(ctx.prob_fn, params, images) > ctx.config.eval.threshold
    figures.prediction_overlays(os.path.join(ctx.workdir, "predictions.png"), images, labels, names, preds)
