"""Privacy audit: what an honest-but-curious server can reconstruct from what the clients send it.

Two attacks, each scored against the baseline "a random real image of the same lab" (what the attacker gets
for free from knowing which lab a client is and what such micrographs look like):

(a) **Inversion of shared style statistics** (FedTransfer's style exchange): optimise an image from noise
    (Adam, total-variation prior) until its statistics match one client's shared statistics, then compare it
    with the very image those statistics were computed from. Generic over the statistics:
    `invert_statistics(stats_fn, target_stats, ...)` attacks AdaIN feature mean/std
    (`StyleNet.style_stats`), low-frequency Fourier amplitudes (`style.fourier.low_freq_amplitude`) or any
    new style method's statistics.
(b) **Gradient inversion** of one client's model delta (Geiping, Bauermeister, Droege & Moeller 2020,
    "Inverting gradients - how easy is it to break privacy in federated learning?", NeurIPS): dummy images
    are optimised so that the delta of the client's local step(s) from the known global params matches the
    observed delta in cosine distance (+ TV); the strong attacker knows the labels and the local optimiser.
    With DP-FedAvg's release (clip + Gaussian noise, `privacy.dp`) and without.

Scores: SSIM (skimage) and PSNR of the recovered image vs the true one; boundary F1 (`metrics.boundary_prf`)
of the recovered structure (a thresholded gradient-magnitude edge map, or a segmenter's output when one is
given) vs the true label; correlation of low-pass filtered images (the coarse layout); for Fourier also the
correlation of the log low-frequency amplitudes. Each with the same score of random other images of the lab.

The attack functions take arrays, params and functions (never workdirs); `python -m fedtransfer_jax.audit
--workdir W` is a thin layer that reads a workdir written by `launch.py`, runs them and writes `W/audit.json`
and `W/audit.md` atomically.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage
from skimage.metrics import structural_similarity

from fedtransfer_jax.metrics.boundary import boundary_prf
from fedtransfer_jax.privacy.dp import clip_by_global_norm

PyTree = Any
StatsFn = Callable[[jax.Array], PyTree]  # one image [H, W, 3] -> statistics (any pytree of arrays)


# --------------------------------------------------------------------------------------------------------
# Image scores (numpy; independent of the attack code).
# --------------------------------------------------------------------------------------------------------
def total_variation(images: jax.Array) -> jax.Array:
    """Mean absolute difference of neighbouring pixels (anisotropic TV) over [..., H, W, C]."""
    dy = jnp.abs(images[..., 1:, :, :] - images[..., :-1, :, :]).mean()
    dx = jnp.abs(images[..., :, 1:, :] - images[..., :, :-1, :]).mean()
    return dx + dy


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    win = min(7, min(a.shape[:2]) - (1 - min(a.shape[:2]) % 2))  # odd, <= the image side
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0, win_size=win))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def _grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float64).mean(-1)


def edge_map(image: np.ndarray, fraction: float) -> np.ndarray:
    """The `fraction` of pixels with the largest Sobel gradient magnitude: an attacker's boundary guess
    without a segmenter (`fraction` from the lab's typical boundary density, which it may know)."""
    g = _grey(image)
    mag = np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1))
    return mag >= np.quantile(mag, 1.0 - fraction)


def lowpass_correlation(a: np.ndarray, b: np.ndarray, sigma: float = 2.0) -> float:
    """Pearson correlation of the Gaussian-blurred grey images: does the coarse layout match?"""
    x, y = ndimage.gaussian_filter(_grey(a), sigma).ravel(), ndimage.gaussian_filter(_grey(b), sigma).ravel()
    if x.std() < 1e-12 or y.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def amplitude_correlation(a: np.ndarray, b: np.ndarray, beta: float) -> float:
    """Pearson correlation of the log low-frequency Fourier amplitudes (the centred (2k+1)^2 window that
    FedDG-ELCFS shares, k = floor(beta min(H, W) / 2)); numpy, independent of style/fourier.py."""
    h, w = np.asarray(a).shape[:2]
    k = int(np.floor(beta * min(h, w) / 2))

    def window(x):
        amp = np.abs(np.fft.fftshift(np.fft.fft2(np.asarray(x, np.float64), axes=(0, 1)), axes=(0, 1)))
        return np.log1p(amp[h // 2 - k : h // 2 + k + 1, w // 2 - k : w // 2 + k + 1]).ravel()

    x, y = window(a), window(b)
    if x.std() < 1e-12 or y.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def score_reconstruction(
    recovered: np.ndarray,
    true_image: np.ndarray,
    true_label: np.ndarray,
    baseline_images: np.ndarray,
    *,
    boundary_fraction: float,
    tolerance: float = 2.0,
    boundary_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    beta: float | None = None,
    twin: bool = False,
    calibrate: bool = False,
) -> dict:
    """Scores of `recovered` and, as `baseline_*`, the mean scores of `baseline_images` [B, H, W, 3] (other
    real images of the same lab) against the true image and label.

    `boundary_fn(image) -> bool [H, W]` predicts boundaries (e.g. a trained segmenter); default: the
    thresholded edge map. `beta`: also score the Fourier low-frequency amplitude correlation. `twin`: an
    amplitude spectrum cannot tell an image from its 180-degree rotation (the "twin image" of phase
    retrieval), so score whichever of the two has the higher low-pass correlation (baselines likewise).
    `calibrate`: first give the recovered image the lab's grey levels (per-channel mean and std of the
    baseline images, which an attacker who knows the lab has): gradient matching recovers structure up to
    an affine intensity change, which SSIM and PSNR would otherwise punish.
    """
    if calibrate:
        ref = np.asarray(baseline_images, np.float64)
        mu_lab, sd_lab = ref.mean(axis=(0, 1, 2)), ref.std(axis=(1, 2)).mean(0)
        r = np.asarray(recovered, np.float64)
        r = (r - r.mean(axis=(0, 1))) / (r.std(axis=(0, 1)) + 1e-6) * sd_lab + mu_lab
        recovered = np.clip(r, 0.0, 1.0)
    boundary_fn = boundary_fn or (lambda im: edge_map(im, boundary_fraction))

    def scores(im):
        if twin:
            flipped = im[::-1, ::-1]
            if lowpass_correlation(flipped, true_image) > lowpass_correlation(im, true_image):
                im = flipped
        out = {
            "ssim": ssim(im, true_image),
            "psnr": psnr(im, true_image),
            "boundary_f1": boundary_prf(boundary_fn(im), np.asarray(true_label) > 0, tolerance)["f1"],
            "lowpass_corr": lowpass_correlation(im, true_image),
        }
        if beta is not None:
            out["amplitude_corr"] = amplitude_correlation(im, true_image, beta)
        return out

    rec = scores(np.clip(np.asarray(recovered), 0.0, 1.0))
    base = [scores(np.asarray(b)) for b in baseline_images]
    out = dict(rec)
    for k in rec:
        vals = np.array([b[k] for b in base])
        out[f"baseline_{k}"] = float(vals.mean())
        out[f"baseline_{k}_std"] = float(vals.std())
    return out


# --------------------------------------------------------------------------------------------------------
# (a) Inverting shared statistics.
# --------------------------------------------------------------------------------------------------------
def _relative_sq_error(pred: PyTree, target: PyTree) -> jax.Array:
    """sum over leaves of ||p - t||^2 / ||t||^2: every statistic counts, whatever its scale."""
    errs = [
        jnp.sum(jnp.square(p - t)) / (jnp.sum(jnp.square(t)) + 1e-8)
        for p, t in zip(jax.tree_util.tree_leaves(pred), jax.tree_util.tree_leaves(target))
    ]
    return sum(errs)


def invert_statistics(
    stats_fn: StatsFn,
    target_stats: PyTree,
    image_shape: Sequence[int],
    key: jax.Array,
    steps: int = 300,
    lr: float = 0.05,
    tv_weight: float = 0.05,
) -> np.ndarray:
    """An image whose `stats_fn` statistics match `target_stats`: Adam on the logits of a sigmoid image
    started from noise, minimising the relative squared statistics error + `tv_weight` * TV.

    Args:
      stats_fn: image [H, W, 3] in [0, 1] -> statistics pytree (differentiable).
      target_stats: the statistics one client shared for one image.
      image_shape: (H, W, 3).
    """
    target_stats = jax.tree_util.tree_map(lambda t: jnp.asarray(t, jnp.float32), target_stats)
    run = _statistics_inversion_runner(stats_fn, int(steps), float(lr), float(tv_weight))
    image, _ = run(0.5 * jax.random.normal(key, tuple(image_shape), jnp.float32), target_stats)
    return np.asarray(image)


@functools.lru_cache(maxsize=16)
def _statistics_inversion_runner(stats_fn, steps, lr, tv_weight):
    """One jitted attack per (statistics function, settings): every victim of an audit reuses it."""
    opt = optax.adam(lr)

    def loss(z, target):
        x = jax.nn.sigmoid(z)
        return _relative_sq_error(stats_fn(x), target) + tv_weight * total_variation(x)

    @jax.jit
    def run(z0, target):
        def step(carry, _):
            z, s = carry
            value, g = jax.value_and_grad(loss)(z, target)
            updates, s = opt.update(g, s, z)
            return (optax.apply_updates(z, updates), s), value

        (z, _), values = jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps)
        return jax.nn.sigmoid(z), values

    return run


# --------------------------------------------------------------------------------------------------------
# (b) Gradient inversion of a model delta.
# --------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------
# Audit drivers: arrays in, score tables out.
# --------------------------------------------------------------------------------------------------------
def summarize(rows: Sequence[dict]) -> dict:
    """Mean and standard deviation over victims of every score (and `advantage_<score>` = recovered minus
    baseline, the attack's gain over knowing only the lab)."""
    keys = [k for k in rows[0] if not k.endswith("_std")]
    out: dict = {"n": len(rows)}
    for k in keys:
        vals = np.array([r[k] for r in rows], np.float64)
        out[k], out[k + "_std"] = float(vals.mean()), float(vals.std())
    for k in [k for k in keys if not k.startswith("baseline_")]:
        if "baseline_" + k in out:
            adv = np.array([r[k] - r["baseline_" + k] for r in rows])
            out["advantage_" + k], out["advantage_" + k + "_std"] = float(adv.mean()), float(adv.std())
    return out


def style_inversion_audit(
    images: np.ndarray,
    labels: np.ndarray,
    stats_fns: dict[str, StatsFn],
    victims: Sequence[int],
    key: jax.Array,
    *,
    steps: int = 300,
    lr: float = 0.05,
    tv_weight: float = 0.05,
    tolerance: float = 2.0,
    beta: float | None = None,
    boundary_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    control: bool = True,
) -> tuple[dict, dict]:
    """Attack (a) on one client: for every victim image and every statistics function, invert the statistics
    the client shared for that image and score the result against it (baseline: the client's other images).
    `control`: also invert the statistics of *another* image of the lab and score that against the victim:
    what the lab's style alone gives, so that only image-specific leakage beats it.

    Returns (scores {method: summarize(...), method + "/control": ...}, recovered images {method: [V, H, W, 3]}).
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    scores, recovered = {}, {}
    for mi, (name, fn) in enumerate(sorted(stats_fns.items())):
        rows, control_rows, recs = [], [], []
        shared = jax.jit(fn)  # what the client computed and sent (one compilation, not one per op)
        for vi, v in enumerate(victims):
            others = np.array([i for i in range(len(images)) if i != v])
            kwargs = dict(
                boundary_fraction=float((labels[others] > 0).mean()),
                tolerance=tolerance,
                boundary_fn=boundary_fn,
                beta=beta if name == "fourier" else None,
                twin=name == "fourier",
            )
            k = jax.random.fold_in(jax.random.fold_in(key, mi), vi)
            rec = invert_statistics(
                fn, shared(jnp.asarray(images[v])), images.shape[1:], k, steps, lr, tv_weight
            )
            rows.append(score_reconstruction(rec, images[v], labels[v], images[others], **kwargs))
            recs.append(rec)
            if control:
                other = int(others[vi % len(others)])
                ctl = invert_statistics(
                    fn, shared(jnp.asarray(images[other])), images.shape[1:], k, steps, lr, tv_weight
                )
                rest = np.array([i for i in others if i != other])
                control_rows.append(score_reconstruction(ctl, images[v], labels[v], images[rest], **kwargs))
        scores[name], recovered[name] = summarize(rows), np.stack(recs)
        if control:
            scores[name + "/control"] = summarize(control_rows)
    return scores, recovered


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


# --------------------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------------------
WHAT_IS_SENT = {
    "style_stats_adain": (
        "per shared image, the mean and std of every channel of every level of the style encoder's features "
        "(spatially pooled, so a translation of the image barely changes them; zero padding makes the borders an "
        "exception)"
    ),
    "style_stats_fourier": (
        "per shared image, the centred low-frequency window of the Fourier amplitude (no phase): mean colour, "
        "contrast of slow shading; an image and its 180-degree rotation (and circular shifts) share it"
    ),
    "model_delta": (
        "per round, the client's model delta, a deterministic function of its images and labels; the server sees "
        "it unless secure aggregation hides it, and DP-FedAvg's release clips and noises the aggregate (central DP "
        "protects the released models; against the server itself it needs secure aggregation too)"
    ),
}
_MAIN_SCORES = ("ssim", "psnr", "boundary_f1", "lowpass_corr", "amplitude_corr")


def leaked_scores(summary: dict, control: dict | None = None) -> list[str]:
    """Scores in which the attack beats the lab baseline (and, given a `control` run that had no information
    from the client, the control too) by more than two standard errors and 0.02 (one victim: by 0.05)."""

    def beats(adv, sd, n):
        return adv > 0.02 and adv > (2 * sd / np.sqrt(n - 1) if n > 1 else 0.05)

    out = []
    for k in _MAIN_SCORES:
        if "advantage_" + k not in summary:
            continue
        n = summary["n"]
        ok = beats(summary["advantage_" + k], summary["advantage_" + k + "_std"], n)
        if ok and control is not None and k in control:
            sd = np.hypot(summary[k + "_std"], control[k + "_std"])  # independent runs
            ok = beats(summary[k] - control[k], sd, n)
        if ok:
            out.append(k)
    return out


def measured_leaks(report: dict) -> dict[str, list[str]]:
    """{attack / setting: ['client: scores', ...]} from the audit's score tables."""
    out: dict[str, list[str]] = {}
    for client, methods in report.get("style_inversion", {}).items():
        for method, s in methods.items():
            if not method.endswith("/control"):
                leaked = leaked_scores(s, methods.get(method + "/control"))
                out.setdefault(f"style statistics ({method})", []).extend(
                    [f"{client}: {'/'.join(leaked)}"] if leaked else []
                )
    for client, batches in report.get("gradient_inversion", {}).items():
        for batch, settings in batches.items():
            for setting, s in settings.items():
                if isinstance(s, dict) and setting != "control":
                    leaked = leaked_scores(s, settings.get("control"))
                    out.setdefault(f"model delta, {batch}, {setting}", []).extend(
                        [f"{client}: {'/'.join(leaked)}"] if leaked else []
                    )
    return out


def _row(name: str, s: dict, control: dict | None = None) -> str:
    cells = []
    for k in _MAIN_SCORES:
        if k in s:
            cells.append(f"{s[k]:.3f} vs {s['baseline_' + k]:.3f}")
        else:
            cells.append("")
    return (
        f"| {name} | {s['n']} | " + " | ".join(cells) + f" | {', '.join(leaked_scores(s, control)) or '-'} |"
    )


def report_markdown(report: dict) -> str:
    head = (
        "| attack | n | "
        + " | ".join(f"{k} (recovered vs lab baseline)" for k in _MAIN_SCORES)
        + " | beats baseline in |"
    )
    sep = "|" + "---|" * (len(_MAIN_SCORES) + 3)
    lines = [
        "# Privacy audit",
        "",
        f"Workdir `{report.get('workdir', '')}`, {report.get('seconds', 0):.0f} s. An honest-but-curious server "
        "attacks what clients send; every score is compared with the same score of a random other real image "
        "of the same lab (the baseline). Means over victims; `beats baseline` = the attack's advantage exceeds "
        "two standard errors and that of the `control` run (style: the same attack on the statistics of another "
        "image of the lab, i.e. what the lab's style alone gives; gradients: inverting pure noise with the same "
        "known labels).",
        "",
        "## What is sent",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in report.get("what_is_sent", {}).items()]
    lines += ["", "## What leaks (measured: beats the lab baseline and the control)", ""]
    lines += [f"- {k}: {', '.join(v) or 'nothing'}" for k, v in measured_leaks(report).items()]
    if report.get("style_inversion"):
        lines += ["", "## (a) Inverting shared style statistics", "", head, sep]
        for client, methods in report["style_inversion"].items():
            for method, s in methods.items():
                lines.append(_row(f"{client} / {method}", s, methods.get(method + "/control")))
    if report.get("gradient_inversion"):
        lines += ["", "## (b) Gradient inversion of a model delta (labels known)", "", head, sep]
        for client, batches in report["gradient_inversion"].items():
            for batch, settings in batches.items():
                control = settings.get("control")
                for setting, s in settings.items():
                    if isinstance(s, dict):
                        lines.append(
                            _row(
                                f"{client} / {batch} / {setting}",
                                s,
                                None if setting == "control" else control,
                            )
                        )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_report(workdir: str, report: dict) -> None:
    """`workdir/audit.json` and `workdir/audit.md`, each written atomically."""
    from fedtransfer_jax import io_utils

    io_utils.write_json_atomic(os.path.join(workdir, "audit.json"), report)
    io_utils.write_text_atomic(os.path.join(workdir, "audit.md"), report_markdown(report))


# --------------------------------------------------------------------------------------------------------
# The workdir layer (thin: the checkpoint layout is still changing).
# --------------------------------------------------------------------------------------------------------
def _lab_seed(seed: int, lab: str, split: str) -> int:
    try:  # the seed the tfds builder used for this lab's split
        from fedtransfer_jax.data.tfds_builders import _lab_seed as builder_seed

        return builder_seed(seed, lab, split)
    except ImportError:  # tfds missing: the same derivation
        import zlib

        rng = np.random.default_rng([seed, zlib.crc32(lab.encode()), zlib.crc32(split.encode())])
        return int(rng.integers(0, 2**31 - 1))


def load_workdir_clients(
    config: dict, max_images: int | None = None, only: Sequence[str] = ()
) -> tuple[dict, list[str]]:
    """Every training client's images and labels, regenerated from the config (the simulation's privilege:
    the workdir does not store client data). Synthetic sources only. Returns ({client: (images, labels)},
    notes)."""
    from fedtransfer_jax.data.synthetic import LAB_NAMES, make_lab_examples

    data = config["data"]
    if data.get("source", "synthetic") != "synthetic":
        raise ValueError(
            "audit CLI: only data.source='synthetic' workdirs can be regenerated; call the attack "
            "functions with the folder's arrays instead"
        )
    n = (
        int(data["train_per_client"])
        if max_images is None
        else min(int(data["train_per_client"]), max_images)
    )
    tile, out = int(data.get("tile_size", data["image_size"])), {}
    for lab in data["clients"]:
        if only and lab not in only:
            continue
        if lab not in LAB_NAMES:
            raise ValueError(f"audit CLI: unknown synthetic lab {lab!r}")
        images, labels, _ = make_lab_examples(
            lab,
            n,
            int(data["image_size"]),
            _lab_seed(int(data["seed"]), lab, "train"),
            boundary_width=int(data.get("boundary_width", 2)),
        )
        # The clients' tiles are stored as 8-bit (tfds) and read back as k / 255: the same here, exactly.
        k = np.clip(np.rint(np.asarray(images[:, :tile, :tile], np.float32) * 255.0), 0, 255)
        out[lab] = (k.astype(np.float32) / np.float32(255.0), (labels[:, :tile, :tile] > 0).astype(np.uint8))
    notes = [
        f"client images regenerated from config.json (data.seed={data['seed']}, first {n} training images per "
        f"client, top-left {tile}px tile, 8-bit like the tfds cache: bit-identical to the clients' training tiles "
        "when image_size == tile_size): the workdir stores no client data; this is the simulation's privilege, "
        "not something a real server has."
    ]
    return out, notes


def style_stats_fns(config: dict, image_size: int) -> tuple[dict[str, StatsFn], list[str]]:
    """The statistics functions the clients used to share styles: AdaIN (the frozen random encoder of the
    style network, re-initialised from the config seed exactly as training does) and Fourier amplitudes."""
    from fedtransfer_jax.style.fourier import low_freq_amplitude
    from fedtransfer_jax.style.network import StyleNet

    sc = config.get("style", {})
    kwargs = {"padding": sc["padding"]} if "padding" in sc else {}
    net = StyleNet(features=tuple(sc.get("features", (16, 32, 64))), **kwargs)
    # Only the encoder computes statistics: initialise just it (flax derives each parameter's key from its
    # module path, so these equal the encoder of `init_style_net` with the training key; the test checks).
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    init = jax.jit(lambda k: net.init(k, dummy, method=StyleNet.encode)["params"])
    params = init(jax.random.fold_in(jax.random.PRNGKey(int(config["seed"])), 0x57))
    beta = float(sc.get("fourier_beta", 0.1))
    notes = [f"Fourier window beta={beta}."]
    if sc.get("train_encoder", False):
        notes.append(
            "style.train_encoder=True: the shared AdaIN statistics came from a trained encoder; this "
            "audit recomputes them with the initial one (the checkpointed style net is not read)."
        )

    def adain(x):
        mean, std = net.apply({"params": params}, x[None], method=StyleNet.style_stats)
        return {"mean": mean[0], "std": std[0]}

    return {"adain": adain, "fourier": lambda x: low_freq_amplitude(x[None], beta)[0]}, notes


def shared_indices(num_images: int, k: int, seed: int, client_id: int) -> np.ndarray:
    """Which of a client's images it shared style statistics of (the trainer's style.federated.style_sample)."""
    from fedtransfer_jax.style.federated import style_sample

    return style_sample(np.ones(num_images, bool), k, seed, client_id)


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


def run_workdir_audit(workdir: str, args: argparse.Namespace) -> dict:
    t0 = time.time()
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    seed = int(config.get("seed", 0))
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0xA0D17)
    clients, notes = load_workdir_clients(config, args.max_images, args.clients)
    names = list(clients)
    ids = {name: i for i, name in enumerate(config["data"]["clients"])}  # global client ids (style_sample)
    report: dict = {
        "workdir": os.path.abspath(workdir),
        "config_name": config.get("name", ""),
        "notes": notes,
    }
    report["settings"] = {k: v for k, v in vars(args).items() if k != "workdir"}
    report["what_is_sent"] = dict(WHAT_IS_SENT)

    size = next(iter(clients.values()))[0].shape[1]
    fns, style_notes = style_stats_fns(config, size)
    notes += style_notes
    k_shared = int(config.get("style", {}).get("styles_per_client", 8))
    report["style_inversion"] = {}
    for name in names:
        images, labels = clients[name]
        victims = shared_indices(len(images), k_shared, seed, ids[name])[: args.victims]
        report["style_inversion"][name], _ = style_inversion_audit(
            images,
            labels,
            fns,
            victims,
            jax.random.fold_in(key, ids[name]),
            steps=args.style_steps,
            beta=float(config.get("style", {}).get("fourier_beta", 0.1)),
        )

    gi_size = args.gi_size
    _, params, loss_fn = tiny_segmenter(gi_size, seed, args.gi_features)
    report["gradient_inversion"] = {}
    for name in names[: args.gi_clients]:
        images, labels = clients[name]
        if images.shape[1] < gi_size:
            raise ValueError(f"--gi_size {gi_size} is larger than the images ({images.shape[1]} px)")
        batch_sizes = [b for b in args.gi_batch_sizes if b < len(images)]  # the rest are the baseline
        if len(batch_sizes) < len(args.gi_batch_sizes):
            notes.append(f"{name}: {len(images)} images; batch sizes >= that skipped (the baseline needs the rest)")
        report["gradient_inversion"][name], _ = gradient_inversion_audit(
            loss_fn,
            params,
            images[:, :gi_size, :gi_size],
            labels[:, :gi_size, :gi_size],
            jax.random.fold_in(key, 100 + ids[name]),
            batch_sizes=batch_sizes,
            noise_multipliers=args.noise_multipliers,
            client_lr=args.gi_client_lr,
            steps=args.gi_steps,
        )
    notes.append(
        f"gradient inversion: a U-Net {tuple(args.gi_features)} at its initial params on {gi_size}px crops, one full-batch SGD step "
        f"at lr {args.gi_client_lr} (FedSGD-like, the most revealing update; the workdir's model and optimiser are "
        "not used), labels known to the attacker. 'control' inverts pure noise: what the labels and the prior "
        "alone give. DP clip norm = the delta's own norm (clipping inactive)."
    )
    report["seconds"] = time.time() - t0
    return report


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x)


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fedtransfer_jax.audit", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a workdir written by launch.py (reads config.json)")
    p.add_argument(
        "--clients",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=(),
        help="comma-separated client names to audit (default: all training clients)",
    )
    p.add_argument(
        "--victims", type=int, default=3, help="shared images attacked per client (style inversion)"
    )
    p.add_argument(
        "--max_images", type=int, default=8, help="client images regenerated (victims + baselines)"
    )
    p.add_argument("--style_steps", type=int, default=300)
    p.add_argument("--gi_steps", type=int, default=200)
    p.add_argument("--gi_size", type=int, default=32)
    p.add_argument("--gi_clients", type=int, default=1, help="clients attacked by gradient inversion")
    p.add_argument("--gi_batch_sizes", type=_ints, default=(1, 4))
    p.add_argument("--gi_features", type=_ints, default=(8, 16), help="U-Net widths of the attacked model")
    p.add_argument("--gi_client_lr", type=float, default=0.1)
    p.add_argument("--noise_multipliers", type=_floats, default=(0.1, 1.0))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_workdir_audit(args.workdir, args)
    write_report(args.workdir, report)
    print(report_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
