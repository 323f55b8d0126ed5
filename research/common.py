"""Research helpers for the style work (dev seeds 100-102 only): cached synthetic lab data, a tiny FedAvg
loop (a Python loop over clients with one jitted local-training function), timing."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.data import styles as data_styles
from fedtransfer_jax.data.synthetic import LABS, make_lab_examples
from fedtransfer_jax.fl.algorithms import base

SEEN = ("brightfield", "darkfield", "sem", "lowcontrast")
UNSEEN = ("tint",)
DEV_SEEDS = (100, 101, 102)
N_TRAIN = 8  # protocol: 8 labelled tiles per seen lab
N_POOL = 104  # extra real tiles per lab for the checks (reference / query / classifier / segmenter)
CACHE = "/tmp/style_dev"


def quantize(x):
    return (np.round(np.clip(x, 0, 1) * 255.0) / 255.0).astype(np.float32)  # the trainer stores uint8


def lab_data(seed: int, labs=SEEN + UNSEEN, size: int = 64) -> dict:
    """{lab: dict(images, labels, grains)}: first N_TRAIN = the training tiles, then the pool."""
    os.makedirs(CACHE, exist_ok=True)
    path = f"{CACHE}/data_{seed}_{size}.npz"
    if os.path.exists(path):
        z = np.load(path)
        return {l: {k: z[f"{l}/{k}"] for k in ("images", "labels", "grains")} for l in labs}
    out = {}
    for lab in labs:
        x, y, g = make_lab_examples(lab, N_TRAIN + N_POOL, size=size, seed=seed)
        out[lab] = {"images": quantize(x), "labels": y, "grains": g}
    np.savez_compressed(path, **{f"{l}/{k}": v for l, d in out.items() for k, v in d.items()})
    return out


def oracle_render(target_lab: str, grains: np.ndarray, seed: int, tag: int = 0) -> np.ndarray:
    """Source grain maps rendered by the *true* renderer of the target lab (synthetic only): the best any
    style method could do given the source geometry (research reference, never used by a method)."""
    style = LABS[target_lab].style
    out = []
    for i, g in enumerate(grains):
        rng = np.random.default_rng([seed, 0x0AC1E, tag, i])
        p = data_styles.sample_style_params(style, rng)
        out.append(data_styles.render(style, rng, g, p))
    return quantize(np.stack(out))


def fedavg(
    loss_fn,
    params,
    clients: list[dict],
    *,
    rounds: int,
    local_steps: int,
    batch: int,
    lr: float,
    seed: int,
    optimizer=None,
    verbose=False,
):
    """Plain FedAvg (server SGD lr 1): returns (params, seconds, per-round mean losses)."""
    lt = base.LocalTraining(
        loss_fn=loss_fn, optimizer=optimizer or optax.adam(lr), local_steps=local_steps, batch_size=batch
    )
    local = jax.jit(lambda p, d, c, k: base.run_local_training(lt, p, d, c, k))
    t0 = time.time()
    losses = []
    for r in range(rounds):
        deltas, weights, ls = [], [], []
        for c, d in enumerate(clients):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), r), c)
            p, loss = local(params, d, jnp.int32(c), key)
            deltas.append(base.tree_sub(p, params))
            weights.append(float(np.sum(d["mask"])))
            ls.append(float(loss))
        w = np.asarray(weights) / np.sum(weights)
        mean = jax.tree_util.tree_map(lambda *x: sum(wi * xi for wi, xi in zip(w, x)), *deltas)
        params = base.tree_add(params, mean)
        losses.append(float(np.mean(ls)))
        if verbose:
            print(f"round {r} loss {losses[-1]:.4f} {time.time() - t0:.1f}s", flush=True)
    jax.block_until_ready(params)
    return params, time.time() - t0, losses
