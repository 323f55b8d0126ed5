"""FedTransfer's style-sharing protocol inside a run (style/sharing.py lists the steps): train the shared
style model federatedly with the same engine, let every client send its style message through the
boundary (so it lands in the privacy ledger), stack the bank on the server and hand the segmenter's local
training a batch transform that restyles part of each batch into foreign styles.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax import engine, style as style_lib
from fedtransfer_jax.data.clients import ClientData
from fedtransfer_jax.fl import boundary as boundary_lib
from fedtransfer_jax.run_context import Context
from fedtransfer_jax.style import sharing

STYLE_NET_TAG = 0x57  # fold_in tag of the style network's init key (scripts/style_checks.py uses it too)


def train_style_network(ctx: Context, tag: str, ledger, clients_per_round: int):
    """Trains the AdaIN style network federatedly with FedAvg on the one-jit round (each client only ever
    uses its own images). Returns (StyleNet, params, round compilations)."""
    from fedtransfer_jax import methods  # noqa: PLC0415 (methods imports this module lazily too)

    sc = ctx.config.style
    net = style_lib.StyleNet(features=tuple(sc.features), train_encoder=sc.train_encoder)
    tile = ctx.data.train.images.shape[2]
    params0 = style_lib.init_style_net(net, jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), STYLE_NET_TAG), tile)
    loss_fn = functools.partial(
        style_lib.style_loss_fn,
        net,
        content_weight=sc.content_weight,
        style_weight=sc.style_weight,
        identity_weight=sc.identity_weight,
    )
    local = engine.local_training(ctx.config, loss_fn, local_steps=int(sc.local_steps), lr=float(sc.lr))
    algorithm = engine.build_algorithm(engine.MethodSpec(f"{tag}_style_net"), local, float(sc.lr))
    compiled = methods.compile_round(
        ctx, algorithm, clients_per_round=clients_per_round, federated=True, ledger=ledger, channel="style_net_update"
    )
    result = methods.train_federation(
        ctx,
        f"{tag}_style_net",
        compiled,
        ctx.data.train,
        init_params=params0,
        rounds=int(sc.rounds),
        client_names=ctx.data.client_names,
        ledger=ledger,
        channel="style_net_update",
    )
    return net, result.params, result.round_compilations


def setup_style_sharing(ctx: Context, spec: engine.MethodSpec, ledger, clients_per_round: int):
    """Runs the style-sharing protocol; returns (training data, batch transform or None, summary info)."""
    sc = ctx.config.style
    mode = spec.style
    train = ctx.data.train
    info: dict = {"mode": mode, "restyle": sc.restyle}
    net = style_params = None
    t0 = time.time()
    if mode == "adain":
        net, style_params, info["style_round_compilations"] = train_style_network(
            ctx, spec.name, ledger, clients_per_round
        )
    info["style_net_seconds"] = time.time() - t0
    render = sharing.make_renderer(mode, style_net=net, style_params=style_params, alpha=sc.alpha, beta=sc.fourier_beta)
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
        messages.append({**{k: np.asarray(v) for k, v in inbox.payload.items()}, "valid": np.ones(len(idx), bool)})
    bank = jax.tree_util.tree_map(jnp.asarray, style_lib.build_bank(messages))  # server: stack + broadcast
    lam = tuple(sc.fourier_lam)
    ctx.style_artifacts[spec.name] = {"mode": mode, "render": render, "bank": bank}
    if sc.restyle == "online":
        return train, sharing.make_restyle_transform(bank, mode, render, mix_prob=sc.mix_prob, lam_range=lam), info
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
