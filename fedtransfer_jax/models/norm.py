"""GroupNorm as two passes forward and two backward (``jax.custom_vjp``), a drop-in for ``nn.GroupNorm``.

Why: autodiff of flax's GroupNorm reduces a ``[B, H, W, G, C/G]`` view over axes (1, 2, 4) several times per
layer (mean, mean of squares, and ~4 more in the backward pass); with 2 channels per group the reduced minor
axis is 2 wide, which XLA:CPU vectorises poorly (~20 % of a U-Net step was such reductions,
docs/PERFORMANCE.md). Here every reduction is a per-channel sum over (H, W), contiguous in C:

  forward   one pass: s1 = sum x, s2 = sum x^2 per (b, c) -> group mean/var; one pass: y = x * a + d
  backward  one pass: A = sum dy * x, S = sum dy per (b, c); one pass: dx = x * alpha + dy * beta + gamma

Statistics are float32 whatever the input dtype (like flax's ``force_float32_reductions``); the variance is
E[x^2] - E[x]^2 clipped at 0 (flax's ``use_fast_variance``). Params and names match ``nn.GroupNorm``
('scale' ones, 'bias' zeros, shape [C]), so checkpoints are interchangeable.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
EPS = 1e-6  # flax.linen.GroupNorm's default epsilon


def _group_sum(v: Array, groups: int) -> Array:
    """[B, C] per-channel sums -> [B, C] sums over each channel's group (broadcast back to its channels)."""
    b, c = v.shape
    g = v.reshape(b, groups, c // groups).sum(-1, keepdims=True)
    return jnp.broadcast_to(g, (b, groups, c // groups)).reshape(b, c)


def _expand(v: Array) -> Array:
    return v[:, None, None, :]


def _forward(z: Array, shift: Array, scale: Array, bias: Array, groups: int, eps: float):
    """y = GroupNorm(z + shift) and what the backward pass needs; the shift (the producing conv's bias)
    enters the statistics in closed form, so z + shift is never written out."""
    hw = z.shape[1] * z.shape[2]
    n = hw * (z.shape[3] // groups)
    zf, cs = z.astype(jnp.float32), shift.astype(jnp.float32)
    sz = zf.sum((1, 2))  # [B, C]
    szz = jnp.square(zf).sum((1, 2))
    mean = _group_sum(sz + hw * cs, groups) / n
    ex2 = _group_sum(szz + 2.0 * cs * sz + hw * jnp.square(cs), groups) / n
    rstd = jax.lax.rsqrt(jnp.maximum(ex2 - jnp.square(mean), 0.0) + eps)
    a = rstd * scale.astype(jnp.float32)
    d = bias.astype(jnp.float32) + (cs - mean) * a
    y = (zf * _expand(a) + _expand(d)).astype(z.dtype)
    return y, (z, shift, scale, bias, mean, rstd, sz)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _group_norm(z: Array, shift: Array, scale: Array, bias: Array, groups: int, eps: float) -> Array:
    return _forward(z, shift, scale, bias, groups, eps)[0]


def _fwd(z, shift, scale, bias, groups, eps):
    return _forward(z, shift, scale, bias, groups, eps)


def _bwd(groups, eps, res, dy):
    del eps
    z, shift, scale, bias, mean, rstd, sz = res
    hw = z.shape[1] * z.shape[2]
    n = hw * (z.shape[3] // groups)
    zf, dyf, cs = z.astype(jnp.float32), dy.astype(jnp.float32), shift.astype(jnp.float32)
    s_dy = dyf.sum((1, 2))  # [B, C], one pass together with the next line
    s_dyx = (dyf * zf).sum((1, 2)) + cs * s_dy  # sum dy * x with x = z + shift
    sc = scale.astype(jnp.float32)
    # xhat = (x - mean) * rstd: d scale = sum dy * xhat, d bias = sum dy.
    dxhat_sum = rstd * (s_dyx - mean * s_dy)
    # dx = rstd * (g - mean_grp(g) - xhat * mean_grp(g * xhat)) with g = dy * scale = x*alpha + dy*beta + gamma.
    mg = _group_sum(sc * s_dy, groups) / n
    mgx = _group_sum(sc * dxhat_sum, groups) / n
    beta = rstd * sc
    alpha = -jnp.square(rstd) * mgx
    gamma = -rstd * mg - alpha * mean
    dz = zf * _expand(alpha) + dyf * _expand(beta) + _expand(gamma + alpha * cs)
    # d shift = sum over (b, h, w) of dx, in closed form from the per-(b, c) sums (no pass over dx).
    dshift = (alpha * (sz + hw * cs) + beta * s_dy + hw * gamma).sum(0)
    return (
        dz.astype(z.dtype),
        dshift.astype(shift.dtype),
        dxhat_sum.sum(0).astype(scale.dtype),
        s_dy.sum(0).astype(bias.dtype),
    )


_group_norm.defvjp(_fwd, _bwd)


def group_norm(
    x: Array, scale: Array, bias: Array, groups: int, eps: float = EPS, shift: Array | None = None
) -> Array:
    """GroupNorm of NHWC ``x + shift`` over (H, W, C/groups) with per-channel ``scale``/``bias`` ([C]).

    ``shift`` ([C], e.g. the producing conv's bias, default 0) is folded into the statistics: passing the
    conv output without its bias saves writing ``x + shift`` forward and reducing its gradient backward.
    """
    if x.ndim != 4:
        raise ValueError(f"group_norm: x must be NHWC (4-D), got shape {x.shape}")
    c = x.shape[-1]
    if c % groups:
        raise ValueError(f"group_norm: {c} channels do not split into {groups} groups")
    shift = jnp.zeros((c,), jnp.float32) if shift is None else shift
    for name, v in (("scale", scale), ("bias", bias), ("shift", shift)):
        if v.shape != (c,):
            raise ValueError(f"group_norm: {name} must be [{c}], got {v.shape}")
    return _group_norm(x, shift, scale, bias, int(groups), float(eps))


class GroupNorm(nn.Module):
    """Drop-in for ``nn.GroupNorm(num_groups=...)`` on NHWC inputs, same params ('scale', 'bias')."""

    num_groups: int = 32
    epsilon: float = EPS
    dtype: Optional[Any] = None  # output dtype (statistics are float32 regardless)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, shift: Array | None = None) -> Array:
        """GroupNorm of ``x + shift`` (``shift``: [C], e.g. the deferred bias of the conv before it)."""
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        y = group_norm(x, scale, bias, self.num_groups, self.epsilon, shift=shift)
        return y.astype(self.dtype) if self.dtype is not None else y
