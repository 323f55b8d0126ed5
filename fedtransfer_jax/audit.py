"""Privacy audit: what an honest-but-curious server can reconstruct from what the clients send it.

Two attacks, each scored against the baseline "a random real image of the same lab" (what the attacker gets
for free from knowing which lab a client is and what such micrographs look like):

(a) **Inversion of shared style statistics** (FedTransfer's style exchange): optimise an image from noise
    (Adam, total-variation prior) until its statistics match one client's shared statistics, then compare it
    with the very image those statistics were computed from. Generic over the statistics:
    `invert_statistics(stats_fn, target_stats, ...)` attacks AdaIN feature mean/std
    (`StyleNet.style_stats`), low-frequency Fourier amplitudes (`style.fourier.low_freq_amplitude`) or any
    new style method's statistics. The `gen` method's message (`style.parametric.fit_style` of a tile *with
    its label map*) is attacked by `gen_inversion_audit`: the server lacks the label, so the attacker fits
    its candidate with the label of another tile of the same lab.
(b) **Gradient inversion** of one client's model delta (Geiping, Bauermeister, Droege & Moeller 2020,
    "Inverting gradients - how easy is it to break privacy in federated learning?", NeurIPS): dummy images
    are optimised so that the delta of the client's local step(s) from the known global params matches the
    observed delta in cosine distance (+ TV); the strong attacker knows the labels and the local optimiser.
    With DP-FedAvg's release (clip + Gaussian noise, `privacy.dp`) and without.
(c) **Property inference**: can the server predict a tile's grain statistics (number of grains, mean grain
    area, boundary fraction) from that tile's message (AdaIN, Fourier or gen) better than from the lab's
    mean? Leave-one-out ridge regression and a permutation test (`property_inference`): a materials leak
    that image-similarity scores miss.

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
    context: PyTree = None,
) -> np.ndarray:
    """An image whose `stats_fn` statistics match `target_stats`: Adam on the logits of a sigmoid image
    started from noise, minimising the relative squared statistics error + `tv_weight` * TV.

    Args:
      stats_fn: image [H, W, 3] in [0, 1] -> statistics pytree (differentiable); called as
        `stats_fn(image, context)` when a `context` is given.
      target_stats: the statistics one client shared for one image.
      image_shape: (H, W, 3).
      context: optional arrays the statistics depend on besides the image (e.g. the label maps the
        attacker guesses for the gen message): an argument of the jitted attack, so that every victim
        reuses one compilation.
    """
    target_stats = jax.tree_util.tree_map(lambda t: jnp.asarray(t, jnp.float32), target_stats)
    run = _statistics_inversion_runner(stats_fn, int(steps), float(lr), float(tv_weight), context is not None)
    image, _ = run(0.5 * jax.random.normal(key, tuple(image_shape), jnp.float32), target_stats, context)
    return np.asarray(image)


@functools.lru_cache(maxsize=16)
def _statistics_inversion_runner(stats_fn, steps, lr, tv_weight, with_context=False):
    """One jitted attack per (statistics function, settings): every victim of an audit reuses it."""
    opt = optax.adam(lr)

    def loss(z, target, context):
        x = jax.nn.sigmoid(z)
        stats = stats_fn(x, context) if with_context else stats_fn(x)
        return _relative_sq_error(stats, target) + tv_weight * total_variation(x)

    @jax.jit
    def run(z0, target, context):
        def step(carry, _):
            z, s = carry
            value, g = jax.value_and_grad(loss)(z, target, context)
            updates, s = opt.update(g, s, z)
            return (optax.apply_updates(z, updates), s), value

        (z, _), values = jax.lax.scan(step, (z0, opt.init(z0)), None, length=steps)
        return jax.nn.sigmoid(z), values

    return run


# --------------------------------------------------------------------------------------------------------
# (a, gen) Inverting the gen method's shared imaging-model parameters.
# --------------------------------------------------------------------------------------------------------
# Differentiability of `parametric.fit_style` with respect to the image (`fit_style_gradients` measures it on
# real tiles; the audit notes report it per lab): least squares, segment means and DFT matmuls are smooth, so
# tone_mean, profile, shading and noise_psd have finite, non-zero gradients. The others are not safe:
# - blur is picked by argmin among BLUR_CANDIDATES: piecewise constant, gradient zero;
# - tone_sqrt and noise_basis come from `jnp.linalg.eigh`, whose gradient has 1 / (lambda_i - lambda_j) (and
#   tone_sqrt sqrt'(0) = inf): non-finite when eigenvalues coincide or vanish, as for the rank-1 colour
#   covariance of a grey lab's tones; an eigenvector's sign is arbitrary anyway;
# - contrast_std = sqrt(max(., 0)) has gradient zero where the noise correction clips it (inf at 0).
# In trials, an attack matching these raw fields went NaN within 50 steps on a brightfield tile. The attacker
# therefore matches an equivalent, smooth form (`gen_invariants` of the message vs `gen_attack_statistics` of
# the candidate): the tone covariance S S^T instead of its square root S, contrast_std^2, and the residual
# power spectra on the victim's own shared colour axes (no eigh, no sign ambiguity); blur is left out.
GEN_MATCHED_FIELDS = ("tone_mean", "tone_cov", "profile", "contrast_var", "shading", "noise_psd")


def gen_message(image: jax.Array, label: jax.Array, profile_px: int = 6, noise_min_px: int = 2) -> dict:
    """What a `gen` client sends for one shared tile (style/techniques/gen.py): `fit_style` of the tile with
    its own label map, as a dict of the ImagingStyle fields."""
    from fedtransfer_jax.style import parametric

    return parametric.fit_style(image, label, profile_px=profile_px, noise_min_px=noise_min_px)._asdict()


def gen_invariants(message: dict) -> dict:
    """The smooth form of a gen message that the attack matches (see the comment above)."""
    s = message["tone_sqrt"]
    return {
        "tone_mean": message["tone_mean"],
        "tone_cov": s @ jnp.swapaxes(s, -1, -2),
        "profile": message["profile"],
        "contrast_var": jnp.square(message["contrast_std"]),
        "shading": message["shading"],
        "noise_psd": message["noise_psd"],
    }


def gen_attack_context(label_guess: np.ndarray, noise_basis: jax.Array, profile_px: int) -> dict:
    """What the gen attack's statistics depend on besides the image: the geometry of the label map the
    attacker guesses (grain ids, distance bins: computed once, not at every step) and the shared colour
    axes of the message it attacks."""
    from fedtransfer_jax.style.labelmaps import distance_bins, grain_ids

    y = jnp.asarray(label_guess)
    return {
        "gid": grain_ids(y),
        "db": distance_bins(y, int(profile_px)),
        "noise_basis": jnp.asarray(noise_basis, jnp.float32),
    }


def gen_attack_statistics(
    image: jax.Array, context: dict, *, profile_px: int = 6, noise_min_px: int = 2
) -> dict:
    """`gen_invariants(gen_message(image, label))` computed the way `parametric.fit_style` does, but smooth in
    the image: the label geometry comes from `context` (`gen_attack_context`) and the residual is projected
    on `context['noise_basis']` instead of its own eigenvectors. Equal to the message's invariants when that
    basis is the image's own (tests/test_audit.py checks it, so a change of fit_style shows up here)."""
    from fedtransfer_jax.style import parametric as pm

    h, w, _ = image.shape
    n = h * w
    image = image.astype(jnp.float32)
    gid, db = context["gid"], context["db"]
    tones, area, tb, prof, coef, _ = pm._fit_tones_profile(
        image, gid, db, profile_px, jnp.asarray(pm.BLUR_CANDIDATES, jnp.float32)
    )
    mu, tone_cov = pm.tone_distribution(tones, area)
    x, d = image.reshape(n, 3), db.reshape(n)
    rc, n_far = pm.far_residual(x, d, tb, prof, coef, (h, w), noise_min_px)
    psd = pm.binned_noise_psd(rc, context["noise_basis"], n_far, (h, w))
    p0 = prof[0]
    noise_var = jnp.sum(jnp.square(rc)) / n_far / 3.0  # trace(noise_cov) / 3, basis-free
    amp_var = pm.boundary_contrast_var(x, d, tb, p0, noise_var)
    contrast_var = jnp.where(p0 @ p0 > 1e-5, jnp.clip(amp_var, 0.0, 1.5**2), 0.0)
    return {
        "tone_mean": mu,
        "tone_cov": tone_cov,
        "profile": prof[:profile_px],
        "contrast_var": contrast_var,
        "shading": coef,
        "noise_psd": psd,
    }


@functools.lru_cache(maxsize=8)
def _gen_attack_fn(profile_px: int, noise_min_px: int):
    """One statistics function object per setting, so that `invert_statistics` compiles the attack once."""
    return functools.partial(gen_attack_statistics, profile_px=profile_px, noise_min_px=noise_min_px)


@functools.lru_cache(maxsize=8)
def _jitted_gen_message(profile_px: int, noise_min_px: int):
    return jax.jit(functools.partial(gen_message, profile_px=profile_px, noise_min_px=noise_min_px))


def fit_style_gradients(
    image: np.ndarray,
    label: np.ndarray,
    key: jax.Array,
    *,
    profile_px: int = 6,
    noise_min_px: int = 2,
    fields: Sequence[str] | None = None,
) -> dict[str, str]:
    """{field: 'finite, non-zero' | 'zero' | 'non-finite'}: the gradient with respect to the image of a random
    projection of each field (default: all) of the gen message of (image, label)."""
    fields = tuple(sorted(fields or _gen_fields()))
    grads = _fit_style_gradient_fn(int(profile_px), int(noise_min_px), fields)
    out = {}
    for f, g in grads(jnp.asarray(image, jnp.float32), jnp.asarray(label), key).items():
        g = np.asarray(g)
        if not np.isfinite(g).all():
            out[f] = "non-finite"
        else:
            out[f] = "finite, non-zero" if np.any(g) else "zero"
    return out


def _gen_fields() -> tuple[str, ...]:
    from fedtransfer_jax.style.parametric import ImagingStyle

    return ImagingStyle._fields


@functools.lru_cache(maxsize=8)
def _fit_style_gradient_fn(profile_px: int, noise_min_px: int, fields: tuple[str, ...]):
    """One field at a time: a zero cotangent on an eigh output still gives inf * 0 = NaN, so the fields must
    not share one vjp."""

    def grads(x, y, k):
        out = {}
        for i, f in enumerate(fields):

            def projection(im, f=f, i=i):
                v = gen_message(im, y, profile_px, noise_min_px)[f]
                return jnp.vdot(jax.random.normal(jax.random.fold_in(k, i), v.shape, v.dtype), v)

            out[f] = jax.grad(projection)(x)
        return out

    return jax.jit(grads)


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
# (c) Property inference: a tile's grain statistics from its shared message.
# --------------------------------------------------------------------------------------------------------
PROPERTY_TARGETS = ("n_grains", "mean_grain_area", "boundary_fraction")


def grain_structure(label: np.ndarray) -> dict[str, float]:
    """A tile's microstructure statistics from its boundary label (nonzero = boundary): the number of grains
    (4-connected components of non-boundary pixels, as `labelmaps.grain_ids` defines grains), their mean
    area in px and the boundary pixel fraction. Cut-off grains at the tile border count as grains."""
    interior = np.asarray(label) == 0
    _, n = ndimage.label(interior)
    return {
        "n_grains": float(n),
        "mean_grain_area": float(interior.sum() / max(n, 1)),
        "boundary_fraction": float(1.0 - interior.mean()),
    }


def flatten_messages(messages: PyTree) -> np.ndarray:
    """[N, D] features from a pytree of per-tile arrays with a leading tile axis (leaves in pytree order)."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(messages)]
    return np.concatenate([x.reshape(len(x), -1) for x in leaves], axis=1)


def loo_ridge_operator(features: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """M [N, N] with (M @ y)[i] the leave-one-out ridge prediction of y[i] from features[i]: the model is fit
    on the other N - 1 tiles only (their feature means and stds standardise, their target mean is the
    intercept; constant features dropped), in the dual (kernel) form since D >> N. Linear in y, so a
    permutation test reuses it.

    The penalty is `alpha` * the number of non-constant features (= trace of the standardised Gram matrix /
    (N - 1)): scale-free, so messages of different lengths (Fourier ~150, AdaIN ~220, gen ~360 floats) get the
    same relative shrinkage; alpha = 1 shrinks the directions that explain less than ~1 / N of the feature
    variance, a fixed a-priori choice (no tuning on the targets)."""
    x = np.asarray(features, np.float64)
    n = len(x)
    m = np.zeros((n, n))
    for i in range(n):
        train = np.delete(np.arange(n), i)
        mu, sd = x[train].mean(0), x[train].std(0)
        keep = sd > 1e-9 * np.maximum(1.0, np.abs(mu))
        z = (x[train][:, keep] - mu[keep]) / sd[keep]
        zi = (x[i, keep] - mu[keep]) / sd[keep]
        a = np.linalg.solve(z @ z.T + alpha * max(int(keep.sum()), 1) * np.eye(n - 1), z @ zi)
        m[i, train] = 1.0 / (n - 1) + a - a.sum() / (n - 1)  # mean(y_train) + a . (y_train - mean)
    return m


def loo_r2(operator: np.ndarray, y: np.ndarray) -> float:
    """1 - SSE(model) / SSE(leave-one-out mean): > 0 when the features predict y better than the lab's mean
    does (0.0 for a constant y)."""
    y = np.asarray(y, np.float64)
    n = len(y)
    sse_base = float(np.sum(np.square(y - (y.sum() - y) / (n - 1))))
    if sse_base <= 1e-12 * max(1.0, float(np.sum(y * y))):
        return 0.0
    return float(1.0 - np.sum(np.square(y - operator @ y)) / sse_base)


def property_inference(
    features: np.ndarray,
    targets: dict[str, np.ndarray],
    *,
    alpha: float = 1.0,
    permutations: int = 200,
    seed: int = 0,
    level: float = 0.05,
) -> dict[str, dict]:
    """Can a tile's message predict its targets better than the lab mean? Leave-one-out ridge R^2
    (`loo_ridge_operator`, `loo_r2`) and a permutation test: the targets are shuffled over the tiles
    `permutations` times (the same shuffles for every target and, with the same `seed`, every method) and
    p = (1 + #{R^2_shuffled >= R^2}) / (1 + permutations). `leaks` = R^2 > 0 and p < `level`.

    Returns {target: {'r2', 'p_value', 'n', 'leaks'}}."""
    op = loo_ridge_operator(features, alpha)
    n = len(op)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n) for _ in range(int(permutations))]
    out = {}
    for name, y in targets.items():
        y = np.asarray(y, np.float64)
        r2 = loo_r2(op, y)
        null = np.array([loo_r2(op, y[p]) for p in perms])
        p_value = float((1 + np.sum(null >= r2)) / (1 + len(perms)))
        out[name] = {"r2": r2, "p_value": p_value, "n": n, "leaks": bool(r2 > 0 and p_value < level)}
    return out


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
        shared = jax.jit(fn)  # what the client computed and sent (one compilation, not one per op)

        def attack(source: int, victim: int, vi: int) -> np.ndarray:
            k = jax.random.fold_in(jax.random.fold_in(key, mi), vi)
            return invert_statistics(
                fn, shared(jnp.asarray(images[source])), images.shape[1:], k, steps, lr, tv_weight
            )

        score_kwargs = dict(
            tolerance=tolerance, boundary_fn=boundary_fn, beta=beta if name == "fourier" else None,
            twin=name == "fourier",
        )
        found, ctl, recovered[name] = _score_victims(images, labels, victims, attack, score_kwargs, control)
        scores[name] = found
        if control:
            scores[name + "/control"] = ctl
    return scores, recovered


def _score_victims(
    images: np.ndarray,
    labels: np.ndarray,
    victims: Sequence[int],
    attack: Callable[[int, int, int], np.ndarray],
    score_kwargs: dict,
    control: bool,
) -> tuple[dict, dict | None, np.ndarray]:
    """The protocol every message-inversion attack is scored by. For victim v (index vi): `attack(v, v, vi)`
    inverts v's own message, scored against v with the lab's other images as the baseline; the control
    `attack(other, v, vi)` inverts the message of another image of the lab (`others[vi % len(others)]`),
    scored against v with the remaining images as the baseline: what the lab's style gives without v's
    message. Returns (summary, control summary or None, recovered images [V, H, W, 3])."""
    rows, control_rows, recs = [], [], []
    for vi, v in enumerate(victims):
        v = int(v)
        others = np.array([i for i in range(len(images)) if i != v])
        kwargs = dict(boundary_fraction=float((labels[others] > 0).mean()), **score_kwargs)
        rec = attack(v, v, vi)
        rows.append(score_reconstruction(rec, images[v], labels[v], images[others], **kwargs))
        recs.append(rec)
        if control:
            other = int(others[vi % len(others)])
            ctl = attack(other, v, vi)
            rest = np.array([i for i in others if i != other])
            control_rows.append(score_reconstruction(ctl, images[v], labels[v], images[rest], **kwargs))
    return summarize(rows), (summarize(control_rows) if control else None), np.stack(recs)


def gen_inversion_audit(
    images: np.ndarray,
    labels: np.ndarray,
    victims: Sequence[int],
    key: jax.Array,
    *,
    profile_px: int = 6,
    noise_min_px: int = 2,
    steps: int = 300,
    lr: float = 0.05,
    tv_weight: float = 0.05,
    tolerance: float = 2.0,
    boundary_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    control: bool = True,
) -> tuple[dict, dict]:
    """Attack (a) on one client's gen messages. The message is fitted with the tile's own label map, which the
    server does not have: the attacker uses its best knowledge, the label map of *another* tile of the lab
    (the same knowledge as the lab baseline), and optimises an image whose fit with that label matches the
    victim's message (`gen_attack_statistics`). Scored against the victim's image and label like the other
    style attacks; `control` = the same attack (same guessed label) on the message of a third tile of the
    lab: what the lab's style gives without the victim's message. Needs >= 3 images (victim, label guess,
    control).

    Returns (scores {'gen': summarize(...), 'gen/control': ...}, recovered {'gen': [V, H, W, 3]}).
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    if len(images) < 3:
        raise ValueError(f"gen inversion needs >= 3 images (victim, label guess, control), got {len(images)}")
    stats_fn = _gen_attack_fn(int(profile_px), int(noise_min_px))
    message = _jitted_gen_message(int(profile_px), int(noise_min_px))

    def attack(source: int, victim: int, vi: int) -> np.ndarray:
        others = [i for i in range(len(images)) if i != victim]
        guess = others[(vi + 1) % len(others)]  # the attacker's label guess: neither victim nor control
        msg = message(jnp.asarray(images[source]), jnp.asarray(labels[source]))
        context = gen_attack_context(labels[guess], msg["noise_basis"], profile_px)
        return invert_statistics(
            stats_fn, gen_invariants(msg), images.shape[1:], jax.random.fold_in(key, vi), steps, lr, tv_weight,
            context=context,
        )

    score_kwargs = dict(tolerance=tolerance, boundary_fn=boundary_fn)
    found, ctl, recs = _score_victims(images, labels, victims, attack, score_kwargs, control)
    scores = {"gen": found}
    if control:
        scores["gen/control"] = ctl
    return scores, {"gen": recs}


def message_features(
    images: np.ndarray, labels: np.ndarray, message_fns: dict[str, Callable[[jax.Array, jax.Array], PyTree]]
) -> dict[str, np.ndarray]:
    """{method: [N, D]} the flattened message every tile would send with each method (`fn(image, label)`)."""
    x, y = jnp.asarray(images, jnp.float32), jnp.asarray(labels)
    return {name: flatten_messages(jax.jit(jax.vmap(fn))(x, y)) for name, fn in sorted(message_fns.items())}


def property_inference_audit(
    images: np.ndarray,
    labels: np.ndarray,
    message_fns: dict[str, Callable[[jax.Array, jax.Array], PyTree]],
    *,
    alpha: float = 1.0,
    permutations: int = 200,
    seed: int = 0,
) -> dict:
    """Attack (c) on one lab's tiles: for every method, `property_inference` of every `grain_structure`
    target from the tiles' messages (the same shuffles for every method, so the methods are comparable).

    Returns {'tiles': N, 'targets': {target: {'mean', 'std'}}, 'floats': {method: D},
    'methods': {method: {target: {'r2', 'p_value', 'n', 'leaks'}}}}."""
    structure = [grain_structure(y) for y in np.asarray(labels)]
    targets = {t: np.array([s[t] for s in structure]) for t in PROPERTY_TARGETS}
    features = message_features(images, labels, message_fns)
    return {
        "tiles": len(structure),
        "targets": {t: {"mean": float(v.mean()), "std": float(v.std())} for t, v in targets.items()},
        "floats": {m: int(f.shape[1]) for m, f in features.items()},
        "methods": {
            m: property_inference(f, targets, alpha=alpha, permutations=permutations, seed=seed)
            for m, f in features.items()
        },
    }


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
    "style_message_gen": (
        "per shared tile, the imaging model fitted to the tile *with its own label map* "
        "(style.parametric.fit_style, a few hundred floats): grain-tone mean colour and covariance square "
        "root, tone blur, the signed boundary profile vs distance to the labelled boundary, along-boundary "
        "contrast variation, shading coefficients (x, y, x^2, xy, y^2), the residual's colour axes and their "
        "binned power spectra measured >= noise_min_px from a boundary; no image-shaped array, but every "
        "field is measured relative to the tile's label map"
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


def _style_attacks(report: dict) -> dict[str, dict]:
    """{client: {method: summary}}: the statistics attacks of `style_inversion` (AdaIN, Fourier) and of
    `gen_inversion`, side by side."""
    out: dict[str, dict] = {}
    for key in ("style_inversion", "gen_inversion"):
        for client, methods in report.get(key, {}).items():
            out.setdefault(client, {}).update(methods)
    return out


def measured_leaks(report: dict) -> dict[str, list[str]]:
    """{attack / setting: ['client: scores', ...]} from the audit's score tables."""
    out: dict[str, list[str]] = {}
    for client, methods in _style_attacks(report).items():
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
    for lab, r in report.get("property_inference", {}).items():
        for method, targets in r["methods"].items():
            leaked = [t for t, v in targets.items() if v["leaks"]]
            out.setdefault(f"property inference ({method} message)", []).extend(
                [f"{lab}: {'/'.join(leaked)}"] if leaked else []
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


def _property_inference_markdown(results: dict, permutations: int | None = None) -> list[str]:
    methods = sorted({m for r in results.values() for m in r["methods"]})
    first = next(iter(results.values()))
    shuffles = ""
    if permutations:
        shuffles = f", {permutations} times: the smallest possible p is {1 / (permutations + 1):.3g}"
    floats = ", ".join(f"{m} {first['floats'][m]}" for m in methods)
    lines = [
        "",
        "## (c) Property inference: a tile's grain statistics from its message",
        "",
        f"Per lab, {first['tiles']} tiles: leave-one-out ridge regression from one tile's standardised "
        "message to its grain statistics vs the leave-one-out lab mean (what knowing the lab gives). R^2 = "
        "1 - SSE(message) / SSE(lab mean), > 0: the message tells the server more about that tile's "
        "microstructure than the lab does; p: permutation test (targets shuffled over the lab's "
        f"tiles{shuffles}); "
        f"**leaks** = R^2 > 0 and p < 0.05. Message floats: {floats}.",
        "",
        "| lab | target (mean ± std) | " + " | ".join(f"{m} R^2 (p)" for m in methods) + " | leaks in |",
        "|" + "---|" * (len(methods) + 3),
    ]
    for lab, r in results.items():
        for t, stats in r["targets"].items():
            cells = []
            for m in methods:
                v = r["methods"][m][t]
                cell = f"{v['r2']:.3f} ({v['p_value']:.3g})"  # 3 significant digits: 0.0498 is not 0.050
                cells.append(f"**{cell}**" if v["leaks"] else cell)
            leaks = [m for m in methods if r["methods"][m][t]["leaks"]]
            lines.append(
                f"| {lab} | {t} ({stats['mean']:.3g} ± {stats['std']:.2g}) | "
                + " | ".join(cells)
                + f" | {', '.join(leaks) or '-'} |"
            )
    return lines


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
    if report.get("style_inversion") or report.get("gen_inversion"):
        lines += ["", "## (a) Inverting shared style statistics", "", head, sep]
        for client, methods in _style_attacks(report).items():
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
    if report.get("property_inference"):
        lines += _property_inference_markdown(
            report["property_inference"], report.get("settings", {}).get("pi_permutations")
        )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_report(workdir: str, report: dict) -> None:
    """`workdir/audit.json` and `workdir/audit.md`, each written atomically."""
    from fedtransfer_jax.runtime import io_utils

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


def _lab_tiles(data: dict, lab: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` training tiles of a synthetic lab as its client holds them (images, 0/1 labels). Every
    image has its own generator (seed, lab, index), so asking for more images leaves the first ones
    unchanged."""
    from fedtransfer_jax.data.synthetic import LAB_NAMES, make_lab_examples

    if lab not in LAB_NAMES:
        raise ValueError(f"audit CLI: unknown synthetic lab {lab!r}")
    tile = int(data.get("tile_size", data["image_size"]))
    images, labels, _ = make_lab_examples(
        lab,
        n,
        int(data["image_size"]),
        _lab_seed(int(data["seed"]), lab, "train"),
        boundary_width=int(data.get("boundary_width", 2)),
    )
    # The clients' tiles are stored as 8-bit (tfds) and read back as k / 255: the same here, exactly.
    k = np.clip(np.rint(np.asarray(images[:, :tile, :tile], np.float32) * 255.0), 0, 255)
    return k.astype(np.float32) / np.float32(255.0), (labels[:, :tile, :tile] > 0).astype(np.uint8)


def _check_synthetic(data: dict) -> None:
    if data.get("source", "synthetic") != "synthetic":
        raise ValueError(
            "audit CLI: only data.source='synthetic' workdirs can be regenerated; call the attack "
            "functions with the folder's arrays instead"
        )


def load_workdir_clients(
    config: dict, max_images: int | None = None, only: Sequence[str] = ()
) -> tuple[dict, list[str]]:
    """Every training client's images and labels, regenerated from the config (the simulation's privilege:
    the workdir does not store client data). Synthetic sources only. Returns ({client: (images, labels)},
    notes)."""
    data = config["data"]
    _check_synthetic(data)
    n = (
        int(data["train_per_client"])
        if max_images is None
        else min(int(data["train_per_client"]), max_images)
    )
    tile = int(data.get("tile_size", data["image_size"]))
    out = {lab: _lab_tiles(data, lab, n) for lab in data["clients"] if not only or lab in only}
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


def gen_settings(config: dict) -> tuple[int, int]:
    """(profile_px, noise_min_px) of the gen method as the workdir's clients fitted their messages."""
    from fedtransfer_jax.style.techniques.gen import DEFAULTS

    sc = config.get("style", {})
    return int(sc.get("gen_profile_px", DEFAULTS["gen_profile_px"])), int(
        sc.get("gen_noise_min_px", DEFAULTS["gen_noise_min_px"])
    )


def message_fns(stats_fns: dict[str, StatsFn], profile_px: int, noise_min_px: int) -> dict:
    """{method: fn(image, label) -> message pytree}: what a client sends for one tile with each style
    method (AdaIN and Fourier statistics from `style_stats_fns`, which ignore the label; the gen fit, which
    uses it)."""
    return {
        "adain": lambda x, y: stats_fns["adain"](x),
        "fourier": lambda x, y: stats_fns["fourier"](x),
        "gen": functools.partial(gen_message, profile_px=profile_px, noise_min_px=noise_min_px),
    }


def _gradient_notes(gradients: dict[str, dict[str, str]]) -> list[str]:
    """One line on which gen message fields are differentiable with respect to the image, from the check."""
    fields = sorted({f for g in gradients.values() for f in g})
    smooth = [f for f in fields if all(g.get(f) == "finite, non-zero" for g in gradients.values())]
    rough = [
        f"{lab}: " + ", ".join(f"{f} {s}" for f, s in sorted(g.items()) if s != "finite, non-zero")
        for lab, g in gradients.items()
        if any(s != "finite, non-zero" for s in g.values())
    ]
    return [
        "fit_style gradient with respect to the image (a random projection of each gen message field, "
        f"first victim of each lab): finite and non-zero for {', '.join(smooth) or 'no field'} in every lab; "
        f"otherwise {'; '.join(rough) or 'none'} (blur: an argmin among candidates; tone_sqrt, noise_basis: "
        "eigh, non-finite for coinciding or vanishing eigenvalues, e.g. a grey lab's rank-1 colour "
        "covariance; contrast_std: zero where clipped). The gen attack therefore matches the smooth "
        f"equivalent ({', '.join(GEN_MATCHED_FIELDS)}) and leaves blur out."
    ]


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

    profile_px, noise_min_px = gen_settings(config)
    report["gen_inversion"], report["fit_style_gradients"] = {}, {}
    for name in names:
        images, labels = clients[name]
        victims = shared_indices(len(images), k_shared, seed, ids[name])[: args.victims]
        gen_key = jax.random.fold_in(jax.random.fold_in(key, ids[name]), 0x6E)
        report["gen_inversion"][name], _ = gen_inversion_audit(
            images,
            labels,
            victims,
            gen_key,
            profile_px=profile_px,
            noise_min_px=noise_min_px,
            steps=args.style_steps,
        )
        report["fit_style_gradients"][name] = fit_style_gradients(
            images[victims[0]], labels[victims[0]], gen_key, profile_px=profile_px, noise_min_px=noise_min_px
        )
    notes.append(
        "gen inversion: a gen message is fitted with the tile's own label map, which the server does not "
        "have; the attacker fits its candidate image with the label map of another tile of the same lab "
        "(what the lab baseline assumes it knows) and matches the victim's message; 'gen/control' is the "
        "same attack, same guessed label, on a third tile's message. Boundary F1 is scored against the "
        "victim's true label."
    )
    notes += _gradient_notes(report["fit_style_gradients"])

    if args.pi_tiles > 0:
        data = config["data"]
        n_train = int(data["train_per_client"])
        n_pi = max(int(args.pi_tiles), n_train)
        fns_by_tile = message_fns(fns, profile_px, noise_min_px)
        report["property_inference"] = {}
        for name in names:
            images, labels = _lab_tiles(data, name, n_pi)
            report["property_inference"][name] = property_inference_audit(
                images, labels, fns_by_tile, alpha=args.pi_alpha, permutations=args.pi_permutations, seed=seed
            )
        tests = len(names) * len(fns_by_tile) * len(PROPERTY_TARGETS)
        notes.append(
            f"property inference: the first {n_pi} training tiles of each lab, i.e. the {n_train} its "
            f"client holds (of which it shares the styles of {min(k_shared, n_train)}) plus {n_pi - n_train} "
            "more from the same generator and per-image seeds, because a handful of tiles cannot carry a "
            "leave-one-out regression with a permutation test; each tile's message is what its client would "
            f"send for it (gen: fitted with the tile's own label). Ridge penalty {args.pi_alpha:g} x the "
            f"number of features, {args.pi_permutations} shuffles. {tests} tests at p < 0.05: about "
            f"{0.05 * tests:.1f} false 'leaks' are expected by chance even if nothing leaks; a target that "
            "leaks in several labs, with small p, is the stronger evidence."
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
    p.add_argument(
        "--pi_tiles",
        type=int,
        default=64,
        help="tiles per lab for property inference (regenerated beyond the clients' own; 0: skip it)",
    )
    p.add_argument(
        "--pi_permutations", type=int, default=200, help="property inference: permutation-test shuffles"
    )
    p.add_argument(
        "--pi_alpha",
        type=float,
        default=1.0,
        help="property inference: ridge penalty in units of the number of (standardised) features",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_workdir_audit(args.workdir, args)
    write_report(args.workdir, report)
    print(report_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
