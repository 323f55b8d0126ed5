"""A segmenter with no learning: adaptive threshold + the project's clean-up (thin lines, close gaps).

It is the reference a trained model must beat to be worth using, and the baseline the issue tracker quotes
for real micrographs ("adaptive threshold + skeleton"). Boundaries are thin lines darker (etched bright
field) or brighter (SEM, dark field) than their local surroundings, so a pixel is a boundary candidate
when it lies more than `offset` local standard deviations beyond the local mean of a window a few grains
wide. Which side is "beyond" is decided per image by the sign of the skew of the local contrast: thin
lines are the short tail of the distribution (dark lines: a long dark tail, negative skew). The
candidates then go through the same clean-up as a model's thresholded map (`postprocess_select.clean_up`)
and are thinned to 1-px lines (the "skeleton"), dilated to `line_width`.

What `adaptive_threshold` cannot do, by construction: colour-only contrast (tint etching, EBSD maps),
where grey levels do not mark the boundary. `colour_edges` is the classical answer there: the largest
Sobel gradient over the colour channels, its bright tail by the same local rule, thinned (a boundary
between two flat grains is one edge). Neither sees a boundary fainter than the grains' own texture.
That is the point of a reference: where it scores well, a model must score better.

    python -m fedtransfer_jax.evaluate --baseline adaptive_threshold --data_dir D --out F
    python -m fedtransfer_jax.evaluate --baseline colour_edges --data_dir D --out F
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

from fedtransfer_jax.metrics import postprocess_select as pps

NAMES = ("adaptive_threshold", "colour_edges")
NAME = NAMES[0]
# Clean-up after thresholding: the model's built-in defaults plus thinning to 2 px lines, so line width
# does not depend on the window (a model's width is learned from the labels).
SETTINGS = pps.PostprocessSettings(threshold=0.5, close_radius=1, min_fragment_px=20, min_grain_area=0, line_width=2)


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float64)
    if image.ndim == 3:  # luma for RGB(A), the mean otherwise
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114]) if image.shape[-1] >= 3 else image.mean(-1)
    if image.ndim != 2:
        raise ValueError(f"classical baseline: expected an [H, W] or [H, W, C] image, got shape {image.shape}")
    return image


def window_px(shape: tuple[int, ...]) -> int:
    """The local window: an eighth of the shorter side, odd, within 15-101 px (a few grains wide at the
    magnifications micrographs are taken at; the baseline knows no scale)."""
    w = int(np.clip(min(shape[:2]) // 8, 15, 101))
    return w | 1


def _local_contrast(x: np.ndarray, window: int | None) -> np.ndarray | None:
    """(x - local mean) / local std over a `window` px box; None for a flat image."""
    w = window or window_px(x.shape)
    mean = ndimage.uniform_filter(x, w, mode="reflect")
    var = ndimage.uniform_filter(x * x, w, mode="reflect") - mean * mean
    contrast = (x - mean) / np.sqrt(np.maximum(var, 1e-12))
    if not np.isfinite(contrast).all() or float(np.ptp(x)) < 1e-6:
        return None
    return contrast


def boundary_candidates(
    image: np.ndarray, method: str = NAME, offset: float = 0.5, window: int | None = None
) -> np.ndarray:
    """bool [H, W] before clean-up. adaptive_threshold: grey pixels beyond `offset` local standard deviations
    from the local mean, on the side of the short tail (dark lines in bright field, bright lines in SEM).
    colour_edges: the same rule on the largest per-channel Sobel gradient magnitude, bright side."""
    if method == "adaptive_threshold":
        contrast = _local_contrast(_grey(image), window)
        if contrast is None:
            return np.zeros(np.shape(image)[:2], bool)  # a flat image has no lines
        dark_lines = float(stats.skew(contrast, axis=None)) <= 0.0
        return contrast < -offset if dark_lines else contrast > offset
    if method == "colour_edges":
        x = np.asarray(image, np.float64)
        x = x[..., None] if x.ndim == 2 else x
        gradient = np.max([np.hypot(ndimage.sobel(c, 0), ndimage.sobel(c, 1)) for c in np.moveaxis(x, -1, 0)], 0)
        contrast = _local_contrast(gradient, window)
        return np.zeros(x.shape[:2], bool) if contrast is None else contrast > offset
    raise ValueError(f"unknown classical baseline {method!r}; choose one of {NAMES}")


def segment(image: np.ndarray, method: str = NAME, settings: pps.PostprocessSettings = SETTINGS) -> np.ndarray:
    """The baseline's boundary map: candidates, then the clean-up of `settings` (thinned lines)."""
    return pps.clean_up(boundary_candidates(image, method), settings)
