"""Tests for fedtransfer_jax.models.conv: every impl matches 'xla' (and 'xla' matches numpy)."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedtransfer_jax.models.conv import (
    IMPLS,
    Conv,
    conv2d,
    default_impl,
    extract_patches,
    upsample_nearest,
)

FAST_IMPLS = [i for i in IMPLS if i != "xla"]
SHAPES = [(1, 3, 8), (3, 3, 8), (1, 8, 16), (3, 8, 16)]  # (kernel, in, out)
TOL = dict(atol=1e-4, rtol=1e-4)


def _data(k: int, cin: int, cout: int, seed: int, clients: int | None = None):
    """Deterministic x [.., 2, 6, 5, cin], w [.., k, k, cin, cout] (non-square image on purpose)."""
    rng = np.random.default_rng([seed, k, cin, cout])
    lead = () if clients is None else (clients,)
    x = rng.standard_normal(lead + (2, 6, 5, cin)).astype(np.float32)
    w = (rng.standard_normal(lead + (k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(w)


def _numpy_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Independent reference: explicit 'SAME' stride-1 cross-correlation in numpy (float64)."""
    kh, kw, _, cout = w.shape
    n, h, wd, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((n, h, wd, cout))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", xp[:, i : i + h, j : j + wd, :], w[i, j].astype(np.float64))
    return out


def _loss(impl: str):
    """A non-linear scalar loss so gradients depend on every output element differently."""
    return lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, impl=impl)) * jnp.arange(1.0, 1.0 + w.shape[-1]))


@pytest.mark.parametrize("k,cin,cout", SHAPES)
def test_xla_matches_numpy(k, cin, cout):
    x, w = _data(k, cin, cout, seed=0)
    y = conv2d(x, w, impl="xla")
    chex.assert_shape(y, (2, 6, 5, cout))
    chex.assert_trees_all_close(y, _numpy_conv(np.asarray(x), np.asarray(w)).astype(np.float32), **TOL)


def test_filter_grad_matches_numpy():
    """dL/dw for L = sum(conv * g) is the correlation of padded x with g: check custom_vjp against numpy."""
    x, w = _data(3, 3, 8, seed=1)
    g = np.random.default_rng([1, 99]).standard_normal((2, 6, 5, 8)).astype(np.float32)
    dw = jax.grad(lambda w: jnp.sum(conv2d(x, w, impl="custom_vjp") * g))(w)
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.stack([np.stack([np.einsum("nhwc,nhwo->co", xp[:, i : i + 6, j : j + 5], g) for j in range(3)])
                    for i in range(3)])
    chex.assert_trees_all_close(dw, ref.astype(np.float32), **TOL)


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("k,cin,cout", SHAPES)
def test_value_and_grads_match_xla(impl, k, cin, cout):
    x, w = _data(k, cin, cout, seed=2)
    chex.assert_trees_all_close(conv2d(x, w, impl=impl), conv2d(x, w, impl="xla"), **TOL)
    got = jax.jit(jax.grad(_loss(impl), (0, 1)))(x, w)
    ref = jax.grad(_loss("xla"), (0, 1))(x, w)
    chex.assert_trees_all_close(got, ref, **TOL)


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize(
    "k,cin,cout,in_axes",
    [s + ((0, 0),) for s in SHAPES] + [(3, 8, 16, (None, 0)), (3, 8, 16, (0, None))],
)
def test_vmap_over_clients_matches_xla(impl, k, cin, cout, in_axes):
    """Per-client weights (and/or per-client data) under vmap, value and both gradients."""
    xs, ws = _data(k, cin, cout, seed=3, clients=3)
    x = xs if in_axes[0] == 0 else xs[0]
    w = ws if in_axes[1] == 0 else ws[0]

    def vg(impl_):
        return jax.vmap(jax.value_and_grad(_loss(impl_), (0, 1)), in_axes)(x, w)

    chex.assert_trees_all_close(jax.jit(lambda: vg(impl))(), vg("xla"), **TOL)


def _sgd_scan(impl: str, w, x, steps: int = 3):
    """A few SGD steps (small lr so float32 rounding differences are not amplified)."""

    def step(w, _):
        return w - 1e-3 * jax.grad(lambda w: _loss(impl)(x, w))(w), None

    return lax.scan(step, w, None, length=steps)[0]


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("k,cin,cout", [(1, 3, 8), (3, 8, 16)])
def test_scan_sgd_matches_xla(impl, k, cin, cout):
    x, w = _data(k, cin, cout, seed=4)
    chex.assert_trees_all_close(jax.jit(_sgd_scan, static_argnums=0)(impl, w, x), _sgd_scan("xla", w, x), **TOL)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_vmap_of_scan_sgd_matches_xla(impl):
    """The federated-round shape: vmap(clients) of scan(local steps) of grad."""
    xs, ws = _data(3, 3, 8, seed=5, clients=2)
    run = lambda impl_: jax.vmap(lambda w, x: _sgd_scan(impl_, w, x))(ws, xs)  # noqa: E731
    chex.assert_trees_all_close(jax.jit(lambda: run(impl))(), run("xla"), **TOL)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_checkpoint_and_second_call(impl):
    x, w = _data(3, 3, 8, seed=6)
    got = jax.grad(jax.checkpoint(_loss(impl)), (0, 1))(x, w)
    chex.assert_trees_all_close(got, jax.grad(_loss("xla"), (0, 1))(x, w), **TOL)


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_inputs(impl):
    """bf16 in -> bf16 out and bf16 grads, close to the float32 result at bf16 precision."""
    x, w = _data(3, 8, 16, seed=7)
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    y = conv2d(xb, wb, impl=impl)
    assert y.dtype == jnp.bfloat16
    chex.assert_trees_all_close(y.astype(jnp.float32), conv2d(x, w, impl="xla"), atol=0.1, rtol=0.05)
    gx, gw = jax.grad(lambda x, w: jnp.sum(conv2d(x, w, impl=impl).astype(jnp.float32) ** 2), (0, 1))(xb, wb)
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
    rx, rw = jax.grad(lambda x, w: jnp.sum(conv2d(x, w, impl="xla") ** 2), (0, 1))(x, w)
    scale = lambda a: float(jnp.max(jnp.abs(a)))  # noqa: E731
    assert scale(gx.astype(jnp.float32) - rx) < 0.05 * scale(rx)
    assert scale(gw.astype(jnp.float32) - rw) < 0.05 * scale(rw)


def test_mixed_dtypes_promote():
    x, w = _data(3, 3, 8, seed=8)
    y = conv2d(x.astype(jnp.bfloat16), w, impl="custom_vjp")
    assert y.dtype == jnp.float32
    gx = jax.grad(lambda x: jnp.sum(conv2d(x, w, impl="custom_vjp")))(x.astype(jnp.bfloat16))
    assert gx.dtype == jnp.bfloat16


def test_extract_patches_order_matches_hwio():
    x, _ = _data(3, 2, 1, seed=9)
    p = extract_patches(x, 3, 3)
    chex.assert_shape(p, (2, 6, 5, 18))
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    # patch channel (i*3 + j)*C + c is xp[n, h+i, w+j, c]
    np.testing.assert_array_equal(np.asarray(p[0, 2, 3, (2 * 3 + 1) * 2 + 1]), xp[0, 4, 4, 1])


def test_errors_name_the_problem():
    x, w = _data(3, 3, 8, seed=10)
    with pytest.raises(ValueError, match="odd"):
        conv2d(x, jnp.zeros((2, 2, 3, 8)))
    with pytest.raises(ValueError, match="in-channels"):
        conv2d(x, jnp.zeros((3, 3, 4, 8)))
    with pytest.raises(ValueError, match="unknown impl"):
        conv2d(x, w, impl="winograd")
    with pytest.raises(ValueError, match="NHWC"):
        conv2d(x[0], w)


def test_upsample_nearest_matches_numpy_repeat():
    x = jnp.asarray(np.random.default_rng([11]).standard_normal((2, 3, 4, 5)).astype(np.float32))
    ref = np.repeat(np.repeat(np.asarray(x), 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(np.asarray(upsample_nearest(x, 2)), ref)
    chex.assert_shape(upsample_nearest(x, 3), (2, 9, 12, 5))


@pytest.mark.parametrize("k", [1, 3])
def test_conv_module_matches_flax_conv(k):
    x, _ = _data(k, 3, 8, seed=12)
    ours = Conv(features=8, kernel_size=k)
    ref = nn.Conv(features=8, kernel_size=(k, k), padding="SAME")
    key = jax.random.fold_in(jax.random.key(0), k)
    p_ours, p_ref = ours.init(key, x), ref.init(key, x)
    chex.assert_trees_all_equal_shapes_and_dtypes(p_ours, p_ref)
    chex.assert_trees_all_close(p_ours, p_ref)  # same initialisers, same key -> same params
    p = jax.tree.map(lambda a: a + 0.1, p_ref)  # non-zero bias so it is exercised
    chex.assert_trees_all_close(ours.apply(p, x), ref.apply(p, x), **TOL)


def test_conv_module_bf16_compute_keeps_f32_params():
    x, _ = _data(3, 3, 8, seed=13)
    m = Conv(features=4, dtype=jnp.bfloat16, use_bias=False)
    params = m.init(jax.random.key(1), x)
    assert set(params["params"]) == {"kernel"}
    assert params["params"]["kernel"].dtype == jnp.float32
    assert m.apply(params, x).dtype == jnp.bfloat16


def test_default_impl_is_known():
    assert default_impl() in IMPLS
    assert default_impl("cpu") in IMPLS and default_impl("gpu") in IMPLS


# ------------------------------------------------------------------------------ GroupNorm, max pool, U-Net


@pytest.mark.parametrize("channels,groups", [(16, 8), (32, 8), (6, 3), (8, 1)])
@pytest.mark.parametrize("with_shift", [False, True])
def test_fused_group_norm_matches_flax(channels, groups, with_shift):
    """models/norm.py's GroupNorm (two passes, hand-written backward, optional folded-in conv bias) against
    nn.GroupNorm on x + shift: values and gradients for x, shift, scale and bias."""
    from fedtransfer_jax.models.norm import GroupNorm

    rng = np.random.default_rng([channels, groups])
    x = jnp.asarray(rng.standard_normal((3, 5, 7, channels)) * 2 + 0.5, jnp.float32)
    shift = jnp.asarray(rng.standard_normal(channels) if with_shift else np.zeros(channels), jnp.float32)
    w = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    ref, ours = nn.GroupNorm(num_groups=groups), GroupNorm(num_groups=groups)
    p = jax.tree.map(
        lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape), a.dtype), ref.init(jax.random.key(0), x)
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(p, ours.init(jax.random.key(0), x))
    loss_ref = lambda p, x, s: jnp.sum(jnp.sin(ref.apply(p, x + s)) * w)  # noqa: E731
    loss_ours = lambda p, x, s: jnp.sum(jnp.sin(ours.apply(p, x, s)) * w)  # noqa: E731
    chex.assert_trees_all_close(ours.apply(p, x, shift), ref.apply(p, x + shift), atol=2e-6, rtol=1e-5)
    g_ref, g_ours = jax.grad(loss_ref, (0, 1, 2))(p, x, shift), jax.grad(loss_ours, (0, 1, 2))(p, x, shift)
    chex.assert_trees_all_close(g_ours[:2], g_ref[:2], atol=1e-5, rtol=1e-4)
    # d shift: with one channel per group the shift cancels and both are rounding noise around 0.
    chex.assert_trees_all_close(g_ours[2], g_ref[2], atol=1e-4 if groups == channels else 1e-5, rtol=1e-4)


def test_fused_group_norm_under_vmap_and_bf16():
    from fedtransfer_jax.models.norm import GroupNorm

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 3, 4, 4, 16)), jnp.float32)  # [clients, B, H, W, C]
    ref, ours = nn.GroupNorm(num_groups=8), GroupNorm(num_groups=8)
    p = ref.init(jax.random.key(0), x[0])
    ps = jax.tree.map(lambda a: jnp.stack([a, a * 1.5 + 0.1]), p)  # per-client params
    f = lambda m: jax.vmap(jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))))  # noqa: E731
    chex.assert_trees_all_close(f(ours)(ps, x), f(ref)(ps, x), atol=1e-5, rtol=1e-4)
    yb = ours.apply(p, x[0].astype(jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16  # statistics in float32, output in the input's dtype
    chex.assert_trees_all_close(yb.astype(jnp.float32), ref.apply(p, x[0]), atol=0.05, rtol=0.05)


def test_max_pool_2x2_matches_flax_values_and_relu_gradients():
    from fedtransfer_jax.models.conv import max_pool_2x2

    x, _ = _data(3, 3, 8, seed=14)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)))[:, :6, :6]  # even H, W
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
    chex.assert_trees_all_equal(max_pool_2x2(x), ref(x))
    # On ReLU outputs (what the U-Net pools) tied zeros get no gradient either way: identical gradients.
    w = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 3, 3)), jnp.float32)
    g = lambda pool: jax.grad(lambda x: jnp.sum(pool(jax.nn.relu(x)) * w))(x)  # noqa: E731
    chex.assert_trees_all_close(g(max_pool_2x2), g(ref), atol=1e-7)
    with pytest.raises(ValueError, match="even H and W"):
        max_pool_2x2(jnp.ones((1, 3, 4, 2)))


def test_unet_fast_paths_match_the_flax_layers():
    """The default U-Net (fused GroupNorm with the conv bias folded in, reshape max pool) computes the same
    function and gradients as the plain flax layers, with the same params tree."""
    from fedtransfer_jax.models.unet import UNet

    x = jnp.asarray(np.random.default_rng(5).random((2, 16, 16, 3)), jnp.float32)
    fast = UNet(features=(8, 16), conv_impl="custom_vjp")
    plain = UNet(features=(8, 16), conv_impl="custom_vjp", norm_impl="flax", fast_pool=False)
    p = plain.init(jax.random.key(0), x)
    p = jax.tree.map(
        lambda a: a + 0.05 * jnp.asarray(np.random.default_rng(1).standard_normal(a.shape), a.dtype), p
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(p, fast.init(jax.random.key(0), x))
    chex.assert_trees_all_close(fast.apply(p, x), plain.apply(p, x), atol=1e-5, rtol=1e-4)
    g = lambda m: jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x))))(p)  # noqa: E731
    chex.assert_trees_all_close(g(fast), g(plain), atol=1e-4, rtol=1e-3)
