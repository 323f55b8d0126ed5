"""FedTransfer's style-sharing protocol, client side and server side.

1. (AdaIN variant) the style network is trained federatedly with the segmentation engine (fl/round.py);
2. every client computes the style statistics of a sample of its own images (`client_style_message`);
3. the message crosses the client boundary (fl.boundary.send_to_server: it lands in the privacy ledger);
4. the server stacks the messages into a `StyleBank` and broadcasts it;
5. during segmentation training every client mixes its batches with its own images re-rendered in
   foreign styles (`make_restyle_transform`, inside the jitted local step), or restyles its training set
   once up front (`precompute_restyled`). Labels never change: restyling keeps the geometry.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.style.bank import StyleBank, restyle_batch
from fedtransfer_jax.style.fourier import fourier_restyle, low_freq_amplitude
from fedtransfer_jax.style.network import StyleNet

MODES = ("adain", "fourier")


def style_sample(mask: np.ndarray, k: int, seed: int, client_id: int) -> np.ndarray:
    """Indices of up to k real examples of one client whose statistics it shares."""
    real = np.flatnonzero(mask)
    rng = np.random.default_rng([seed, 0x57, client_id])
    return np.sort(rng.permutation(real)[:k])


def make_renderer(
    mode: str,
    *,
    style_net: StyleNet | None = None,
    style_params: Any = None,
    alpha: float = 1.0,
    beta: float = 0.1,
) -> Callable:
    """`apply_style` for `restyle_batch`: (images, mean, std) for AdaIN, (images, amp[, lam]) for Fourier."""
    if mode == "adain":
        return functools.partial(
            style_net.apply, {"params": style_params}, alpha=alpha, method=StyleNet.stylize
        )
    if mode == "fourier":
        return lambda images, amp, lam=1.0: fourier_restyle(images, amp, beta, lam)
    raise ValueError(f"config key style mode: unknown {mode!r}; choose from {MODES}")


def client_style_message(
    images: jax.Array,
    mode: str,
    *,
    style_net: StyleNet | None = None,
    style_params: Any = None,
    beta: float = 0.1,
) -> dict:
    """What one client shares: per-image style vectors of `images` [K,H,W,3] (never the images)."""
    if mode == "adain":
        mean, std = style_net.apply({"params": style_params}, images, method=StyleNet.style_stats)
        return {"adain_mean": mean, "adain_std": std}
    return {"fourier_amp": low_freq_amplitude(images, beta)}


def make_restyle_transform(
    bank: StyleBank,
    mode: str,
    render: Callable,
    *,
    mix_prob: float,
    lam_range: tuple[float, float] = (1.0, 1.0),
) -> Callable:
    """A client batch transform for fl.client.make_client_update: restyles a fraction of each batch."""

    def transform(batch: dict, client_id: jax.Array, rng: jax.Array) -> dict:
        k_style, k_lam = jax.random.split(rng)
        apply_style = render
        if mode == "fourier":
            lam = jax.random.uniform(
                k_lam, (batch["images"].shape[0],), minval=lam_range[0], maxval=lam_range[1]
            )
            apply_style = lambda images, amp: render(images, amp, lam)
        images = restyle_batch(
            batch["images"], bank, client_id, k_style, mode=mode, apply_style=apply_style, mix_prob=mix_prob
        )
        return {**batch, "images": images}

    return transform


def precompute_restyled(
    images: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    bank: StyleBank,
    mode: str,
    render: Callable,
    *,
    copies: int,
    seed: int,
    lam_range: tuple[float, float] = (1.0, 1.0),
    batch: int = 16,
):
    """Every client's training set plus `copies` restyled versions of it, each image in a random foreign
    style. Returns padded arrays [C, N * (1 + copies), ...] and the new mask (done once, on each client)."""
    transform = jax.jit(make_restyle_transform(bank, mode, render, mix_prob=1.0, lam_range=lam_range))
    c, n = mask.shape
    out_images = [images]
    for copy in range(copies):
        styled = np.empty_like(images)
        for cid in range(c):
            for s in range(0, n, batch):
                chunk = images[cid, s : s + batch]
                m = len(chunk)
                if m < batch:
                    chunk = np.concatenate([chunk, np.zeros((batch - m,) + chunk.shape[1:], chunk.dtype)])
                key = jax.random.fold_in(
                    jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), copy), cid), s
                )
                res = transform({"images": jnp.asarray(chunk)}, jnp.int32(cid), key)["images"]
                styled[cid, s : s + m] = np.asarray(res)[:m]
        out_images.append(styled)
    return (
        np.concatenate(out_images, axis=1),
        np.concatenate([labels] * (1 + copies), axis=1),
        np.concatenate([mask] * (1 + copies), axis=1),
    )
