"""Honest style-transfer checks: does a restyled tile look like the target lab, and does it keep its grains?

Three measures, all JSON-able, computed for any restyler ``(images, labels, target_lab, key) -> images``:

1. **Fidelity** (``fidelity_of_sets``): Frechet distance between the descriptors (``style.features``)
   of tiles restyled into lab k and of real held-out tiles of lab k, reported as the ratio
   ``d(restyled -> k, real k) / min_{j != k} d(real j, real k)``: < 1 means the restyled tiles are closer
   to lab k than any other real lab is. It is computed separately for the descriptor's two groups --
   ``texture`` (brightness/contrast-normalised tiles: structure, polarity, sharpness, noise) and
   ``global`` (brightness, contrast, colour) -- and the headline ``ratio`` is the larger of the two, so
   that neither matching global statistics alone nor texture alone passes. ``heldout_ratio`` (a second
   set of real k tiles in place of the restyled ones) is the floor the sample size allows. Descriptors
   are z-scored with the pooled real reference and projected onto its leading principal axes (``dims``),
   so every distance lives in one fixed space and the covariances are estimable from a few dozen tiles.
   Next to it, two diagnostics: **polarity** (sign of mean boundary minus mean interior luminance: does
   "as darkfield" have bright boundaries?) and a **domain classifier** that sees brightness/contrast-
   normalised tiles and is trained with gamma / contrast / brightness jitter, so that matching global
   brightness alone cannot pass.
2. **Structure** (``structure``): boundary F1 and ARI of a centrally trained reference segmenter on the
   restyled tiles against the *unchanged* source labels, per (source, target) pair, vs the same tiles
   before restyling. A restyler that moves or erases boundaries, or produces a style no lab has, loses F1.
3. **Style grid** (``style_grid_figure``): every source lab's tile in every target style, with a row of
   real target-lab tiles, for a person to judge.

The expensive, method-independent parts (descriptor reference, classifier, segmenter) are prepared once
(``prepare``) and reused for every method. Every key derives from one seed via ``jax.random.fold_in``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

from fedtransfer_jax.metrics import segmentation_metrics
from fedtransfer_jax.models.conv import Conv, default_impl
from fedtransfer_jax.models.losses import segmentation_loss
from fedtransfer_jax.models.unet import UNet
from fedtransfer_jax.style.features import GROUPS, Descriptor, describe, make_descriptor, normalise
from fedtransfer_jax.style.labelmaps import distance_bins

Array = jax.Array
LabData = Mapping[str, tuple[np.ndarray, np.ndarray]]  # lab -> (images [N,H,W,3] f32, labels [N,H,W] u8)
Restyler = Callable[[np.ndarray, np.ndarray, str, Array], np.ndarray]

_TAG_CLASSIFIER, _TAG_SEGMENTER, _TAG_RESTYLE, _TAG_GRID = 0xC1A55, 0x5E6, 0x2E5, 0x6217
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
POLARITY_MIN_CONTRAST = 0.02  # |boundary - interior| luminance below which a lab has no polarity
# A restyled set "looks like lab k" when it is at least twice closer to real k than any other real lab is
# (both descriptor groups). On the dev seeds: held-out real tiles 0.00-0.03, the true renderer of the
# target lab applied to the source geometry 0.02-0.15, brightness-matched foreign tiles >= 1.0.
GOAL_FIDELITY_RATIO = 0.5


# ============================================================================================ helpers
def in_batches(fn: Callable, *arrays: np.ndarray, batch: int = 16) -> np.ndarray:
    """``fn`` over the leading axis in zero-padded batches of one size (one compilation for any N)."""
    n = len(arrays[0])
    out = []
    for s in range(0, n, batch):
        chunk = [np.asarray(a[s : s + batch]) for a in arrays]
        m = len(chunk[0])
        if m < batch:
            chunk = [np.concatenate([a, np.zeros((batch - m,) + a.shape[1:], a.dtype)]) for a in chunk]
        out.append(np.asarray(fn(*[jnp.asarray(a) for a in chunk]))[:m])
    return np.concatenate(out)


def _split(images: np.ndarray, labels: np.ndarray) -> tuple[tuple, tuple]:
    """Even / odd split of a lab's held-out tiles: (reference half, query half)."""
    return (images[0::2], labels[0::2]), (images[1::2], labels[1::2])


# ============================================================================================ fidelity
def frechet_distance(a: np.ndarray, b: np.ndarray, ridge: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a [N, D]`` and ``b [M, D]``:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` (float64; ``ridge`` keeps sqrtm stable)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: need [N, D] and [M, D], got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance: need >= 2 samples per set")
    eye = ridge * np.eye(a.shape[1])
    sa, sb = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    sa, sb = np.atleast_2d(sa), np.atleast_2d(sb)
    cross = scipy.linalg.sqrtm(sa @ sb)
    diff = a.mean(0) - b.mean(0)
    return float(max(diff @ diff + np.trace(sa + sb - 2.0 * np.real(cross)), 0.0))


class FidelitySpace(NamedTuple):
    """Fixed descriptor space: z-scoring and principal axes of the pooled real reference tiles."""

    mean: np.ndarray
    std: np.ndarray
    axes: np.ndarray  # [D, dims]


def fit_space(feats: np.ndarray, dims: int) -> FidelitySpace:
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    return FidelitySpace(mean, std, vt[: min(dims, vt.shape[0])].T)


def project(space: FidelitySpace, feats: np.ndarray) -> np.ndarray:
    return ((feats - space.mean) / space.std) @ space.axes


def boundary_contrast(images: np.ndarray, labels: np.ndarray, interior_px: int = 3) -> np.ndarray:
    """Per tile: mean luminance on labelled boundary pixels minus mean luminance of pixels >= interior_px
    from any boundary. > 0: bright boundaries (dark field), < 0: dark grooves (bright field)."""
    luma = np.asarray(images, np.float32) @ _LUMA
    dist = np.asarray(jax.vmap(lambda l: distance_bins(l, interior_px))(jnp.asarray(labels)))
    on, far = dist == 0, dist >= interior_px
    mean = lambda m: np.sum(luma * m, axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1)
    return mean(on) - mean(far)


def border_ratio(images: np.ndarray, frame_px: int = 2) -> np.ndarray:
    """Per tile: high-frequency energy (|x - 3x3 box mean|, reflect borders) and colour saturation in the
    outer ``frame_px`` frame over the same in the interior. ~1 for real tiles; tile-border seams (zero
    padding in a conv net) push it up."""
    x = np.asarray(images, np.float32)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    box = sum(p[:, i : i + x.shape[1], j : j + x.shape[2]] for i in range(3) for j in range(3)) / 9.0
    energy = np.abs(x - box).mean(-1) + (x.max(-1) - x.min(-1))
    frame = np.zeros(x.shape[1:3], bool)
    frame[:frame_px], frame[-frame_px:], frame[:, :frame_px], frame[:, -frame_px:] = True, True, True, True
    return energy[:, frame].mean(-1) / np.maximum(energy[:, ~frame].mean(-1), 1e-6)


# ============================================================================================ classifier
class DomainClassifier(nn.Module):
    """Tiny CNN (3 conv levels, global mean + std pooling) on per-tile normalised images: which lab's
    *texture* (polarity, sharpness, noise, colour structure) does a tile have?"""

    num_classes: int
    features: Sequence[int] = (16, 32, 32)

    @nn.compact
    def __call__(self, images: Array) -> Array:
        x = normalise(images.astype(jnp.float32))  # blind to global brightness and contrast
        for i, width in enumerate(self.features):
            if i > 0:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(Conv(width, 3, impl=default_impl())(x))
        pooled = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.std(x, axis=(1, 2))], axis=-1)
        return nn.Dense(self.num_classes)(pooled)


def photometric_jitter(images: Array, key: Array, strength: float = 1.0) -> Array:
    """Random flips / transposes and per-tile brightness (+-0.15), contrast (x0.6-1.5 around the tile
    mean) and gamma (0.6-1.6) jitter: a classifier trained with it cannot key on global brightness."""
    b = images.shape[0]
    ks = jax.random.split(key, 5)
    x = jnp.where(jax.random.bernoulli(ks[0], 0.5, (b, 1, 1, 1)), images[:, :, ::-1], images)
    if x.shape[1] == x.shape[2]:
        x = jnp.where(jax.random.bernoulli(ks[1], 0.5, (b, 1, 1, 1)), jnp.swapaxes(x, 1, 2), x)
    u = lambda k, lo, hi: jax.random.uniform(k, (b, 1, 1, 1), minval=lo, maxval=hi)
    gamma = jnp.exp(strength * u(ks[2], np.log(0.6), np.log(1.6)))
    x = jnp.clip(x, 1e-4, 1.0) ** gamma
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    x = m + (x - m) * jnp.exp(strength * u(ks[3], np.log(0.6), np.log(1.5)))
    return jnp.clip(x + strength * u(ks[4], -0.15, 0.15), 0.0, 1.0)


def _adam_fit(params: Any, loss_fn: Callable, batch_at: Callable, steps: int, lr: float) -> Any:
    """``steps`` Adam steps on ``loss_fn(params, x, y)`` with step i's batch ``batch_at(i)``, in one jitted
    scan (the checks' judges: the domain classifier and the reference segmenter)."""
    opt = optax.adam(lr)

    @jax.jit
    def train(p):
        def step(carry, i):
            p, s = carry
            g = jax.grad(loss_fn)(p, *batch_at(i))
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), jnp.arange(steps))[0][0]

    return train(params)


def train_classifier(
    images: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    key: Array,
    *,
    steps: int = 400,
    batch: int = 32,
    lr: float = 3e-3,
    jitter: float = 1.0,
) -> Callable[[np.ndarray], np.ndarray]:
    """Adam on real tiles with ``photometric_jitter``; returns ``images -> predicted class [N]``."""
    model = DomainClassifier(num_classes)
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, jnp.zeros((1,) + images.shape[1:], jnp.float32))["params"]
    x_all, y_all = jnp.asarray(images, jnp.float32), jnp.asarray(classes, jnp.int32)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()

    def batch_at(i):
        k_idx, k_aug = jax.random.split(jax.random.fold_in(k_train, i))
        idx = jax.random.randint(k_idx, (batch,), 0, x_all.shape[0])
        return photometric_jitter(x_all[idx], k_aug, jitter), y_all[idx]

    params = _adam_fit(params, loss_fn, batch_at, steps, lr)
    fn = jax.jit(lambda x: jnp.argmax(model.apply({"params": params}, x), -1))
    return lambda x: in_batches(fn, np.asarray(x, np.float32), batch=32)


# ============================================================================================ segmenter
def train_segmenter(
    images: np.ndarray,
    labels: np.ndarray,
    key: Array,
    *,
    steps: int = 600,
    batch: int = 8,
    lr: float = 2e-3,
    features: Sequence[int] = (16, 32, 64),
) -> Callable[[np.ndarray], np.ndarray]:
    """Centrally trained reference U-Net on pooled real tiles of every lab (the structure check's judge);
    returns ``images -> boundary probability [N, H, W]``. Trained with flips only, no photometric jitter:
    it should know the labs' styles, not be invariant to arbitrary ones."""
    model = UNet(features=tuple(features))
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, jnp.zeros((1,) + images.shape[1:], jnp.float32))["params"]
    x_all, y_all = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.uint8)

    def loss_fn(p, x, y):
        return segmentation_loss(model.apply({"params": p}, x), y, jnp.ones(x.shape[0]))[0]

    def batch_at(i):
        k_idx, k_flip = jax.random.split(jax.random.fold_in(k_train, i))
        idx = jax.random.randint(k_idx, (batch,), 0, x_all.shape[0])
        x, y = x_all[idx], y_all[idx]
        flip = jax.random.bernoulli(k_flip, 0.5)
        return jnp.where(flip, x[:, :, ::-1], x), jnp.where(flip, y[:, :, ::-1], y)

    params = _adam_fit(params, loss_fn, batch_at, steps, lr)
    fn = jax.jit(lambda x: jax.nn.softmax(model.apply({"params": params}, x), -1)[..., 1])
    return lambda x: in_batches(fn, np.asarray(x, np.float32), batch=16)


def tile_scores(
    probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5, tolerance: float = 2.0
) -> dict:
    """Per-tile boundary F1 and ARI (``metrics.segmentation_metrics``) of thresholded probabilities."""
    m = [segmentation_metrics(p > threshold, l > 0, tolerance) for p, l in zip(probs, labels)]
    return {"f1": np.array([x["boundary_f1"] for x in m]), "ari": np.array([x["ari"] for x in m])}


# ============================================================================================ context
class CheckContext(NamedTuple):
    """Everything method-independent: the labs' held-out tiles, the descriptor space, the reference
    distances, the classifier and the segmenter (built once by ``prepare``)."""

    labs: tuple  # every real lab available (targets and possible "other labs")
    targets: tuple  # labs that have shared styles (restyling targets)
    reference: dict  # lab -> (images, labels): real reference half
    query: dict  # lab -> (images, labels): real query half (held-out real; restyling sources)
    descriptor: Descriptor
    describe: Callable  # jitted images -> {group: [N, D_g]}
    spaces: dict  # group -> FidelitySpace
    ref_feats: dict  # group -> lab -> projected descriptors of the reference half
    real_distance: dict  # group -> real_distance[j][k] = d(real query j, real reference k)
    polarity: dict  # lab -> median boundary contrast of its real tiles
    classify: Callable | None
    segment: Callable | None
    config: dict


def prepare(
    heldout: LabData,
    targets: Sequence[str],
    seed: int,
    *,
    dims: int = 24,
    classifier_steps: int = 400,
    segmenter_steps: int = 600,
    segmenter_data: LabData | None = None,
) -> CheckContext:
    """Build the method-independent parts of the checks.

    Args:
      heldout: real tiles per lab that no style method saw (split even/odd into reference / query halves).
      targets: the labs that are restyling targets (have styles in the bank); the others only serve as
        "other labs" in the fidelity ratio.
      seed: every key is ``fold_in(PRNGKey(seed), tag)``.
      dims: principal axes of the descriptor space (capped by the number of reference tiles).
      classifier_steps / segmenter_steps: 0 skips the domain classifier / the structure check.
      segmenter_data: tiles to train the reference segmenter on (default: the reference halves).
    """
    labs = tuple(heldout)
    missing = [t for t in targets if t not in heldout]
    if missing:
        raise ValueError(f"checks.prepare: targets {missing} have no held-out tiles")
    desc = make_descriptor()
    feat_fn = jax.jit(lambda x: describe(desc, x))
    halves = {l: _split(*heldout[l]) for l in labs}
    reference = {l: h[0] for l, h in halves.items()}
    query = {l: h[1] for l, h in halves.items()}
    raw_ref = {l: _describe_all(feat_fn, reference[l][0]) for l in labs}
    raw_q = {l: _describe_all(feat_fn, query[l][0]) for l in labs}
    n_min = min(len(reference[l][0]) for l in labs)
    spaces, ref_feats, real_distance = {}, {}, {}
    for g in GROUPS:
        pooled = np.concatenate([raw_ref[l][g] for l in labs])
        spaces[g] = fit_space(pooled, min(dims, max(n_min - 1, 1)))
        ref_feats[g] = {l: project(spaces[g], raw_ref[l][g]) for l in labs}
        q = {l: project(spaces[g], raw_q[l][g]) for l in labs}
        real_distance[g] = {j: {k: frechet_distance(q[j], ref_feats[g][k]) for k in labs} for j in labs}
    polarity = {l: float(np.median(boundary_contrast(*heldout[l]))) for l in labs}

    key = jax.random.PRNGKey(seed)
    classify = None
    if classifier_steps > 0:
        x = np.concatenate([reference[l][0] for l in targets])
        y = np.concatenate([np.full(len(reference[l][0]), i) for i, l in enumerate(targets)])
        classify = train_classifier(
            x, y, len(targets), jax.random.fold_in(key, _TAG_CLASSIFIER), steps=classifier_steps
        )
    segment = None
    if segmenter_steps > 0:
        src = segmenter_data or {l: reference[l] for l in targets}
        segment = train_segmenter(
            np.concatenate([v[0] for v in src.values()]),
            np.concatenate([v[1] for v in src.values()]),
            jax.random.fold_in(key, _TAG_SEGMENTER),
            steps=segmenter_steps,
        )
    return CheckContext(
        labs=labs,
        targets=tuple(targets),
        reference=reference,
        query=query,
        descriptor=desc,
        describe=feat_fn,
        spaces=spaces,
        ref_feats=ref_feats,
        real_distance=real_distance,
        polarity=polarity,
        classify=classify,
        segment=segment,
        config={
            "seed": seed,
            "dims": {g: int(sp.axes.shape[1]) for g, sp in spaces.items()},
            "classifier_steps": classifier_steps,
            "segmenter_steps": segmenter_steps,
            "n_reference": {l: len(reference[l][0]) for l in labs},
            "n_query": {l: len(query[l][0]) for l in labs},
            "groups": list(GROUPS),
        },
    )


def _describe_all(feat_fn: Callable, images: np.ndarray) -> dict:
    """Descriptors of any number of tiles in fixed-size batches: {group: [N, D_g]}."""
    images = np.asarray(images, np.float32)
    parts = []
    for s in range(0, len(images), 16):
        x = images[s : s + 16]
        m = len(x)
        if m < 16:
            x = np.concatenate([x, np.repeat(x[:1], 16 - m, axis=0)])
        parts.append({g: np.asarray(v)[:m] for g, v in feat_fn(jnp.asarray(x)).items()})
    return {g: np.concatenate([p[g] for p in parts]) for g in GROUPS}


def validate_measure(ctx: CheckContext) -> dict:
    """Sanity of the fidelity measure itself, per descriptor group: held-out real k vs real k must be far
    below 1, every other real lab >= 1 by construction; also names each lab's nearest other lab."""
    out = {}
    for k in ctx.labs:
        out[k] = {}
        for g in GROUPS:
            dist = ctx.real_distance[g]
            others = {j: dist[j][k] for j in ctx.labs if j != k}
            nearest = min(others, key=others.get)
            out[k][g] = {
                "heldout_distance": dist[k][k],
                "nearest_other_lab": nearest,
                "nearest_other_distance": others[nearest],
                "heldout_ratio": dist[k][k] / max(others[nearest], 1e-12),
                "other_lab_ratios": {j: d / max(others[nearest], 1e-12) for j, d in others.items()},
            }
    return out


def fidelity_of_sets(ctx: CheckContext, sets: Mapping[str, np.ndarray]) -> dict:
    """``sets[k]``: images claimed to be in lab k's style -> per target k: distance and ratio per
    descriptor group, and the headline ``ratio`` = max over groups."""
    out = {}
    for k, images in sets.items():
        feats = _describe_all(ctx.describe, images)
        entry: dict[str, Any] = {}
        for g in GROUPS:
            dist = ctx.real_distance[g]
            d = frechet_distance(project(ctx.spaces[g], feats[g]), ctx.ref_feats[g][k])
            nearest = min(dist[j][k] for j in ctx.labs if j != k)
            entry[g] = {
                "distance": d,
                "ratio": d / max(nearest, 1e-12),
                "heldout_ratio": dist[k][k] / max(nearest, 1e-12),
            }
        entry["ratio"] = max(entry[g]["ratio"] for g in GROUPS)
        entry["heldout_ratio"] = max(entry[g]["heldout_ratio"] for g in GROUPS)
        entry["meets_goal"] = bool(entry["ratio"] < GOAL_FIDELITY_RATIO)
        out[k] = entry
    return out


# ============================================================================================ one method
def restyle_all(ctx: CheckContext, restyle: Restyler, seed: int, *, per_pair: int = 16) -> dict:
    """Restyle up to ``per_pair`` query tiles of every target lab j into every other target lab k:
    ``{(j, k): (restyled images, source labels, source images)}``."""
    out = {}
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TAG_RESTYLE)
    for s, src in enumerate(ctx.targets):
        x, y = ctx.query[src][0][:per_pair], ctx.query[src][1][:per_pair]
        for t, tgt in enumerate(ctx.targets):
            if t != s:
                out[(src, tgt)] = (
                    np.asarray(restyle(x, y, tgt, jax.random.fold_in(key, s * 1000 + t))),
                    y,
                    x,
                )
    return out


def evaluate(ctx: CheckContext, restyled: Mapping[tuple, tuple]) -> dict:
    """All checks of one method's restyled tiles (from ``restyle_all``): a JSON-able dict."""
    by_target = {k: [v[0] for (j, kk), v in restyled.items() if kk == k] for k in ctx.targets}
    fid = fidelity_of_sets(ctx, {k: np.concatenate(v) for k, v in by_target.items() if v})
    report: dict[str, Any] = {"fidelity": fid}
    report["fidelity_ratio_mean"] = float(np.mean([v["ratio"] for v in fid.values()]))
    report["fidelity_ratio_max"] = float(np.max([v["ratio"] for v in fid.values()]))
    report["fidelity_goal"] = {
        "ratio_below": GOAL_FIDELITY_RATIO,
        "met_for": [k for k, v in fid.items() if v["meets_goal"]],
    }

    pol = {}
    for k in ctx.targets:
        c = np.concatenate([boundary_contrast(v[0], v[1]) for (j, kk), v in restyled.items() if kk == k])
        want = ctx.polarity[k]
        has = abs(want) >= POLARITY_MIN_CONTRAST
        pol[k] = {
            "real_contrast": want,
            "restyled_contrast": float(np.median(c)),
            "agreement": float(np.mean(np.sign(c) == np.sign(want))) if has else None,
        }
    report["polarity"] = pol
    borders = {
        k: float(
            np.median(np.concatenate([border_ratio(v[0]) for (j, kk), v in restyled.items() if kk == k]))
        )
        for k in ctx.targets
    }
    report["border_ratio"] = {
        "restyled": borders,
        "real": {k: float(np.median(border_ratio(ctx.query[k][0]))) for k in ctx.targets},
    }

    if ctx.classify is not None:
        acc = {}
        for t, k in enumerate(ctx.targets):
            pred = np.concatenate([ctx.classify(v[0]) for (j, kk), v in restyled.items() if kk == k])
            acc[k] = float(np.mean(pred == t))
        real_acc = float(
            np.mean(np.concatenate([ctx.classify(ctx.query[k][0]) == t for t, k in enumerate(ctx.targets)]))
        )
        report["classifier"] = {
            "target_fraction": acc,
            "target_fraction_mean": float(np.mean(list(acc.values()))),
            "real_query_accuracy": real_acc,
        }

    if ctx.segment is not None:
        pairs, orig_cache = {}, {}
        for (j, k), (img, lab, src_img) in restyled.items():
            if j not in orig_cache:
                orig_cache[j] = tile_scores(ctx.segment(src_img), lab)
            new = tile_scores(ctx.segment(img), lab)
            o = orig_cache[j]
            pairs[f"{j}->{k}"] = {
                "f1_original": float(o["f1"].mean()),
                "f1_restyled": float(new["f1"].mean()),
                "ari_original": float(o["ari"].mean()),
                "ari_restyled": float(new["ari"].mean()),
            }
        f1o = np.mean([p["f1_original"] for p in pairs.values()])
        f1r = np.mean([p["f1_restyled"] for p in pairs.values()])
        ario = np.mean([p["ari_original"] for p in pairs.values()])
        arir = np.mean([p["ari_restyled"] for p in pairs.values()])
        per_target = {}
        for k in ctx.targets:
            ps = [p for name, p in pairs.items() if name.endswith(f"->{k}")]
            per_target[k] = {m: float(np.mean([p[m] for p in ps])) for m in ps[0]} if ps else {}
        report["structure"] = {
            "pairs": pairs,
            "per_target": per_target,
            "f1_original": float(f1o),
            "f1_restyled": float(f1r),
            "f1_relative_drop": float((f1o - f1r) / max(f1o, 1e-9)),
            "ari_original": float(ario),
            "ari_restyled": float(arir),
            "ari_relative_drop": float((ario - arir) / max(ario, 1e-9)),
        }
    return report


# ============================================================================================ figure
def style_grid_figure(
    path: str, ctx: CheckContext, restyle: Restyler, seed: int, title: str = "", n_real: int = 2
) -> None:
    """Rows: each target lab's query tile (column 0 = original) rendered in every target style; the last
    ``n_real`` rows show real tiles of each target lab for comparison. Written atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labs = ctx.targets
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TAG_GRID)
    rows = len(labs) + n_real
    fig, axes = plt.subplots(rows, len(labs) + 1, figsize=(1.5 * (len(labs) + 1), 1.5 * rows), squeeze=False)
    for i, src in enumerate(labs):
        x, y = ctx.query[src][0][:1], ctx.query[src][1][:1]
        axes[i, 0].imshow(np.clip(x[0], 0, 1))
        axes[i, 0].set_ylabel(src, fontsize=7)
        for j, tgt in enumerate(labs):
            img = x[0] if i == j else np.asarray(restyle(x, y, tgt, jax.random.fold_in(key, i * 100 + j)))[0]
            axes[i, j + 1].imshow(np.clip(img, 0, 1))
    for r in range(n_real):
        axes[len(labs) + r, 0].set_ylabel(f"real #{r + 1}", fontsize=7)
        axes[len(labs) + r, 0].axis("off")
        for j, tgt in enumerate(labs):
            axes[len(labs) + r, j + 1].imshow(np.clip(ctx.reference[tgt][0][r], 0, 1))
    axes[0, 0].set_title("original", fontsize=7)
    for j, tgt in enumerate(labs):
        axes[0, j + 1].set_title(f"as {tgt}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        title or "rows: source tile; columns: target style; bottom rows: real target tiles", fontsize=8
    )
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


__all__ = [
    "GOAL_FIDELITY_RATIO",
    "in_batches",
    "frechet_distance",
    "FidelitySpace",
    "fit_space",
    "project",
    "boundary_contrast",
    "border_ratio",
    "DomainClassifier",
    "photometric_jitter",
    "train_classifier",
    "train_segmenter",
    "tile_scores",
    "CheckContext",
    "prepare",
    "validate_measure",
    "fidelity_of_sets",
    "restyle_all",
    "evaluate",
    "style_grid_figure",
]


def method_restyler(method, shared, bank, client_names: Sequence[str]) -> Restyler:
    """A ``Restyler`` for a ``StyleTechnique`` whose bank rows are ``client_names`` (one compiled render)."""
    from fedtransfer_jax.style.techniques.base import render_in_batches

    fn = jax.jit(method.render)
    names = list(client_names)

    def restyle(images, labels, target, key):
        t = np.full(len(images), names.index(target), np.int32)
        return render_in_batches(
            method, shared, bank, np.asarray(images), np.asarray(labels), t, key, render_fn=fn
        )

    return restyle
