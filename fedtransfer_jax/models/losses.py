"""Segmentation loss for thin structures: class-weighted cross-entropy + soft Dice on the boundary class.

Boundary pixels are ~5-20% of a micrograph, so plain cross-entropy is happy predicting "interior"
everywhere; the class weight and the Dice term both push recall on the thin boundary class.

Optionally a centreline-Dice term (clDice: Shit et al., "clDice - a Novel Topology-Preserving Loss Function
for Tubular Structure Segmentation", CVPR 2021): Dice between each map's soft skeleton and the other map,
so a boundary counts by its length rather than its area: a gap in a wall or a spurious wall across a grain
costs as much as its length, for lines up to ~2 x iterations + 1 px wide (a wider band has no soft skeleton
and is invisible to the term, as in the paper's code). Grain maps live or die by their walls' topology.
Averaged per tile like the Dice term (the paper's code sums over the batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def segmentation_loss(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    *,
    boundary_weight: float = 3.0,
    dice_weight: float = 1.0,
    eps: float = 1.0,
    cldice_weight: float = 0.0,
    cldice_iterations: int = 5,
) -> tuple[jax.Array, dict]:
    """Masked loss over a batch.

    Args:
      logits: [B, H, W, 2] float logits (0 = interior, 1 = boundary).
      labels: [B, H, W] integer labels, 1 = boundary.
      mask: [B] example mask; padded examples (False/0) contribute nothing.
      boundary_weight: weight of boundary pixels in the cross-entropy (interior pixels weigh 1).
      dice_weight: weight of the (1 - soft Dice) term on the boundary probability.
      eps: Dice smoothing, in pixels.
      cldice_weight: weight of the (1 - clDice) term; 0 leaves it out (and out of aux).
      cldice_iterations: soft-skeleton erosions: at least half the widest boundary line, in pixels.
    Returns:
      (loss, aux) where aux has the cross-entropy and Dice parts (and clDice when weighted).
    """
    labels = labels.astype(jnp.int32)
    mask = mask.astype(jnp.float32)
    n = jnp.maximum(mask.sum(), 1.0)
    pix_w = jnp.where(labels == 1, boundary_weight, 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    ce_per_ex = (ce * pix_w).sum(axis=(1, 2)) / pix_w.sum(axis=(1, 2))
    ce_loss = (ce_per_ex * mask).sum() / n

    p = jax.nn.softmax(logits, axis=-1)[..., 1]
    t = (labels == 1).astype(p.dtype)
    inter = (p * t).sum(axis=(1, 2))
    dice = (2 * inter + eps) / (p.sum(axis=(1, 2)) + t.sum(axis=(1, 2)) + eps)
    dice_loss = ((1.0 - dice) * mask).sum() / n
    loss = ce_loss + dice_weight * dice_loss
    aux = {"ce": ce_loss, "dice": dice_loss}
    if cldice_weight:
        cl = (cldice(p, t, iterations=cldice_iterations, eps=eps) * mask).sum() / n
        loss = loss + cldice_weight * cl
        aux["cldice"] = cl
    return loss, aux


def _max_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
    """Max over a (h, w) window centred on each pixel of [B, H, W], same size (edges padded with -inf)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window), (1, 1, 1), "SAME")


def soft_erode(x: jax.Array) -> jax.Array:
    """Grey erosion by a 3 px cross (clDice's soft erosion: the min of a 3x1 and a 1x3 min-filter)."""
    return jnp.minimum(-_max_pool(-x, (3, 1)), -_max_pool(-x, (1, 3)))


def soft_dilate(x: jax.Array) -> jax.Array:
    return _max_pool(x, (3, 3))


def soft_skeleton(x: jax.Array, iterations: int) -> jax.Array:
    """Soft morphological skeleton of [B, H, W] maps in [0, 1] (clDice, Algorithm 1): what each round of
    erosion removes that an opening would not restore, accumulated."""
    skel = jax.nn.relu(x - soft_dilate(soft_erode(x)))
    for _ in range(iterations):
        x = soft_erode(x)
        delta = jax.nn.relu(x - soft_dilate(soft_erode(x)))
        skel = skel + jax.nn.relu(delta - skel * delta)
    return skel


def cldice(p: jax.Array, t: jax.Array, *, iterations: int = 5, eps: float = 1.0) -> jax.Array:
    """Per-example 1 - clDice of boundary probabilities `p` against binary labels `t`, both [B, H, W]:
    topology precision (predicted skeleton inside the true walls) and sensitivity (true skeleton inside
    the predicted walls), combined as a harmonic mean."""
    sp, st = soft_skeleton(p, iterations), soft_skeleton(t, iterations)
    precision = ((sp * t).sum(axis=(1, 2)) + eps) / (sp.sum(axis=(1, 2)) + eps)
    sensitivity = ((st * p).sum(axis=(1, 2)) + eps) / (st.sum(axis=(1, 2)) + eps)
    return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)
