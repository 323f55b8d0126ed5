"""Attack (b): gradient inversion of one client's model delta, with and without DP-FedAvg's release.

Geiping, Bauermeister, Droege & Moeller 2020, "Inverting gradients - how easy is it to break privacy in
federated learning?" (NeurIPS): dummy images are optimised so that the delta of the client's local step(s)
from the known global params matches the observed delta in cosine distance (+ TV). The strong attacker knows
the labels, the loss and the local optimiser. The release is attacked raw (what the server sees without
secure aggregation), after DP-FedAvg's clip + Gaussian noise (`privacy.dp`), and as a control on pure noise
(what the known labels and the image prior give with no information from the client).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.privacy.audit.scores import score_reconstruction, summarize
from fedtransfer_jax.privacy.audit.statistics_inversion import total_variation
from fedtransfer_jax.privacy.dp import clip_by_global_norm

PyTree = Any
LossFn = Callable[[PyTree, dict, jax.Array], tuple[jax.Array, Any]]  # the engine's loss signature


def local_delta(loss_fn: LossFn, params: PyTree, batch: dict, lr: float, local_steps: int = 1) -> PyTree:
    """The model delta of `local_steps` full-batch SGD steps at `lr` from `params` (what a client sends),
    differentiable with respect to the batch."""
    p = params
    for _ in range(local_steps):
        g = jax.grad(lambda q: loss_fn(q, batch, jax.random.PRNGKey(0))[0])(p)
        p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)
    return jax.tree_util.tree_map(lambda a, b: a - b, p, params)


def dp_release(delta: PyTree, clip_norm: float, noise_multiplier: float, key: jax.Array) -> PyTree:
    """What DP-FedAvg releases about one client's delta: clipped to `clip_norm`, plus N(0, (z C)^2) noise
    (the noised sum of a round in which this client is the only one; scaling by 1/m does not matter to a
    cosine attack). The server itself sees the unnoised update unless secure aggregation hides it."""
    clipped, _ = clip_by_global_norm(delta, jnp.float32(clip_norm))
    leaves, treedef = jax.tree_util.tree_flatten(clipped)
    noisy = [
        x + noise_multiplier * clip_norm * jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
        for i, x in enumerate(leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)


_jitted_dp_release = jax.jit(dp_release)


@jax.jit
def _jitted_noise(tree: PyTree, key: jax.Array) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(
        treedef,
        [jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32) for i, x in enumerate(leaves)],
    )


def _cosine_distance(a: PyTree, b: PyTree) -> jax.Array:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    dot = sum(jnp.sum(x * y) for x, y in zip(la, lb))
    na = jnp.sqrt(sum(jnp.sum(x * x) for x in la))
    nb = jnp.sqrt(sum(jnp.sum(y * y) for y in lb))
    return 1.0 - dot / (na * nb + 1e-12)


def invert_gradients(
    loss_fn: LossFn,
    params: PyTree,
    observed_delta: PyTree,
    labels: jax.Array,
    key: jax.Array,
    *,
    client_lr: float,
    local_steps: int = 1,
    steps: int = 300,
    lr: float = 0.1,
    tv_weight: float = 0.01,
    restarts: int = 2,
) -> np.ndarray:
    """Geiping et al. 2020: dummy images [B, H, W, 3] (B = len(labels), labels known) whose local delta
    from `params` has the smallest cosine distance to `observed_delta`, + `tv_weight` * TV. Adam on
    sigmoid logits from noise, learning rate decayed 10x at 3/8, 5/8 and 7/8 of the steps, `restarts`
    random starts (vmapped) of which the one with the lowest final objective wins (as in the paper). The
    attacker knows the loss, the client's SGD learning rate and its number of local steps."""
    labels = jnp.asarray(labels)
    run = _gradient_inversion_runner(
        loss_fn, float(client_lr), int(local_steps), int(steps), float(lr), float(tv_weight)
    )
    z0 = 0.5 * jax.random.normal(key, (int(restarts),) + tuple(labels.shape) + (3,), jnp.float32)
    images, losses = run(z0, params, observed_delta, labels)
    return np.asarray(images[int(jnp.argmin(losses[:, -1]))])


@functools.lru_cache(maxsize=16)
def _gradient_inversion_runner(loss_fn, client_lr, local_steps, steps, lr, tv_weight):
    """One jitted attack per configuration: the DP / no-DP / control runs of an audit share its compilation
    (params, observed delta and labels are arguments, not constants)."""
    schedule = optax.piecewise_constant_schedule(lr, {int(steps * f): 0.1 for f in (3 / 8, 5 / 8, 7 / 8)})
    opt = optax.adam(schedule)

    def loss(z, params, observed, labels):
        x = jax.nn.sigmoid(z)
        batch = {"images": x, "labels": labels, "mask": jnp.ones(labels.shape[:1], bool)}
        delta = local_delta(loss_fn, params, batch, client_lr, local_steps)
        return _cosine_distance(delta, observed) + tv_weight * total_variation(x)

    def one_start(z0, params, observed, labels):
        def step(carry, _):
            z, s = carry
            value, g = jax.value_and_grad(loss)(z, params, observed, labels)
            updates, s = opt.update(g, s, z)
            return (optax.apply_updates(z, updates), s), value

        (z, _), values = jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps)
        return jax.nn.sigmoid(z), values

    return jax.jit(jax.vmap(one_start, in_axes=(0, None, None, None)))  # restarts on the leading axis


@functools.lru_cache(maxsize=16)
def _jitted_local_delta(loss_fn, client_lr, local_steps):
    return jax.jit(lambda params, batch: local_delta(loss_fn, params, batch, client_lr, local_steps))



def gradient_inversion_audit(
    loss_fn: LossFn,
    params: PyTree,
    images: np.ndarray,
    labels: np.ndarray,
    key: jax.Array,
    *,
    batch_sizes: Sequence[int] = (1, 4),
    noise_multipliers: Sequence[float] = (0.1, 1.0),
    clip_norm: float | None = None,
    client_lr: float = 0.1,
    local_steps: int = 1,
    steps: int = 200,
    lr: float = 0.1,
    tv_weight: float = 0.01,
    tolerance: float = 2.0,
    control: bool = True,
    restarts: int = 2,
) -> tuple[dict, dict]:
    """Attack (b) on one client: its first B images form the local batch (labels known to the attacker), the
    rest are the baseline. Settings: `no_dp` (the raw delta, what the server sees without secure aggregation),
    `dp_z<z>` (DP-FedAvg's release: clipped to `clip_norm`, default the delta's own norm so that clipping
    costs nothing, + noise z C), and `control` (a pure-noise 'delta': what the known labels and the image prior
    give with no information from the client at all).

    Returns (scores {f"batch{B}": {setting: summarize(...)}}, recovered {f"batch{B}/{setting}": [B, H, W, 3]}).
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    scores, recovered = {}, {}
    for bi, b in enumerate(batch_sizes):
        if b >= len(images):
            raise ValueError(
                f"gradient inversion with batch {b} needs more than {b} images, got {len(images)}"
            )
        batch = {
            "images": jnp.asarray(images[:b]),
            "labels": jnp.asarray(labels[:b]),
            "mask": jnp.ones((b,), bool),
        }
        delta = _jitted_local_delta(loss_fn, float(client_lr), int(local_steps))(params, batch)
        norm = float(optax.global_norm(delta))
        c = norm if clip_norm is None else float(clip_norm)
        observed = {"no_dp": delta}
        for zi, z in enumerate(noise_multipliers):
            observed[f"dp_z{z:g}"] = _jitted_dp_release(
                delta, c, float(z), jax.random.fold_in(jax.random.fold_in(key, bi), zi)
            )
        if control:  # no information at all: a Gaussian 'delta' of the same shapes
            observed["control"] = _jitted_noise(delta, jax.random.fold_in(jax.random.fold_in(key, bi), 1000))
        scores[f"batch{b}"] = {"delta_norm": norm, "clip_norm": c}
        for si, (setting, obs) in enumerate(observed.items()):
            rec = invert_gradients(
                loss_fn,
                params,
                obs,
                batch["labels"],
                jax.random.fold_in(jax.random.fold_in(key, bi), 2000 + si),
                client_lr=client_lr,
                local_steps=local_steps,
                steps=steps,
                lr=lr,
                tv_weight=tv_weight,
                restarts=restarts,
            )
            rows = [
                score_reconstruction(
                    rec[i],
                    images[i],
                    labels[i],
                    images[b:],
                    boundary_fraction=float((labels[b:] > 0).mean()),
                    tolerance=tolerance,
                    calibrate=True,
                )
                for i in range(b)
            ]
            scores[f"batch{b}"][setting] = summarize(rows)
            recovered[f"batch{b}/{setting}"] = rec
    return scores, recovered


def tiny_segmenter(size: int, seed: int, features: Sequence[int] = (8, 16)):
    """The audit's default gradient-inversion target: a U-Net with `features` (8, 16), its initial params (the
    known global model of round 1) and the engine's segmentation loss. conv_impl 'xla' because the attack
    differentiates the client's gradient (the project's fast CPU convs have a custom VJP, differentiable once).
    """
    from fedtransfer_jax.models import UNet, make_segmentation_loss

    model = UNet(features=tuple(features), conv_impl="xla")
    init = jax.jit(model.init)  # one compilation instead of one per op (eager flax init is slow on CPU)
    params = init(jax.random.fold_in(jax.random.PRNGKey(seed), 0xA0D), jnp.zeros((1, size, size, 3)))[
        "params"
    ]
    return model, params, make_segmentation_loss(model, boundary_weight=3.0, dice_weight=1.0)
