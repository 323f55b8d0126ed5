"""Fast 2-D convolutions for local SGD inside ``lax.scan`` and clients under ``jax.vmap``.

Why this module exists (measured on a 2-core CPU, JAX 0.10.2; see ``benchmarks/conv_micro.py``):

* Inside ``lax.scan`` XLA:CPU keeps the filter-gradient convolution of ``lax.conv_general_dilated``
  in a non-canonical layout (``dim_labels=f01b_i01o->01bf``) that runs ~15x slower than the
  canonical ``b01f_01io->b01f`` it picks when the steps are unrolled.  Writing the backward pass
  by hand (``jax.custom_vjp``) as canonical NHWC/HWIO convolutions on explicitly transposed
  operands removes the gap.
* ``jax.vmap`` over per-client weights turns a convolution into a grouped convolution
  (``feature_group_count = clients``), which XLA:CPU runs far slower than a loop of ordinary
  convolutions.  ``custom_vjp_map`` therefore gives each canonical convolution a
  ``custom_vmap`` rule: shared weights fold the client axis into the batch axis (one big
  convolution), per-client weights run a ``lax.map`` of ordinary convolutions.
* ``im2col`` (patches + matmul) makes per-client weights a batched matmul instead.

All implementations are restricted to what the U-Net needs: NHWC inputs, HWIO kernels, odd square
or rectangular kernels, stride 1, 'SAME' padding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]

IMPLS: tuple[str, ...] = ("xla", "custom_vjp", "custom_vjp_map", "im2col")
_DIMS = ("NHWC", "HWIO", "NHWC")


# --------------------------------------------------------------------------------------------
# Shape checks and padding
# --------------------------------------------------------------------------------------------


def _same_padding(w_shape: Sequence[int]) -> Padding:
    """Symmetric 'SAME' padding for an odd HWIO kernel at stride 1."""
    kh, kw = int(w_shape[0]), int(w_shape[1])
    return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _check_shapes(x: Array, w: Array) -> None:
    """Raise a ValueError naming the offending argument when shapes are outside the supported set."""
    if x.ndim != 4:
        raise ValueError(f"conv2d: x must be NHWC (4-D), got shape {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: w must be HWIO (4-D), got shape {w.shape}")
    if w.shape[0] % 2 == 0 or w.shape[1] % 2 == 0:
        raise ValueError(f"conv2d: only odd kernels are supported ('SAME', stride 1), got w.shape={w.shape}")
    if x.shape[-1] != w.shape[2]:
        raise ValueError(
            f"conv2d: input channels of x ({x.shape[-1]}) != kernel in-channels w.shape[2] ({w.shape[2]})"
        )


# --------------------------------------------------------------------------------------------
# The one canonical convolution every custom-gradient path is built from
# --------------------------------------------------------------------------------------------


def _canon(lhs: Array, rhs: Array, padding: Padding) -> Array:
    """NHWC x HWIO -> NHWC stride-1 convolution: the layout XLA:CPU runs fastest."""
    return lax.conv_general_dilated(lhs, rhs, (1, 1), padding, dimension_numbers=_DIMS)


@functools.lru_cache(maxsize=None)
def _canon_vmapped(padding: Padding) -> Callable[[Array, Array], Array]:
    """``_canon`` with a vmap rule that never produces a grouped convolution.

    * only ``lhs`` batched (shared weights): fold the vmap axis into the batch axis;
    * only ``rhs`` batched (shared input):  fold the vmap axis into the output features;
    * both batched (per-client weights):    ``lax.map`` of ordinary convolutions.
    Cached per padding because ``custom_vmap`` takes array arguments only.
    """

    @custom_vmap
    def conv(lhs: Array, rhs: Array) -> Array:
        return _canon(lhs, rhs, padding)

    @conv.def_vmap
    def _rule(axis_size: int, in_batched: Sequence[bool], lhs: Array, rhs: Array):
        lhs_b, rhs_b = in_batched
        if lhs_b and not rhs_b:
            c, n = lhs.shape[:2]
            out = conv(lhs.reshape((c * n,) + lhs.shape[2:]), rhs)
            return out.reshape((c, n) + out.shape[1:]), True
        if rhs_b and not lhs_b:
            c, kh, kw, i, o = rhs.shape
            folded = jnp.moveaxis(rhs, 0, 3).reshape(kh, kw, i, c * o)
            out = conv(lhs, folded)  # [N, H, W, C*O]
            out = out.reshape(out.shape[:3] + (c, o))
            return jnp.moveaxis(out, 3, 0), True
        return lax.map(lambda args: conv(*args), (lhs, rhs)), True

    return conv


# --------------------------------------------------------------------------------------------
# custom_vjp convolution: canonical forward, input gradient and filter gradient
# --------------------------------------------------------------------------------------------


def _input_grad(dy: Array, w: Array, conv_fn: Callable) -> Array:
    """dL/dx: a 'SAME' convolution of dy with the spatially flipped, in/out-swapped kernel."""
    w_t = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)  # [kh, kw, O, I]
    return conv_fn(dy, w_t, _same_padding(w.shape))


def _filter_grad(x: Array, dy: Array, w_shape: Sequence[int], conv_fn: Callable) -> Array:
    """dL/dw as a canonical conv: input channels act as batch, batch acts as features.

    lhs = x^T [I, H, W, N] (NHWC with N:=I, C:=N), rhs = dy^T [H, W, N, O] (HWIO), padding
    (k-1)/2 gives out [I, kh, kw, O] with out[i,a,b,o] = sum_{n,h,w} xpad[n,h+a,w+b,i] dy[n,h,w,o].
    """
    lhs = jnp.transpose(x, (3, 1, 2, 0))
    rhs = jnp.transpose(dy, (1, 2, 0, 3))
    out = conv_fn(lhs, rhs, _same_padding(w_shape))  # [I, kh, kw, O]
    return jnp.transpose(out, (1, 2, 0, 3))


def _make_custom_vjp(conv_fn: Callable[[Array, Array, Padding], Array]) -> Callable[[Array, Array], Array]:
    """Build a custom_vjp conv whose three convolutions all go through ``conv_fn``."""

    @jax.custom_vjp
    def conv(x: Array, w: Array) -> Array:
        return conv_fn(x, w, _same_padding(w.shape))

    def fwd(x: Array, w: Array):
        return conv(x, w), (x, w)

    def bwd(res, dy: Array):
        x, w = res
        dx = _input_grad(dy, w, conv_fn).astype(x.dtype)
        dw = _filter_grad(x, dy, w.shape, conv_fn).astype(w.dtype)
        return dx, dw

    conv.defvjp(fwd, bwd)
    return conv


_conv_custom_vjp = _make_custom_vjp(_canon)
_conv_custom_vjp_map = _make_custom_vjp(lambda lhs, rhs, pad: _canon_vmapped(pad)(lhs, rhs))


# --------------------------------------------------------------------------------------------
# im2col
# --------------------------------------------------------------------------------------------


def extract_patches(x: Array, kh: int, kw: int) -> Array:
    """[N, H, W, C] -> [N, H, W, kh*kw*C] 'SAME' patches ordered (dy, dx, c) like an HWIO kernel.

    Built from pad + static slices (not ``conv_general_dilated_patches``, which is itself a
    convolution), so under vmap it stays slicing and the product stays a (batched) matmul.
    """
    n, h, w, c = x.shape
    ph, pw = kh // 2, kw // 2
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    cols = [xp[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


def _conv_im2col(x: Array, w: Array) -> Array:
    """Patches @ reshaped kernel; vmap over per-client weights gives a batched dot_general."""
    kh, kw, i, o = w.shape
    patches = extract_patches(x, kh, kw)
    return jnp.einsum("nhwk,ko->nhwo", patches, w.reshape(kh * kw * i, o))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def default_impl(backend: Optional[str] = None) -> str:
    """Fastest impl for the federated round (vmap clients of scan steps of grad U-Net) per backend.

    CPU (``benchmarks/conv_micro.py``, shared 2-core EPYC, JAX 0.10.2, 8 clients x 4 steps of a
    3-level U-Net): vmap round with 'custom_vjp_map' ~1.7-1.9 s, 'im2col' ~4.2-5.0 s, 'custom_vjp'
    ~9.6-13 s (grouped convs), 'xla' > 1 min.  Without vmap 'custom_vjp_map' is 'custom_vjp'.
    Note: ``lax.map`` over clients (instead of vmap) with 'custom_vjp' was ~15% faster still
    (~1.6 s, on par with a Python loop of jitted per-client steps, ~1.6 s).
    GPU/TPU were not measured; their convolutions have no scan layout problem, so they keep 'xla'.
    """
    backend = backend or jax.default_backend()
    return {"cpu": "custom_vjp_map"}.get(backend, "xla")



def conv2d(x: Array, w: Array, *, impl: str = "custom_vjp") -> Array:
    """'SAME', stride-1 2-D convolution of NHWC ``x`` with HWIO ``w`` (odd kernel).

    ``impl``: 'xla' (``lax.conv_general_dilated`` + XLA autodiff; slow filter gradient inside
    ``lax.scan`` on CPU), 'custom_vjp' (hand-written canonical backward convs), 'custom_vjp_map'
    (same, plus vmap rules that avoid grouped convs for per-client weights), 'im2col' (patches
    + einsum; per-client weights become a batched matmul).  'custom_vjp*' have no forward mode
    (jvp), as for any ``jax.custom_vjp``; grad-of-grad through 'custom_vjp_map' is untested.

    Mixed dtypes are promoted (``jnp.result_type``) before the convolution; gradients flow back
    to each argument in its own dtype.
    """
    _check_shapes(x, w)
    dtype = jnp.result_type(x, w)
    x, w = x.astype(dtype), w.astype(dtype)
    if impl == "xla":
        return _canon(x, w, _same_padding(w.shape))
    if impl == "custom_vjp":
        return _conv_custom_vjp(x, w)
    if impl == "custom_vjp_map":
        return _conv_custom_vjp_map(x, w)
    if impl == "im2col":
        return _conv_im2col(x, w)
    raise ValueError(f"conv2d: unknown impl {impl!r}; expected one of {IMPLS}")


def upsample_nearest(x: Array, factor: int = 2) -> Array:
    """Nearest-neighbour upsampling of NHWC ``x`` by an integer ``factor`` (broadcast + reshape).

    Cheaper than ConvTranspose on CPU; follow it by a ``Conv`` to learn the upsampling filter.
    """
    if x.ndim != 4:
        raise ValueError(f"upsample_nearest: x must be NHWC (4-D), got shape {x.shape}")
    n, h, w, c = x.shape
    y = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return y.reshape(n, h * factor, w * factor, c)


def max_pool_2x2(x: Array) -> Array:
    """2x2 / stride-2 max pooling of NHWC ``x`` as a reshape + max (H and W even).

    Same values as ``nn.max_pool(x, (2, 2), strides=(2, 2))``; the gradient differs only on ties inside
    a window (split evenly here, all to one element there), and the U-Net pools ReLU outputs, whose ties
    are zeros where ReLU's own gradient is 0: the same gradients reach the params. Cheaper on XLA:CPU than
    reduce_window + select_and_scatter (docs/PERFORMANCE.md).
    """
    if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"max_pool_2x2: x must be NHWC with even H and W, got shape {x.shape}")
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Conv(nn.Module):
    """Drop-in for ``nn.Conv(features, (k, k), padding='SAME')`` backed by ``conv2d``.

    Param names/shapes match ``nn.Conv`` ('kernel' HWIO lecun_normal, 'bias' zeros) so checkpoints
    are interchangeable.  ``dtype`` is the computation dtype (e.g. bf16); params stay float32.
    """

    features: int
    kernel_size: int = 3
    use_bias: bool = True
    impl: str = "custom_vjp"
    dtype: Optional[Any] = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: Array, defer_bias: bool = False):
        """The convolution plus bias; with ``defer_bias`` returns ``(conv without bias, float32 bias)`` so a
        GroupNorm after it can fold the bias into its statistics (models/norm.py)."""
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype)
        raw_bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, raw_bias, dtype=self.dtype)
        y = conv2d(x, kernel, impl=self.impl)
        if defer_bias:
            return y, raw_bias if raw_bias is not None else jnp.zeros((self.features,), self.param_dtype)
        if bias is not None:
            y = y + bias
        return y
