"""Tests for fedtransfer_jax.style: AdaIN, the style net, Fourier restyling and the style bank.

Tiny shapes only (2-3 clients, 16-32 px); numerics are checked against numpy references and
hand-computed cases.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedtransfer_jax.style import (
    StyleNet,
    adain,
    feature_stats,
    fourier_restyle,
    init_style_net,
    low_freq_amplitude,
    style_loss_fn,
    style_partner,
    trainable_mask,
    window_radius,
)


def _toy_images(seed: int, n: int, h: int, w: int, tint=(1.0, 1.0, 1.0), gain: float = 0.5) -> np.ndarray:
    """Smooth random 'micrographs' with a per-client tint/contrast, float32 [n,h,w,3] in [0,1]."""
    rng = np.random.default_rng([seed, n, h, w])
    noise = rng.random((n, -(-h // 4), -(-w // 4)))
    base = np.repeat(np.repeat(noise, 4, axis=1), 4, axis=2)[:, :h, :w, None]  # blocky 'grains'
    base = base + 0.1 * rng.random((n, h, w, 1))
    img = 0.2 + gain * base * np.asarray(tint, np.float64)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- AdaIN


def test_feature_stats_matches_numpy():
    x = np.random.default_rng([1]).normal(size=(2, 5, 4, 3)).astype(np.float32)
    mean, std = feature_stats(jnp.asarray(x), eps=1e-5)
    chex.assert_shape([mean, std], (2, 3))
    chex.assert_type([mean, std], jnp.float32)
    np.testing.assert_allclose(mean, x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(x.var(axis=(1, 2)) + 1e-5), rtol=1e-5)


def test_adain_identity_and_hand_case():
    x = jnp.asarray(np.random.default_rng([2]).normal(size=(3, 6, 6, 4)), jnp.float32) * 2.0 + 1.0
    out = adain(x, *feature_stats(x))
    chex.assert_trees_all_close(out, x, atol=1e-5)
    # Hand case: channel values [0, 2, 0, 2] have mean 1, std 1 -> target mean 5, std 3 -> [2, 8, 2, 8].
    c = jnp.asarray([0.0, 2.0, 0.0, 2.0]).reshape(1, 2, 2, 1)
    got = adain(c, jnp.asarray([[5.0]]), jnp.asarray([[3.0]]), eps=0.0)
    chex.assert_trees_all_close(got.reshape(-1), jnp.asarray([2.0, 8.0, 2.0, 8.0]), atol=1e-6)


def test_adain_output_has_target_stats_and_jits():
    x = jnp.asarray(np.random.default_rng([3]).normal(size=(2, 8, 8, 5)), jnp.float32)
    m = jnp.asarray(np.random.default_rng([4]).normal(size=(2, 5)), jnp.float32)
    s = jnp.asarray(np.random.default_rng([5]).uniform(0.5, 2.0, size=(2, 5)), jnp.float32)
    out = jax.jit(adain)(x, m, s)
    om, os_ = feature_stats(out, eps=0.0)
    chex.assert_trees_all_close((om, os_), (m, s), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="channels"):
        adain(x, m[:, :3], s)


# ----------------------------------------------------------------------------- Fourier


def _np_low_freq_amplitude(images: np.ndarray, beta: float) -> np.ndarray:
    n, h, w, _ = images.shape
    b = int(np.floor(beta * min(h, w) / 2))
    out = np.zeros((n, 2 * b + 1, 2 * b + 1, 3))
    for i in range(n):
        for c in range(3):
            amp = np.fft.fftshift(np.abs(np.fft.fft2(images[i, :, :, c].astype(np.float64))))
            out[i, :, :, c] = amp[h // 2 - b : h // 2 + b + 1, w // 2 - b : w // 2 + b + 1]
    return out


def _np_fourier_restyle(images, target, beta, lam, clip=True):
    n, h, w, _ = images.shape
    b = int(np.floor(beta * min(h, w) / 2))
    out = np.zeros(images.shape)
    for i in range(n):
        for c in range(3):
            spec = np.fft.fftshift(np.fft.fft2(images[i, :, :, c].astype(np.float64)))
            amp, pha = np.abs(spec), np.angle(spec)
            win = (slice(h // 2 - b, h // 2 + b + 1), slice(w // 2 - b, w // 2 + b + 1))
            amp[win] = (1 - lam[i]) * amp[win] + lam[i] * target[i, :, :, c]
            out[i, :, :, c] = np.real(np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * pha))))
    return np.clip(out, 0, 1) if clip else out


def test_low_freq_amplitude_matches_numpy_and_is_not_image_shaped():
    x = _toy_images(0, 2, 8, 12)
    amp = low_freq_amplitude(jnp.asarray(x), beta=0.5)  # b = floor(0.5 * 8 / 2) = 2
    chex.assert_shape(amp, (2, 5, 5, 3))
    chex.assert_type(amp, jnp.float32)
    np.testing.assert_allclose(amp, _np_low_freq_amplitude(x, 0.5), rtol=1e-4, atol=1e-4)
    assert window_radius(32, 32, 0.1) == 1  # floor(0.1 * 32 / 2)


def test_low_freq_amplitude_hand_case_constant_image():
    # A constant image has all its energy at DC: |F(0)| = value * H * W.
    x = jnp.full((1, 8, 8, 3), 0.25, jnp.float32)
    amp = low_freq_amplitude(x, beta=0.5)
    expected = np.zeros((1, 5, 5, 3), np.float32)
    expected[0, 2, 2, :] = 0.25 * 64
    chex.assert_trees_all_close(amp, jnp.asarray(expected), atol=1e-4)
    # Restyling it with lam=1 towards another constant image gives that constant.
    target = low_freq_amplitude(jnp.full((1, 8, 8, 3), 0.7, jnp.float32), beta=0.5)
    chex.assert_trees_all_close(fourier_restyle(x, target, 0.5, 1.0), jnp.full_like(x, 0.7), atol=1e-5)


def test_fourier_restyle_matches_numpy_reference():
    x = _toy_images(1, 2, 8, 10)
    y = _toy_images(2, 2, 8, 10, tint=(1.2, 0.6, 0.3), gain=0.9)
    t = _np_low_freq_amplitude(y, 0.5)
    lam = np.array([0.3, 1.0], np.float32)
    for clip in (False, True):
        got = fourier_restyle(jnp.asarray(x), jnp.asarray(t, jnp.float32), 0.5, jnp.asarray(lam), clip=clip)
        np.testing.assert_allclose(got, _np_fourier_restyle(x, t, 0.5, lam, clip=clip), atol=1e-5)


def test_fourier_restyle_lam0_is_identity():
    x = jnp.asarray(_toy_images(3, 3, 16, 16))
    t = low_freq_amplitude(jnp.asarray(_toy_images(4, 3, 16, 16, tint=(0.2, 1.0, 1.4))), 0.25)
    out = jax.jit(fourier_restyle, static_argnums=(2,))(x, t, 0.25, 0.0)
    chex.assert_trees_all_close(out, x, atol=2e-6)


def test_fourier_swap_keeps_phase_and_takes_target_window():
    x = jnp.asarray(_toy_images(5, 2, 16, 16))
    y = jnp.asarray(_toy_images(6, 2, 16, 16, tint=(1.3, 0.8, 0.4), gain=0.8))
    beta = 0.25  # b = 2, 5x5 window
    t = low_freq_amplitude(y, beta)
    out = fourier_restyle(x, t, beta, 1.0, clip=False)
    assert float(jnp.max(jnp.abs(out - x))) > 1e-2  # the swap really changed the images
    # The output's own low-frequency window is the target's.
    chex.assert_trees_all_close(low_freq_amplitude(out, beta), t, rtol=1e-4, atol=1e-3)
    # Phase unchanged wherever both amplitudes are clearly non-zero (compare unit phasors).
    f_in = np.fft.fft2(np.asarray(x, np.float64), axes=(1, 2))
    f_out = np.fft.fft2(np.asarray(out, np.float64), axes=(1, 2))
    ok = (np.abs(f_in) > 1e-3) & (np.abs(f_out) > 1e-3)
    assert ok.mean() > 0.9
    u_in, u_out = f_in / np.abs(f_in).clip(1e-12), f_out / np.abs(f_out).clip(1e-12)
    np.testing.assert_allclose(u_out[ok], u_in[ok], atol=1e-3)


def test_fourier_errors_name_the_problem():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="does not fit"):
        low_freq_amplitude(x, beta=1.0)  # b = 4 -> 9 px window > 8 px image
    with pytest.raises(ValueError, match="target_amp_window"):
        fourier_restyle(x, jnp.zeros((1, 3, 3, 3)), beta=0.5, lam=1.0)


# ----------------------------------------------------------------------------- style network


@pytest.fixture(scope="module")
def net_and_params():
    """Tiny StyleNet; params filled from a seeded numpy He-normal draw on init's shapes.

    ``jax.eval_shape`` checks ``init_style_net``'s layout without compiling it (the compiled
    init costs ~10 s on a busy 2-core CPU, the numpy fill milliseconds).
    """
    model = StyleNet(features=(8, 16, 32))
    shapes = jax.eval_shape(functools.partial(init_style_net, model, image_size=16), jax.random.key(0))
    rng = np.random.default_rng([0])

    def fill(leaf):
        if len(leaf.shape) == 1:  # bias
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)

    return model, jax.tree.map(fill, shapes)


@pytest.fixture(scope="module")
def loss_and_grad(net_and_params):
    """One compiled value_and_grad of the style loss, shared by the tests (compiles are the cost)."""
    model, _ = net_and_params
    return jax.jit(jax.value_and_grad(functools.partial(style_loss_fn, model), has_aux=True))


def test_stylenet_shapes_and_range(net_and_params):
    model, params = net_and_params
    v = {"params": params}
    assert set(params) == {"encoder", "decoder"}
    chex.assert_shape(params["encoder"]["conv_0"]["kernel"], (3, 3, 3, 8))
    chex.assert_shape(params["decoder"]["to_rgb"]["kernel"], (3, 3, 8, 3))
    x = jnp.asarray(_toy_images(7, 2, 16, 16))

    @jax.jit
    def run(v, x):
        feats = model.apply(v, x, method=StyleNet.encode)
        mean, std = model.apply(v, x, method=StyleNet.style_stats)
        styled = model.apply(v, x, mean[::-1], std[::-1], method=StyleNet.stylize)
        alpha0 = model.apply(v, x, mean[::-1], std[::-1], 0.0, method=StyleNet.stylize)
        own = model.apply(v, x, mean, std, method=StyleNet.stylize)
        return feats, mean, std, styled, alpha0, own, model.apply(v, x)

    feats, mean, std, styled, alpha0, own, recon = run(v, x)
    chex.assert_shape(feats, [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 32)])
    chex.assert_shape([mean, std], (2, 8 + 16 + 32))  # every level's statistics, concatenated
    assert bool(jnp.all(std > 0))
    chex.assert_shape(styled, x.shape)
    chex.assert_type(styled, jnp.float32)
    assert bool(jnp.all((styled >= 0) & (styled <= 1)))
    assert float(jnp.abs(styled - recon).max()) > 1e-4  # the style really acts
    # alpha=0 is the plain reconstruction; the image's own statistics (almost exactly) too.
    chex.assert_trees_all_close(alpha0, recon, atol=1e-6)
    chex.assert_trees_all_close(own, recon, atol=1e-4)
    with pytest.raises(ValueError, match="divisible by 4"):
        jax.eval_shape(functools.partial(model.apply, method=StyleNet.encode), v, jnp.zeros((1, 18, 16, 3)))


def test_style_partner_is_derangement_of_real_examples():
    mask = jnp.asarray([True, False, True, True, False, True])
    partners = jax.jit(jax.vmap(style_partner, in_axes=(0, None)))(jax.random.split(jax.random.key(1), 200), mask)
    p = np.asarray(partners)
    real = np.flatnonzero(np.asarray(mask))
    for row in p:
        assert sorted(row[real].tolist()) == real.tolist()  # a permutation of the real examples
        assert np.all(row[real] != real)  # nobody takes its own style
        assert np.all(row[~np.asarray(mask)] == np.flatnonzero(~np.asarray(mask)))
    assert len({tuple(r) for r in p}) > 1  # actually random
    # A lone real example is paired with itself.
    chex.assert_trees_all_equal(style_partner(jax.random.key(0), jnp.asarray([False, True])), jnp.asarray([0, 1]))


def _style_batch(n_real: int = 3, size: int = 16):
    imgs = np.concatenate(
        [_toy_images(10, 2, size, size), _toy_images(11, 2, size, size, tint=(1.4, 0.7, 0.3), gain=0.8)]
    )
    mask = np.arange(4) < n_real
    return dict(images=jnp.asarray(imgs), labels=jnp.zeros((4, size, size), jnp.uint8), mask=jnp.asarray(mask))


def test_style_loss_masks_padding_and_freezes_encoder(net_and_params, loss_and_grad):
    model, params = net_and_params
    batch = _style_batch(n_real=3)
    key = jax.random.key(3)
    (loss, aux), grads = loss_and_grad(params, batch, key)
    assert np.isfinite(float(loss)) and float(aux["n_real"]) == 3.0
    chex.assert_trees_all_close(loss, aux["content"] + aux["style"] + aux["identity"], rtol=1e-6)
    # Padding content must not matter.
    noisy = dict(batch, images=batch["images"].at[3].set(jnp.asarray(np.random.default_rng([9]).random((16, 16, 3)))))
    chex.assert_trees_all_close(loss_and_grad(params, noisy, key)[0][0], loss, atol=1e-6)
    # All-padding batch: zero loss, zero (finite) gradient.
    (l0, _), g0 = loss_and_grad(params, dict(batch, mask=jnp.zeros(4, bool)), key)
    assert float(l0) == 0.0
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(g0))
    # Frozen encoder: exactly zero gradient; trainable encoder: non-zero gradient.
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["encoder"])) == 0.0
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["decoder"])) > 0.0
    model_t = StyleNet(features=(8, 16, 32), train_encoder=True)
    grads_t = jax.jit(jax.grad(lambda p: style_loss_fn(model_t, {"params": p}, batch, key)[0]))(params)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_t["encoder"])) > 0.0
    mask = trainable_mask(params, train_encoder=False)
    assert not any(jax.tree.leaves(mask["encoder"])) and all(jax.tree.leaves(mask["decoder"]))
    with pytest.raises(KeyError, match="mask"):
        style_loss_fn(model, params, {"images": batch["images"]}, key)


def test_style_loss_decreases_with_adam(net_and_params, loss_and_grad):
    _, params = net_and_params
    batch = _style_batch(n_real=4)
    opt = optax.adam(3e-3)
    key = jax.random.key(4)

    @jax.jit
    def update(g, s, p):
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, opt.init(params)
    losses = []
    for _ in range(20):
        (loss, _), g = loss_and_grad(p, batch, key)
        losses.append(float(loss))
        p, s = update(g, s, p)
    final = float(loss_and_grad(p, batch, key)[0][0])
    assert final < 0.6 * losses[0], (losses[0], final)
    chex.assert_trees_all_equal(p["encoder"], params["encoder"])  # frozen encoder untouched


def test_reflect_padded_conv_equals_valid_conv_of_reflect_padded_input():
    """StyleNet(padding='reflect') convs are VALID convs of the reflect-padded input (no zero frame)."""
    from fedtransfer_jax.style.features import reflect_conv

    net = StyleNet(features=(4, 8), padding="reflect")
    params = init_style_net(net, jax.random.PRNGKey(0), 16)
    x = jnp.asarray(_toy_images(9, 2, 16, 16))
    feats = net.apply({"params": params}, x, method=StyleNet.encode)
    k = params["encoder"]["conv_0"]
    ref = jax.nn.relu(reflect_conv(x * 2.0 - 1.0, k["kernel"]) + k["bias"])
    chex.assert_trees_all_close(feats[0], ref, atol=1e-5)
    zero = StyleNet(features=(4, 8), padding="zero")
    f0 = zero.apply({"params": params}, x, method=StyleNet.encode)[0]
    chex.assert_trees_all_close(
        f0[:, 1:-1, 1:-1], feats[0][:, 1:-1, 1:-1], atol=1e-5
    )  # same params, same interior
    assert float(jnp.abs(f0[:, 0] - feats[0][:, 0]).max()) > 1e-3  # only the border differs
    with pytest.raises(ValueError, match="padding"):
        init_style_net(StyleNet(features=(4, 8), padding="circular"), jax.random.PRNGKey(0), 16)
