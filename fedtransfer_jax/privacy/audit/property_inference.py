"""Attack (c): property inference. Does a tile's style message tell the server its microstructure?

For every style technique, can the server predict a tile's grain statistics (number of grains, mean grain
area, boundary fraction) from that tile's message better than from the lab's mean? Leave-one-out ridge
regression and a permutation test: a materials leak that image-similarity scores miss, since a message
can give away the grain size without giving away any one image.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

PyTree = Any
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
