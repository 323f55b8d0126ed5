"""Attack (a): invert the style statistics a client shares back into the image they were computed from.

An honest-but-curious server holds one client's message for one image. It optimises an image from noise
(Adam on sigmoid logits, total-variation prior) until the image's statistics match the message, then the
result is scored against the true image (`scores.score_victims`). Generic over the statistics: any
differentiable `stats_fn(image) -> pytree` (AdaIN feature mean/std, Fourier amplitudes, a new method's
message). A message that also depends on the tile's label map, which the server lacks, is attacked with a
guessed label (`label_guess_inversion_audit`): the attacker fits its candidate with the label of another
tile of the same lab.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.privacy.audit.scores import score_victims

PyTree = Any
StatsFn = Callable[[jax.Array], PyTree]  # one image [H, W, 3] -> statistics (any pytree of arrays)


def total_variation(images: jax.Array) -> jax.Array:
    """Mean absolute difference of neighbouring pixels (anisotropic TV) over [..., H, W, C]."""
    dy = jnp.abs(images[..., 1:, :, :] - images[..., :-1, :, :]).mean()
    dx = jnp.abs(images[..., :, 1:, :] - images[..., :, :-1, :]).mean()
    return dx + dy


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


@functools.lru_cache(maxsize=16)
def _jitted(fn: Callable) -> Callable:
    """One compilation of a message function per audit, whichever client or victim calls it."""
    return jax.jit(fn)


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
    score_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    boundary_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    control: bool = True,
) -> tuple[dict, dict]:
    """Attack (a) on one client: for every victim image and every statistics function, invert the statistics
    the client shared for that image and score the result against it (baseline: the client's other images).
    `control`: also invert the statistics of *another* image of the lab and score that against the victim:
    what the lab's style alone gives, so that only image-specific leakage beats it. `score_kwargs`:
    {method: extra `score_reconstruction` arguments} (Fourier: its window `beta` and `twin`).

    Returns (scores {method: summarize(...), method + "/control": ...},
    recovered images {method: [V, H, W, 3]}).
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    score_kwargs = score_kwargs or {}
    scores, recovered = {}, {}
    for mi, (name, fn) in enumerate(sorted(stats_fns.items())):
        shared = jax.jit(fn)  # what the client computed and sent (one compilation, not one per op)

        def attack(source: int, victim: int, vi: int) -> np.ndarray:
            k = jax.random.fold_in(jax.random.fold_in(key, mi), vi)
            return invert_statistics(
                fn, shared(jnp.asarray(images[source])), images.shape[1:], k, steps, lr, tv_weight
            )

        kwargs = dict(tolerance=tolerance, boundary_fn=boundary_fn, **score_kwargs.get(name, {}))
        found, ctl, recovered[name] = score_victims(images, labels, victims, attack, kwargs, control)
        scores[name] = found
        if control:
            scores[name + "/control"] = ctl
    return scores, recovered


def label_guess_inversion_audit(
    images: np.ndarray,
    labels: np.ndarray,
    victims: Sequence[int],
    key: jax.Array,
    *,
    name: str,
    message_fn: Callable[[jax.Array, jax.Array], PyTree],
    stats_fn: Callable[[jax.Array, PyTree], PyTree],
    context_fn: Callable[[PyTree, np.ndarray], PyTree],
    target_fn: Callable[[PyTree], PyTree] | None = None,
    steps: int = 300,
    lr: float = 0.05,
    tv_weight: float = 0.05,
    tolerance: float = 2.0,
    score_kwargs: Mapping[str, Any] | None = None,
    boundary_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    control: bool = True,
) -> tuple[dict, dict]:
    """Attack (a) on one client's messages `message_fn(image, label)` of a method whose message is fitted
    with the tile's own label map, which the server does not have: the attacker uses its best knowledge, the
    label map of *another* tile of the lab (the same knowledge as the lab baseline), and optimises an image
    whose `stats_fn(image, context_fn(message, guessed label))` matches `target_fn(message)` (default: the
    message itself). Scored against the victim's image and label like the other style attacks; `control` =
    the same attack (same guessed label) on the message of a third tile of the lab: what the lab's style
    gives without the victim's message. Needs >= 3 images (victim, label guess, control).

    Returns (scores {name: summarize(...), name + '/control': ...}, recovered {name: [V, H, W, 3]}).
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    if len(images) < 3:
        raise ValueError(
            f"{name} inversion needs >= 3 images (victim, label guess, control), got {len(images)}"
        )
    message = _jitted(message_fn)

    def attack(source: int, victim: int, vi: int) -> np.ndarray:
        others = [i for i in range(len(images)) if i != victim]
        guess = others[(vi + 1) % len(others)]  # the attacker's label guess: neither victim nor control
        msg = message(jnp.asarray(images[source]), jnp.asarray(labels[source]))
        context = context_fn(msg, labels[guess])
        target = msg if target_fn is None else target_fn(msg)
        return invert_statistics(
            stats_fn, target, images.shape[1:], jax.random.fold_in(key, vi), steps, lr, tv_weight,
            context=context,
        )

    kwargs = dict(tolerance=tolerance, boundary_fn=boundary_fn, **(score_kwargs or {}))
    found, ctl, recs = score_victims(images, labels, victims, attack, kwargs, control)
    scores = {name: found}
    if control:
        scores[name + "/control"] = ctl
    return scores, {name: recs}
