"""FedTransfer's style-sharing protocol inside a run, for any style technique of the registry
(`style/techniques/`: adain, fourier, gen):

1. if the method has a shared style model (AdaIN's style network), it is trained federatedly with FedAvg on
   the same one-jit round engine (each client only ever uses its own images; channel `style_net_update`);
2. every client computes its style message from a few of its own labelled tiles
   (`method.client_message`: statistics / fitted imaging parameters, never an image-shaped array) and sends
   it through the boundary (`style_stats`: it lands in the privacy ledger);
3. the server stacks the messages into a bank (`method.build_bank`) and broadcasts it;
4. the segmenter's local training restyles a fraction `style.mix_prob` of every batch: the client's own
   images/labels rendered in randomly drawn foreign labs' styles (`mix_batch`, inside the jitted step), or
   the training set is restyled once up front (`style.restyle=precomputed`). Labels never change.

After all methods ran, `style_checks` measures what each style technique's restyling looks like
(style/checks/: fidelity to the target lab, polarity, structure kept, border seams) for summary.json,
and draws the style grid.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.runs import engine, federated_training, inference
from fedtransfer_jax.data.clients import ClientData
from fedtransfer_jax.data import intensity
from fedtransfer_jax.runtime.pixels import decode_uint8
from fedtransfer_jax.data.seeds import STYLE_MODEL_INIT_TAG
from fedtransfer_jax.fl import boundary as boundary_lib
from fedtransfer_jax.runs.run_context import Context
from fedtransfer_jax.style import checks as checks_lib, federated as style_federated
from fedtransfer_jax.style import techniques

_TAG_PRECOMPUTE = 0x9C
_TAG_PRIOR = 0x9D  # the random-style control's prior styles


def train_shared_model(ctx: Context, spec: engine.MethodSpec, method, shared, ledger, clients_per_round: int):
    """FedAvg of the style technique's shared model on its own loss, on the one-jit round (resumable like any
    federation: checkpoints under `checkpoints/<method>_style_net`). Returns (params, compilations)."""
    sc = ctx.config.style
    tag = f"{spec.name}_style_net"
    local = engine.local_training(
        ctx.config, method.shared_loss, local_steps=int(sc.local_steps), lr=float(sc.lr), augment=False
    )
    algorithm = engine.build_algorithm(engine.MethodSpec(tag), local, float(sc.lr))
    compiled = federated_training.compile_round(
        ctx, algorithm, clients_per_round=clients_per_round, federated=True, ledger=ledger, channel="style_net_update"
    )
    result = federated_training.train_federation(
        ctx,
        tag,
        compiled,
        ctx.data.train,
        init_params=shared,
        rounds=int(sc.rounds),
        client_names=ctx.data.client_names,
        ledger=ledger,
        channel="style_net_update",
    )
    return result.params, result.round_compilations


def pseudo_labels(images) -> np.ndarray:
    """Boundary maps u8 [n,H,W] for images that have no label, from the label-free classical segmenter
    (metrics/classical.py: adaptive threshold + clean-up), computed on the client: what a recipient lab
    without labels gives the one technique whose style fit reads a label map (gen)."""
    from fedtransfer_jax.metrics import classical  # noqa: PLC0415

    images = decode_uint8(np.asarray(images))
    return np.stack([(np.asarray(classical.segment(x)) > 0).astype(np.uint8) for x in images])


def recipient_style_data(data) -> dict:
    """The data-poor recipient's style sample (`data.recipient`): its k labelled tiles with their labels and
    its unlabelled images with classical pseudo-labels (only gen reads labels; AdaIN and Fourier read the
    images alone). It never leaves the client: only the message computed from it does."""
    name = data.recipient
    images, labels = [], []
    if name in data.client_names:
        c = data.client_names.index(name)
        real = np.asarray(data.train.mask[c])
        images.append(decode_uint8(np.asarray(data.train.images[c])[real]))
        labels.append(np.asarray(data.train.labels[c])[real])
    unlabelled = np.asarray(data.unlabelled.get(name, np.zeros((0,) + np.shape(data.train.images)[2:], np.float32)))
    if len(unlabelled):
        images.append(decode_uint8(unlabelled))
        labels.append(pseudo_labels(unlabelled))
    images, labels = np.concatenate(images), np.concatenate(labels)
    return {"images": images, "labels": labels, "mask": np.ones(len(images), bool)}


def style_client_names(data) -> tuple[str, ...]:
    """Who sends a style message, by client id: the segmentation clients, then a recipient lab that holds no
    label (`data.recipient_labels = 0`: no segmentation client, but its style still reaches the others)."""
    names = tuple(data.client_names)
    if data.recipient and data.recipient not in names:
        names += (data.recipient,)
    return names


def share_styles(ctx: Context, method, shared, ledger) -> tuple:
    """Step 2-3: each client's message (through the boundary, channel `style_stats`) and the server's bank.
    A data-poor recipient (`data.recipient`) computes its message on its labelled and unlabelled images
    (`recipient_style_data`); at k = 0 it is the bank's last row, a style only (it trains no segmenter)."""
    train = ctx.data.train
    clients = [
        {"images": train.images[c], "labels": train.labels[c], "mask": train.mask[c]}
        for c in range(len(ctx.data.client_names))
    ]
    if ctx.data.recipient:
        names = style_client_names(ctx.data)
        clients += [None] * (len(names) - len(clients))
        clients[names.index(ctx.data.recipient)] = recipient_style_data(ctx.data)
    send = lambda msg, c: boundary_lib.send_from_client(msg, ledger, "style_stats", c).payload  # noqa: E731
    bank, _ = style_federated.share_styles(
        method, shared, clients, k=int(ctx.config.style.styles_per_client), seed=int(ctx.config.seed), send=send
    )
    return jax.tree_util.tree_map(jnp.asarray, bank)  # server: stack + broadcast


def precompute_restyled(ctx: Context, method, shared, bank, targets_mode: str = "foreign") -> ClientData:
    """`style.restyle=precomputed`: every client's training set plus `style.precomputed_copies` copies of
    it, each image rendered in a uniformly drawn foreign lab's style (done once, on each client)."""
    sc, seed, train = ctx.config.style, int(ctx.config.seed), ctx.data.train
    images = decode_uint8(np.asarray(train.images))
    labels, mask = np.asarray(train.labels), np.asarray(train.mask)
    c, n = mask.shape
    render = jax.jit(method.render)
    mode = intensity.mode_of(ctx.config)  # a rendered style has its own offset and gain: normalised like the rest
    out = [images]
    for copy in range(int(sc.precomputed_copies)):
        styled = np.empty_like(images)
        for cid in range(c):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), _TAG_PRECOMPUTE), copy * 1000 + cid)
            k_t, k_r = jax.random.split(key)
            targets, has = techniques.draw_targets(bank.valid, jnp.int32(cid), n, k_t, targets_mode)
            r = techniques.render_in_batches(
                method, shared, bank, images[cid], labels[cid], np.asarray(targets), k_r, render_fn=render
            )
            styled[cid] = intensity.normalise(r, mode) if bool(has) else images[cid]
        out.append(styled)
    return ClientData(np.concatenate(out, axis=1), np.concatenate([labels] * len(out), axis=1), np.concatenate([mask] * len(out), axis=1))


def setup_style_sharing(ctx: Context, spec: engine.MethodSpec, ledger, clients_per_round: int):
    """Runs the style-sharing protocol; returns (training data, batch transform or None, summary info)."""
    sc = ctx.config.style
    method = techniques.get_technique(spec.style, sc)
    tile = int(np.shape(ctx.data.train.images)[2])
    shared = method.init_shared(jax.random.fold_in(jax.random.PRNGKey(int(ctx.config.seed)), STYLE_MODEL_INIT_TAG), tile)
    info: dict = {
        "method": spec.style,
        "targets": spec.style_targets,
        "restyle": sc.restyle,
        "mix_prob": float(sc.mix_prob),
    }
    if method.info:
        info["description"] = dict(method.info)
    t0 = time.time()
    if method.shared_loss is not None:
        shared, info["style_round_compilations"] = train_shared_model(ctx, spec, method, shared, ledger, clients_per_round)
    info["shared_model_seconds"] = time.time() - t0
    t0 = time.time()
    if spec.style_targets == "random":
        # The random-style control: styles from the technique's prior, so no lab sends anything.
        if method.prior_bank is None:
            raise ValueError(
                f"config key method_specs.{spec.name}.style_targets: 'random' needs a style technique with a "
                f"prior over its imaging parameters; {spec.style!r} has none"
            )
        key = jax.random.fold_in(jax.random.PRNGKey(int(ctx.config.seed)), _TAG_PRIOR)
        bank = method.prior_bank(key, int(sc.get("prior_styles", 256)))
        info["prior_styles"] = int(bank.valid.shape[1])
    else:
        bank = share_styles(ctx, method, shared, ledger)
        # The style checks measure fidelity to each lab's style: meaningless for prior styles.
        ctx.style_artifacts[spec.name] = {"method": method, "shared": shared, "bank": bank}
    info["share_seconds"] = time.time() - t0
    if sc.restyle == "online":
        # A rendered style has its own offset and gain: stretched like every other image of a stretching run.
        post = intensity.stretch_batch if intensity.mode_of(ctx.config) == intensity.STRETCH else None
        return ctx.data.train, techniques.make_batch_transform(
            method, shared, bank, float(sc.mix_prob), spec.style_targets, post
        ), info
    if sc.restyle == "precomputed":
        t0 = time.time()
        data = precompute_restyled(ctx, method, shared, bank, spec.style_targets)
        info["precompute_seconds"] = time.time() - t0
        return data, None, info
    raise ValueError(f"config key style.restyle: unknown {sc.restyle!r}; choose 'online' or 'precomputed'")


def _fed_as_trained(restyler, mode: str):
    """A restyler whose tiles are normalised as the run's (data.intensity): the checks compare them with real
    tiles and judge them with the run's model, which both saw normalised images."""
    if mode == intensity.RAW:
        return restyler
    return lambda *args: intensity.normalise(restyler(*args), mode)


def style_checks(ctx: Context, summary: dict) -> None:
    """Measures every style technique of the run (fidelity, polarity, structure, seams) on the labs' test tiles
    and writes `methods.<m>.style_checks` into `summary` and `style_grid_<m>.png` into the workdir.

    The structure check's judge is the run's centralized model when it was trained (else a reference
    segmenter is trained here, `style.check_segmenter_steps`); the test tiles are split in halves: one is
    the real reference of each lab, the other the restyling sources."""
    if not ctx.style_artifacts:
        return
    sc = ctx.config.style
    seed = int(ctx.config.seed)
    names = list(style_client_names(ctx.data))  # the bank's rows (a k = 0 recipient's style too)
    heldout = {n: ctx.data.test[n] for n in ctx.data.client_names}
    heldout.update({u: ctx.data.unseen[u] for u in ctx.data.unseen})
    if any(len(v[0]) < 4 for v in heldout.values()):  # too few tiles for reference and query halves
        if ctx.config.get("figures", True):
            from fedtransfer_jax.runs import figures  # noqa: PLC0415

            images = np.stack([heldout[n][0][0] for n in names])
            labels = np.stack([heldout[n][1][0] for n in names])
            for name, art in ctx.style_artifacts.items():
                restyler = checks_lib.method_restyler(art["method"], art["shared"], art["bank"], names)
                figures.style_grid(
                    os.path.join(ctx.workdir, f"style_grid_{name}.png"), images, labels, names, restyler,
                    f"{name}: rows = client tiles, columns = target client style",
                )
        return
    central = ctx.final_params.get("centralized")
    t0 = time.time()
    cctx = checks_lib.prepare(
        heldout,
        names,
        seed,
        classifier_steps=int(sc.get("check_classifier_steps", 200)),
        segmenter_steps=0 if central is not None else int(sc.get("check_segmenter_steps", 300)),
    )
    if central is not None:
        cctx = cctx._replace(segment=lambda x: inference.batched_probs(ctx.prob_fn, central, np.asarray(x, np.float32)))
    prepare_seconds = time.time() - t0
    for name, art in ctx.style_artifacts.items():
        t0 = time.time()
        restyler = _fed_as_trained(
            checks_lib.method_restyler(art["method"], art["shared"], art["bank"], names), intensity.mode_of(ctx.config)
        )
        report = checks_lib.evaluate(cctx, checks_lib.restyle_all(cctx, restyler, seed))
        report["judge"] = "centralized model of this run" if central is not None else "reference segmenter"
        report["seconds"] = time.time() - t0 + prepare_seconds / len(ctx.style_artifacts)
        if name in summary["methods"]:
            summary["methods"][name]["style_checks"] = report
        if ctx.config.get("figures", True):
            checks_lib.style_grid_figure(
                os.path.join(ctx.workdir, f"style_grid_{name}.png"),
                cctx,
                restyler,
                seed,
                title=f"{name}: rows = source tile, columns = target style; bottom rows: real target tiles",
            )
