"""Fourier-amplitude style exchange (FedDG-ELCFS, Liu et al., CVPR 2021).

The low-frequency part of an image's Fourier *amplitude* spectrum encodes global
appearance (brightness, contrast, tint, slow shading), while the *phase* carries the
geometry (where the grain boundaries are). A client therefore shares only a small,
centred window of the low-frequency amplitude -- ``[2b+1, 2b+1, 3]`` numbers per image,
never the image's spatial shape -- and other clients paste that amplitude into their own
images while keeping their own phase, so labels remain valid.

Conventions: images are NHWC float in ``[0, 1]``; the FFT is 2-D over (H, W) per channel;
the window is taken after ``fftshift`` so that the DC term sits at ``(H//2, W//2)`` and
the window covers frequencies ``-b..b`` on both axes (symmetric, so the restyled
spectrum stays Hermitian and the inverse FFT stays real for real inputs).

``beta`` is a static Python float (it fixes the window shape); ``lam`` may be traced.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

Array = jnp.ndarray


def window_radius(height: int, width: int, beta: float) -> int:
    """Half-size ``b = floor(beta * min(H, W) / 2)`` of the shared low-frequency window.

    Raises ValueError if the ``(2b+1)`` window does not fit in the spectrum, since a
    silently cropped window would not be comparable between clients.
    """
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    b = int(math.floor(float(beta) * min(height, width) / 2))
    if 2 * b + 1 > min(height, width):
        raise ValueError(
            f"beta={beta} gives a {2 * b + 1}-px window that does not fit a {height}x{width} image"
        )
    return b


def _check_images(images: Array) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B,H,W,3], got shape {tuple(images.shape)}")


def _shifted_spectrum(images: Array) -> Array:
    """Centred (fftshifted) complex spectrum over the spatial axes, ``[B, H, W, 3]``."""
    spec = jnp.fft.fft2(images.astype(jnp.float32), axes=(1, 2))
    return jnp.fft.fftshift(spec, axes=(1, 2))


def _window_slices(height: int, width: int, b: int) -> tuple[slice, slice]:
    ch, cw = height // 2, width // 2
    return slice(ch - b, ch + b + 1), slice(cw - b, cw + b + 1)


def low_freq_amplitude(images: Array, beta: float) -> Array:
    """Centred low-frequency amplitude window: what a client shares as its Fourier style.

    Args:
      images: ``[B, H, W, 3]`` in ``[0, 1]``.
      beta: static window fraction; ``b = floor(beta * min(H, W) / 2)``.

    Returns:
      ``[B, 2b+1, 2b+1, 3]`` float32 amplitudes (DC at the centre).
    """
    _check_images(images)
    _, h, w, _ = images.shape
    b = window_radius(h, w, beta)
    sh, sw = _window_slices(h, w, b)
    return jnp.abs(_shifted_spectrum(images))[:, sh, sw, :]


def fourier_restyle(
    images: Array,
    target_amp_window: Array,
    beta: float,
    lam: float | Array = 1.0,
    clip: bool = True,
) -> Array:
    """Re-render images with another client's low-frequency amplitude, keeping own phase.

    Inside the window the amplitude becomes ``(1 - lam) * own + lam * target``; outside it
    and the whole phase are unchanged. The inverse FFT's real part is returned, clipped to
    ``[0, 1]`` (``clip=False`` exposes the raw result, used to test phase preservation).

    Args:
      images: ``[B, H, W, 3]``.
      target_amp_window: ``[B, 2b+1, 2b+1, 3]`` or ``[2b+1, 2b+1, 3]`` (one style for all).
      beta: static window fraction, must match the one used to build the window.
      lam: interpolation weight, scalar or ``[B]``; 0 returns the input.
      clip: clip the output to ``[0, 1]``.

    Returns:
      ``[B, H, W, 3]`` float32 images.
    """
    _check_images(images)
    bsz, h, w, _ = images.shape
    b = window_radius(h, w, beta)
    want = (2 * b + 1, 2 * b + 1, 3)
    if tuple(target_amp_window.shape[-3:]) != want:
        raise ValueError(
            f"target_amp_window has shape {tuple(target_amp_window.shape)}, expected [..., {want}] "
            f"for beta={beta} on {h}x{w} images"
        )
    target = jnp.broadcast_to(target_amp_window.astype(jnp.float32), (bsz, *want))
    lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), (bsz,))[:, None, None, None]

    spec = _shifted_spectrum(images)
    amp, phase = jnp.abs(spec), jnp.angle(spec)
    sh, sw = _window_slices(h, w, b)
    mixed = (1.0 - lam) * amp[:, sh, sw, :] + lam * target
    amp = amp.at[:, sh, sw, :].set(mixed)
    new_spec = jnp.fft.ifftshift(amp * jnp.exp(1j * phase), axes=(1, 2))
    out = jnp.real(jnp.fft.ifft2(new_spec, axes=(1, 2))).astype(jnp.float32)
    return jnp.clip(out, 0.0, 1.0) if clip else out


__all__ = ["window_radius", "low_freq_amplitude", "fourier_restyle"]
