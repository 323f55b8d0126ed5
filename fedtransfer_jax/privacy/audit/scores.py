"""How close a reconstruction is to the true image, relative to what knowing the lab already gives.

Every attack of the audit is scored the same way: a recovered image against the true one (SSIM, PSNR,
boundary F1 of its structure, correlation of the low-pass images and, for Fourier messages, of the log
low-frequency amplitudes), each next to the same score of random *other* real images of the lab. That
baseline is what the attacker gets for free from knowing which lab a client is, so only the advantage over
it is leakage. Plain numpy (skimage, scipy): independent of the attack code that produced the image.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from fedtransfer_jax.metrics.boundary import boundary_prf


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    win = min(7, min(a.shape[:2]) - (1 - min(a.shape[:2]) % 2))  # odd, <= the image side
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0, win_size=win))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def _grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float64).mean(-1)


def edge_map(image: np.ndarray, fraction: float) -> np.ndarray:
    """The `fraction` of pixels with the largest Sobel gradient magnitude: an attacker's boundary guess
    without a segmenter (`fraction` from the lab's typical boundary density, which it may know)."""
    g = _grey(image)
    mag = np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1))
    return mag >= np.quantile(mag, 1.0 - fraction)


def lowpass_correlation(a: np.ndarray, b: np.ndarray, sigma: float = 2.0) -> float:
    """Pearson correlation of the Gaussian-blurred grey images: does the coarse layout match?"""
    x, y = ndimage.gaussian_filter(_grey(a), sigma).ravel(), ndimage.gaussian_filter(_grey(b), sigma).ravel()
    if x.std() < 1e-12 or y.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def amplitude_correlation(a: np.ndarray, b: np.ndarray, beta: float) -> float:
    """Pearson correlation of the log low-frequency Fourier amplitudes (the centred (2k+1)^2 window that
    FedDG-ELCFS shares, k = floor(beta min(H, W) / 2)); numpy, independent of style/fourier.py."""
    h, w = np.asarray(a).shape[:2]
    k = int(np.floor(beta * min(h, w) / 2))

    def window(x):
        amp = np.abs(np.fft.fftshift(np.fft.fft2(np.asarray(x, np.float64), axes=(0, 1)), axes=(0, 1)))
        return np.log1p(amp[h // 2 - k : h // 2 + k + 1, w // 2 - k : w // 2 + k + 1]).ravel()

    x, y = window(a), window(b)
    if x.std() < 1e-12 or y.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def score_reconstruction(
    recovered: np.ndarray,
    true_image: np.ndarray,
    true_label: np.ndarray,
    baseline_images: np.ndarray,
    *,
    boundary_fraction: float,
    tolerance: float = 2.0,
    boundary_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    beta: float | None = None,
    twin: bool = False,
    calibrate: bool = False,
) -> dict:
    """Scores of `recovered` and, as `baseline_*`, the mean scores of `baseline_images` [B, H, W, 3] (other
    real images of the same lab) against the true image and label.

    `boundary_fn(image) -> bool [H, W]` predicts boundaries (e.g. a trained segmenter); default: the
    thresholded edge map. `beta`: also score the Fourier low-frequency amplitude correlation. `twin`: an
    amplitude spectrum cannot tell an image from its 180-degree rotation (the "twin image" of phase
    retrieval), so score whichever of the two has the higher low-pass correlation (baselines likewise).
    `calibrate`: first give the recovered image the lab's grey levels (per-channel mean and std of the
    baseline images, which an attacker who knows the lab has): gradient matching recovers structure up to
    an affine intensity change, which SSIM and PSNR would otherwise punish.
    """
    if calibrate:
        ref = np.asarray(baseline_images, np.float64)
        mu_lab, sd_lab = ref.mean(axis=(0, 1, 2)), ref.std(axis=(1, 2)).mean(0)
        r = np.asarray(recovered, np.float64)
        r = (r - r.mean(axis=(0, 1))) / (r.std(axis=(0, 1)) + 1e-6) * sd_lab + mu_lab
        recovered = np.clip(r, 0.0, 1.0)
    boundary_fn = boundary_fn or (lambda im: edge_map(im, boundary_fraction))

    def scores(im):
        if twin:
            flipped = im[::-1, ::-1]
            if lowpass_correlation(flipped, true_image) > lowpass_correlation(im, true_image):
                im = flipped
        out = {
            "ssim": ssim(im, true_image),
            "psnr": psnr(im, true_image),
            "boundary_f1": boundary_prf(boundary_fn(im), np.asarray(true_label) > 0, tolerance)["f1"],
            "lowpass_corr": lowpass_correlation(im, true_image),
        }
        if beta is not None:
            out["amplitude_corr"] = amplitude_correlation(im, true_image, beta)
        return out

    rec = scores(np.clip(np.asarray(recovered), 0.0, 1.0))
    base = [scores(np.asarray(b)) for b in baseline_images]
    out = dict(rec)
    for k in rec:
        vals = np.array([b[k] for b in base])
        out[f"baseline_{k}"] = float(vals.mean())
        out[f"baseline_{k}_std"] = float(vals.std())
    return out


def summarize(rows: Sequence[dict]) -> dict:
    """Mean and standard deviation over victims of every score (and `advantage_<score>` = recovered minus
    baseline, the attack's gain over knowing only the lab)."""
    keys = [k for k in rows[0] if not k.endswith("_std")]
    out: dict = {"n": len(rows)}
    for k in keys:
        vals = np.array([r[k] for r in rows], np.float64)
        out[k], out[k + "_std"] = float(vals.mean()), float(vals.std())
    for k in [k for k in keys if not k.startswith("baseline_")]:
        if "baseline_" + k in out:
            adv = np.array([r[k] - r["baseline_" + k] for r in rows])
            out["advantage_" + k], out["advantage_" + k + "_std"] = float(adv.mean()), float(adv.std())
    return out


def score_victims(
    images: np.ndarray,
    labels: np.ndarray,
    victims: Sequence[int],
    attack: Callable[[int, int, int], np.ndarray],
    score_kwargs: dict,
    control: bool,
) -> tuple[dict, dict | None, np.ndarray]:
    """The protocol every message-inversion attack is scored by. For victim v (index vi): `attack(v, v, vi)`
    inverts v's own message, scored against v with the lab's other images as the baseline; the control
    `attack(other, v, vi)` inverts the message of another image of the lab (`others[vi % len(others)]`),
    scored against v with the remaining images as the baseline: what the lab's style gives without v's
    message. Returns (summary, control summary or None, recovered images [V, H, W, 3])."""
    rows, control_rows, recs = [], [], []
    for vi, v in enumerate(victims):
        v = int(v)
        others = np.array([i for i in range(len(images)) if i != v])
        kwargs = dict(boundary_fraction=float((labels[others] > 0).mean()), **score_kwargs)
        rec = attack(v, v, vi)
        rows.append(score_reconstruction(rec, images[v], labels[v], images[others], **kwargs))
        recs.append(rec)
        if control:
            other = int(others[vi % len(others)])
            ctl = attack(other, v, vi)
            rest = np.array([i for i in others if i != other])
            control_rows.append(score_reconstruction(ctl, images[v], labels[v], images[rest], **kwargs))
    return summarize(rows), (summarize(control_rows) if control else None), np.stack(recs)
