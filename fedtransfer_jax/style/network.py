"""A small AdaIN arbitrary-style-transfer network and its self-supervised loss.

FedTransfer lets each client re-render its own labelled micrographs in other labs'
styles. The network follows Huang & Belongie (2017): encoder -> AdaIN with a target
(mean, std) -> decoder, with AdaIN applied at *every* encoder level and the restyled level
features fed to the decoder through skip connections (the shared style vector is the
concatenation of all levels' mean/std). A bottleneck-only AdaIN decoder (16x16 for 64 px tiles)
was measured to blur grain boundaries away, which poisons segmentation training with restyled
images whose labels no longer match; the skips keep the geometry. Further deviations, because
no pretrained VGG can be downloaded here:

* The encoder is a small multi-scale conv net (default 16/32/64 channels, one 3x3 conv
  per level, 2x average pooling between levels). With ``train_encoder=False`` (default)
  it stays at its random initialisation: a fixed random conv net still gives
  informative first/second-order feature statistics for texture/style.
* The style loss matches the mean/std of *this* encoder's features at every level, and the
  content loss is the bottleneck feature distance to the AdaIN target, as in AdaIN. A small
  pixel reconstruction term (decode the image with its own statistics and compare with the
  input) anchors the decoder to the grain geometry.

How the encoder is frozen: ``style_loss_fn`` applies ``jax.lax.stop_gradient`` to the
``params['encoder']`` subtree when ``model.train_encoder`` is False, so its gradient is
exactly zero and an optimiser without weight decay (SGD, Adam) leaves it unchanged. If you
use weight decay, additionally wrap the optimiser with ``optax.masked(..., trainable_mask(
params, model.train_encoder))`` (helper below). In federated training the frozen encoder
is therefore identical on every client, so everyone's shared style vectors live in the
same feature space.

Parameter layout: ``{'encoder': {'conv_0', ...}, 'decoder': {...}}``. Images are NHWC in
``[0, 1]``; H and W must be divisible by ``2 ** (len(features) - 1)``.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedtransfer_jax.models.conv import Conv, default_impl
from fedtransfer_jax.style.adain import adain, feature_stats

Array = jnp.ndarray
PyTree = Any

# He-normal init keeps ReLU feature magnitudes O(1) through the random (frozen) encoder.
_HE = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def _upsample2(x: Array) -> Array:
    """Nearest-neighbour 2x upsampling (no ConvTranspose: avoids checkerboard artefacts)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _avg_pool2(x: Array) -> Array:
    return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))


PADDINGS = ("zero", "reflect")


def _conv(x: Array, width: int, name: str, padding: str, kernel_init=_HE) -> Array:
    """3x3 conv, 'SAME' size. ``padding='reflect'`` pads by reflection and crops the border again (equal to a
    VALID conv of the reflect-padded input): with zero padding every level of the random encoder sees a
    grey frame (0 after the [-1, 1] scaling), the border gets feature statistics of its own, AdaIN rescales
    them with the target's std, and the decoder paints coloured seams along the tile border."""
    if padding not in PADDINGS:
        raise ValueError(f"config key style.padding: unknown {padding!r}; choose from {PADDINGS}")
    conv = Conv(width, 3, kernel_init=kernel_init, impl=default_impl(), name=name)
    if padding == "zero":
        return conv(x)
    return conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"))[:, 1:-1, 1:-1, :]


class Encoder(nn.Module):
    """Multi-scale conv encoder; returns one ReLU feature map per level (finest first)."""

    features: Sequence[int] = (16, 32, 64)
    padding: str = "reflect"

    @nn.compact
    def __call__(self, images: Array) -> list[Array]:
        x = images.astype(jnp.float32) * 2.0 - 1.0
        feats = []
        for i, width in enumerate(self.features):
            if i > 0:
                x = _avg_pool2(x)
            x = nn.relu(_conv(x, width, f"conv_{i}", self.padding))
            feats.append(x)
        return feats


class Decoder(nn.Module):
    """Mirror of the encoder with skip connections: conv at the bottleneck, then per level (upsample,
    concat the level's (AdaIN-restyled) encoder features, conv), RGB head.

    The skips carry the grain geometry at full resolution, so a restyled micrograph keeps its boundaries
    where the labels say they are; a bottleneck-only decoder (16x16 for 64 px tiles) blurred them away.
    """

    features: Sequence[int] = (16, 32, 64)
    padding: str = "reflect"

    @nn.compact
    def __call__(self, feats: Sequence[Array]) -> Array:
        x = nn.relu(_conv(feats[-1], self.features[-1], "conv_in", self.padding))
        for i, level in enumerate(reversed(range(len(self.features) - 1))):
            x = jnp.concatenate([_upsample2(x), feats[level]], axis=-1)
            x = nn.relu(_conv(x, self.features[level], f"conv_up_{i}", self.padding))
        lecun = nn.initializers.lecun_normal()
        return nn.sigmoid(_conv(x, 3, "to_rgb", self.padding, kernel_init=lecun))


class StyleNet(nn.Module):
    """AdaIN style-transfer net. Use ``model.apply({'params': p}, x, method=...)``.

    Attributes:
      features: encoder widths per level (the last one is the style vector size D).
      train_encoder: if False the encoder is a fixed random net (see module docstring).
      eps: AdaIN variance floor.
      padding: 'zero' or 'reflect' borders of every conv (see ``_conv``: zero padding causes border seams).
    """

    features: Sequence[int] = (16, 32, 64)
    train_encoder: bool = False
    eps: float = 1e-5
    padding: str = "reflect"

    def setup(self) -> None:
        self.encoder = Encoder(tuple(self.features), self.padding)
        self.decoder = Decoder(tuple(self.features), self.padding)

    def _check(self, images: Array) -> None:
        f = 2 ** (len(self.features) - 1)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"StyleNet expects images [B,H,W,3], got {tuple(images.shape)}")
        if images.shape[1] % f or images.shape[2] % f:
            raise ValueError(
                f"StyleNet with {len(self.features)} levels needs H, W divisible by {f}; "
                f"got {images.shape[1]}x{images.shape[2]}"
            )

    def encode(self, images: Array) -> list[Array]:
        """Multi-scale features ``[B, H/2^i, W/2^i, features[i]]``, finest first."""
        self._check(images)
        return self.encoder(images)

    def style_stats(self, images: Array) -> tuple[Array, Array]:
        """``(mean [B, D], std [B, D])`` of every level's features, concatenated (D = sum(features)):
        the vectors a client shares."""
        stats = [feature_stats(f, self.eps) for f in self.encode(images)]
        return jnp.concatenate([m for m, _ in stats], -1), jnp.concatenate([s for _, s in stats], -1)

    def split_stats(self, v: Array) -> list[Array]:
        """Inverse of the concatenation in ``style_stats``: one ``[..., features[i]]`` slice per level."""
        edges = list(itertools.accumulate(self.features))[:-1]
        return jnp.split(v, edges, axis=-1)

    def decode(self, feats: Sequence[Array]) -> Array:
        """Per-level features (finest first) -> RGB in ``[0, 1]``."""
        return self.decoder(feats)

    def stylize(
        self, images: Array, style_mean: Array, style_std: Array, alpha: float | Array = 1.0
    ) -> Array:
        """Re-render ``images`` with the style statistics ``(style_mean, style_std)`` (AdaIN at every level).

        ``alpha`` in [0, 1] blends the AdaIN targets with the image's own features
        (alpha=0 -> plain reconstruction).
        """
        feats = self.encode(images)
        alpha = jnp.asarray(alpha, jnp.float32)
        targets = [
            alpha * adain(f, m, s, self.eps) + (1.0 - alpha) * f
            for f, m, s in zip(feats, self.split_stats(style_mean), self.split_stats(style_std))
        ]
        return self.decode(targets)

    def __call__(self, images: Array) -> Array:
        """Identity-style reconstruction; used by ``init`` to create every parameter."""
        return self.decode(self.encode(images))


def init_style_net(model: StyleNet, key: Array, image_size: int = 64) -> PyTree:
    """Initialise and return the inner ``params`` dict (``{'encoder': .., 'decoder': ..}``)."""
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return model.init(key, dummy)["params"]


def trainable_mask(params: PyTree, train_encoder: bool) -> PyTree:
    """Boolean pytree for ``optax.masked``: False on the encoder when it is frozen."""
    return {
        k: jax.tree_util.tree_map(lambda _: bool(train_encoder) or k != "encoder", v)
        for k, v in params.items()
    }


def style_partner(rng: Array, mask: Array) -> Array:
    """For each example, the index of another *real* example of the batch to take the style from.

    A random cyclic shift of a random ordering of the real examples: a permutation of the
    real examples with no fixed point when there are >= 2 of them (a lone real example is
    paired with itself); padding examples point to themselves. Jittable.
    """
    mask = mask.astype(bool)
    n = mask.shape[0]
    keys = jax.random.uniform(rng, (n,)) + jnp.where(mask, 0.0, 2.0)  # real examples first
    order = jnp.argsort(keys)
    pos = jnp.argsort(order)  # position of each example in `order`
    n_real = jnp.maximum(jnp.sum(mask), 1)
    partner = order[(pos + 1) % n_real]
    return jnp.where(mask, partner, jnp.arange(n))


def _masked_mean(x: Array, w: Array) -> Array:
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def style_loss_fn(
    model: StyleNet,
    params: Mapping[str, Any],
    batch: Mapping[str, Array],
    rng: Array,
    *,
    content_weight: float = 1.0,
    style_weight: float = 1.0,
    identity_weight: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
    """Self-supervised AdaIN loss on one client's batch (styles from the same batch).

    Each real example is stylised with the bottleneck statistics of another real example
    of the batch (``style_partner``), so a client needs nothing but its own images.

      content  = mean over real examples of ||enc(out)_L - AdaIN target||^2   (per-element mean)
      style    = sum over levels of ||mu(enc(out)_l) - mu(enc(style)_l)||^2 + same for sigma
      identity = ||decode(enc(x)_L) - x||^2 pixel MSE (own statistics -> keep structure)

    Padding examples (``mask`` False) contribute exactly zero.

    Args:
      model: a ``StyleNet``; bind with ``functools.partial(style_loss_fn, model)`` to get
        the engine's ``loss_fn(params, batch, rng)``.
      params: the inner params dict, or a variables dict ``{'params': ...}``.
      batch: ``images [B,H,W,3]``, ``mask [B]`` (``labels`` is accepted and ignored).
      rng: key choosing the style partners.

    Returns:
      ``(loss, aux)`` with aux keys ``content``, ``style``, ``identity``, ``n_real``.
    """
    for key in ("images", "mask"):
        if key not in batch:
            raise KeyError(f"style_loss_fn: batch is missing key '{key}' (has {sorted(batch)})")
    params = params["params"] if "params" in params else params
    if not model.train_encoder:
        params = {**params, "encoder": jax.lax.stop_gradient(params["encoder"])}
    variables = {"params": params}
    images = batch["images"].astype(jnp.float32)
    w = batch["mask"].astype(jnp.float32)

    def enc(x: Array) -> list[Array]:
        return model.apply(variables, x, method=StyleNet.encode)

    feats = enc(images)
    stats = [feature_stats(f, model.eps) for f in feats]
    partner = style_partner(rng, w > 0)
    style_stats = [(m[partner], s[partner]) for m, s in stats]

    targets = [adain(f, m, sd, model.eps) for f, (m, sd) in zip(feats, style_stats)]
    target = targets[-1]
    out = model.apply(variables, targets, method=StyleNet.decode)
    out_feats = enc(out)

    content = jnp.mean(jnp.square(out_feats[-1] - jax.lax.stop_gradient(target)), axis=(1, 2, 3))
    style = 0.0
    for f, (m_s, s_s) in zip(out_feats, style_stats):
        m_o, s_o = feature_stats(f, model.eps)
        m_s, s_s = jax.lax.stop_gradient(m_s), jax.lax.stop_gradient(s_s)
        style = style + jnp.mean(jnp.square(m_o - m_s), -1) + jnp.mean(jnp.square(s_o - s_s), -1)
    recon = model.apply(variables, feats, method=StyleNet.decode)
    identity = jnp.mean(jnp.square(recon - images), axis=(1, 2, 3))

    aux = {
        "content": _masked_mean(content, w),
        "style": _masked_mean(style, w),
        "identity": _masked_mean(identity, w),
        "n_real": jnp.sum(w),
    }
    loss = content_weight * aux["content"] + style_weight * aux["style"] + identity_weight * aux["identity"]
    return loss, aux


__all__ = [
    "Encoder",
    "Decoder",
    "StyleNet",
    "init_style_net",
    "trainable_mask",
    "style_partner",
    "style_loss_fn",
]
