"""The checks' two judges: small models trained on real tiles that score restyled ones.

* a **domain classifier** (which lab's texture does a tile have?), trained on brightness/contrast-
  normalised tiles with photometric jitter so that matching global brightness alone cannot fool it;
* a **reference segmenter** (does a restyled tile keep its grain boundaries?), a U-Net trained centrally
  on the real tiles of every lab, with flips only: it should know the labs' styles, not be invariant to
  arbitrary ones.

Both are fitted by the same jitted Adam scan (``_adam_fit``) and returned as host functions
``images -> numpy`` that run in fixed-size batches (one compilation for any number of tiles).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.data.batching import map_in_batches
from fedtransfer_jax.metrics import segmentation_metrics
from fedtransfer_jax.models.conv import Conv, default_impl
from fedtransfer_jax.models.losses import segmentation_loss
from fedtransfer_jax.models.unet import UNet
from fedtransfer_jax.style.features import normalise

Array = jax.Array


def in_batches(fn: Callable, *arrays: np.ndarray, batch: int = 16) -> np.ndarray:
    """``fn`` over the leading axis in zero-padded batches of one size (one compilation for any N)."""
    return map_in_batches(lambda *chunk: fn(*[jnp.asarray(a) for a in chunk]), arrays, batch)


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


__all__ = [
    "in_batches",
    "DomainClassifier",
    "photometric_jitter",
    "train_classifier",
    "train_segmenter",
    "tile_scores",
]
