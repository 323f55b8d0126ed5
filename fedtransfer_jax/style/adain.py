"""Adaptive instance normalisation (Huang & Belongie, ICCV 2017).

In FedTransfer a client's "style" is the per-channel mean and standard deviation of
encoder features of its micrographs: these few numbers carry illumination, etch
contrast and colour tint, but not the grain geometry, so they can leave the client
while images and labels stay at home. AdaIN re-renders content features with any
such (mean, std) pair.

All functions are pure, jittable and vmappable (they act on a leading batch axis).
"""

from __future__ import annotations

import jax.numpy as jnp

Array = jnp.ndarray


def _check_nhwc(name: str, x: Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be NHWC [B,H,W,C], got shape {tuple(x.shape)}")


def feature_stats(feats: Array, eps: float = 1e-5) -> tuple[Array, Array]:
    """Per-example, per-channel spatial mean and std of NHWC features.

    The std is ``sqrt(var + eps)`` rather than ``sqrt(var) + eps`` so that its gradient is
    finite on constant (e.g. all-padding) feature maps.

    Args:
      feats: ``[B, H, W, C]`` features.
      eps: variance floor.

    Returns:
      ``(mean [B, C], std [B, C])``.
    """
    _check_nhwc("feats", feats)
    mean = jnp.mean(feats, axis=(1, 2))
    var = jnp.mean(jnp.square(feats - mean[:, None, None, :]), axis=(1, 2))
    return mean, jnp.sqrt(var + eps)


def adain(content_feats: Array, style_mean: Array, style_std: Array, eps: float = 1e-5) -> Array:
    """AdaIN: normalise each channel of the content, then give it the style's mean/std.

    ``AdaIN(x, m, s) = s * (x - mean(x)) / std(x) + m`` with statistics over space per
    example and channel. With ``(m, s) = feature_stats(x, eps)`` this is the identity.

    Args:
      content_feats: ``[B, H, W, C]``.
      style_mean, style_std: ``[B, C]`` (or ``[C]``, broadcast over the batch).
      eps: must match the ``eps`` used to compute the style statistics for exact identity.

    Returns:
      ``[B, H, W, C]`` restyled features.
    """
    _check_nhwc("content_feats", content_feats)
    c = content_feats.shape[-1]
    for name, s in (("style_mean", style_mean), ("style_std", style_std)):
        if s.shape[-1] != c:
            raise ValueError(f"{name} has {s.shape[-1]} channels, content_feats has {c}")
    mean, std = feature_stats(content_feats, eps)
    normed = (content_feats - mean[:, None, None, :]) / std[:, None, None, :]
    style_mean = jnp.broadcast_to(style_mean, mean.shape)
    style_std = jnp.broadcast_to(style_std, std.shape)
    return normed * style_std[:, None, None, :] + style_mean[:, None, None, :]
