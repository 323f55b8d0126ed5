"""U-Net grain-boundary segmenter: a pure flax module (explicit params, no mutable state).

GroupNorm instead of BatchNorm, so a client's forward pass depends on nothing but its params and its
batch: the model can be vmapped over clients and scanned over local steps without collections to thread.
Upsampling is nearest-neighbour + conv rather than ConvTranspose (ConvTranspose took ~25% of a small U-Net
step on XLA:CPU). The conv formulation (`conv_impl`) is chosen for speed inside scan/vmap, see models/conv.py.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedtransfer_jax.models import conv as conv_lib
from fedtransfer_jax.models import norm as norm_lib


def _groups(channels: int, groups: int) -> int:
    """Largest group count <= `groups` that divides `channels` (GroupNorm needs an exact split)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


NORM_IMPLS = ("flax", "fused")


def default_norm_impl(backend: str | None = None) -> str:
    """'fused' (models/norm.py: per-channel reductions, hand-written backward, the conv bias folded into the
    statistics): ~12-17 % less CPU time per U-Net step than nn.GroupNorm on the 2-core CPU and equal to it to
    ~1e-6 (tests/test_conv.py; docs/PERFORMANCE.md). Also the default elsewhere: it is fewer passes over
    memory on any backend (GPU not measured yet: benchmarks/gpu_check.sh times `/flax` against it)."""
    del backend
    return "fused"


def _norm(impl: str, groups: int, dtype: Any) -> nn.Module:
    """A GroupNorm layer; both impls are named GroupNorm_<i> with params scale/bias (checkpoints agree)."""
    if impl == "flax":
        return nn.GroupNorm(num_groups=groups, dtype=dtype)
    if impl == "fused":
        return norm_lib.GroupNorm(num_groups=groups, dtype=dtype)
    raise ValueError(f"unet: unknown norm impl {impl!r}; choose from {NORM_IMPLS}")


class ConvBlock(nn.Module):
    """Two (3x3 conv -> GroupNorm -> ReLU) layers."""

    features: int
    groups: int = 8
    conv_impl: str | None = None
    dtype: Any = None
    norm_impl: str = "fused"

    @nn.compact
    def __call__(self, x):
        groups = _groups(self.features, self.groups)
        for _ in range(2):
            conv = conv_lib.Conv(self.features, kernel_size=3, impl=self.conv_impl, dtype=self.dtype)
            if self.norm_impl == "fused":  # the conv's bias folds into the norm's statistics
                x = norm_lib.GroupNorm(num_groups=groups, dtype=self.dtype)(*conv(x, defer_bias=True))
            else:
                x = _norm(self.norm_impl, groups, self.dtype)(conv(x))
            x = nn.relu(x)
        return x


class UNet(nn.Module):
    """Encoder-decoder with skip connections; outputs per-pixel logits [B, H, W, num_classes].

    Class 0 = grain interior, class 1 = grain boundary. Input H and W must be divisible by
    2 ** (len(features) - 1).
    """

    features: Sequence[int] = (16, 32, 64)
    num_classes: int = 2
    groups: int = 8
    conv_impl: str | None = None  # None: conv.default_impl() for the backend
    dtype: Any = None
    remat: bool = False
    norm_impl: str | None = None  # None: default_norm_impl() ('fused' GroupNorm; 'flax' = nn.GroupNorm)
    fast_pool: bool = True  # conv.max_pool_2x2 (reshape + max; same gradients here) instead of nn.max_pool

    @nn.compact
    def __call__(self, x):
        block = nn.remat(ConvBlock) if self.remat else ConvBlock
        impl = self.conv_impl or conv_lib.default_impl()
        norm = self.norm_impl or default_norm_impl()
        x = x.astype(self.dtype) if self.dtype is not None else x
        skips = []
        for i, f in enumerate(self.features):
            x = block(f, self.groups, impl, self.dtype, norm, name=f"down_{i}")(x)
            if i < len(self.features) - 1:
                skips.append(x)
                x = conv_lib.max_pool_2x2(x) if self.fast_pool else nn.max_pool(x, (2, 2), strides=(2, 2))
        for i, f in reversed(list(enumerate(self.features[:-1]))):
            x = conv_lib.upsample_nearest(x, 2)
            x = conv_lib.Conv(f, kernel_size=3, impl=impl, dtype=self.dtype, name=f"up_proj_{i}")(x)
            x = jnp.concatenate([x, skips[i]], axis=-1)
            x = block(f, self.groups, impl, self.dtype, norm, name=f"up_{i}")(x)
        # The 1x1 head runs in float32 (a few % of the FLOPs): its bias/kernel gradients are sums over every
        # pixel of dlogits, which nearly cancel; rounding dlogits to bf16 first made them ~40 % off.
        x = x.astype(jnp.float32)
        logits = conv_lib.Conv(self.num_classes, kernel_size=1, impl=impl, dtype=jnp.float32, name="head")(x)
        return logits.astype(jnp.float32)


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


# ------------------------------------------------------------------------------ shapes -> FLOPs, bytes

# Tensors one 3x3 conv layer keeps for the backward pass of a local step, in units of its output: conv
# out, GroupNorm out, ReLU out and the custom conv's transposed operand (the 1x1 head keeps one).
# Calibrated on XLA's buffer plan of the vmapped round on the CPU (fl.strategy.probe_memory_model, U-Net
# 16/32/64 at 64 px, batch 4 and 8: 8.66 MB per image = 4.09 copies); the old nn.GroupNorm + nn.max_pool
# model kept ~5. `probe_memory_model` measures the real thing for any compiled round.
ACTIVATION_COPIES = 4


def _level(module_name: str) -> int:
    """Resolution level of a U-Net module from its name: down_i / up_i / up_proj_i -> i, head -> 0."""
    if module_name == "head":
        return 0
    tail = module_name.rsplit("_", 1)[-1]
    if not tail.isdigit():
        raise ValueError(f"unet shapes: cannot infer the resolution level of module {module_name!r}")
    return int(tail)


def conv_shapes(params, image_size: int) -> list[tuple[int, int, int, int, int]]:
    """(H, W, k, Cin, Cout) of every conv in a `UNet` params tree, at input size `image_size`.

    Level i runs at image_size / 2**i (down_i before its pool, up_proj_i / up_i after the upsample).
    """
    shapes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(p, "key", str(p)) for p in path]
        if keys[-1] != "kernel":
            continue
        hw = image_size // 2 ** _level(keys[0])
        kh, kw, cin, cout = leaf.shape
        if kh != kw:
            raise ValueError(f"unet shapes: non-square kernel at {'/'.join(keys)}: {leaf.shape}")
        shapes.append((hw, hw, kh, cin, cout))
    return shapes


def activation_bytes_per_image(
    params, image_size: int, *, dtype_bytes: int = 4, copies: float = ACTIVATION_COPIES, in_channels: int = 3
) -> float:
    """Bytes of saved forward tensors one image costs in a training step: `copies` per 3x3 conv output,
    one per 1x1 conv output, plus the (decoded, float) input image; `dtype_bytes` 2 for bf16 compute."""
    floats = sum(
        h * w * cout * (copies if k > 1 else 1) for h, w, k, _, cout in conv_shapes(params, image_size)
    )
    floats += image_size * image_size * in_channels
    return float(dtype_bytes * floats)
