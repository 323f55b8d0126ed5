"""Per-image intensity normalisation: the grey levels a model sees, whatever the camera's exposure, gain or
bit depth.

A segmenter trained on raw intensities learns the brightness and contrast of its training images. The same
micrograph saved darker (12-bit data in a 16-bit file reads at 1/16 of the range), washed out or brighter is
then a different input: the first shipped model, trained raw, lost 0.10-0.24 ARI on its own validation crops under
such transforms (dev probe, docs/MODEL.md "Intensity"). ``stretch`` maps each image's 0.5th-99.5th percentile
of all pixels and channels to [0, 1] (clipped): an affine map of the whole image, so colour ratios, polarity
and the shape of the histogram stay; only offset and gain go. It is applied to every image of a run (train,
validation, test, whole test images: ``data/clients.py``) and, with the model's own mode, to every image that
``predict``/``evaluate`` read (``analysis/scale.py``), always on the whole image before it is resampled or
tiled: the statistics are the whole image's, not a tile's (a tile inside one large grain has no boundary to
stretch to). Training tiles are cut from whole images normalised the same way (tfds builders, at the source
image's full bit depth, then stored in 8 bits; prior labs), and a style technique's re-rendered tiles are
stretched too (``stretch_batch``, inside the jitted step), since a rendered style has its own offset and gain.

The mode is a training choice recorded in the run's config (``data.intensity``; configs from before it
existed are ``raw``), so a model is always fed as it was trained. For a ``raw`` model, ``range_warning``
names an image whose intensities lie far outside anything the project's labs produce.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RAW = "raw"
STRETCH = "stretch"
MODES = (RAW, STRETCH)
KEY = "data.intensity"
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
MIN_SPAN = 1e-6  # a flat image (no contrast at all) is left as it is: nothing to map

# For raw models: every training lab's images reach at least this high (0.5-99.5 percentile span >= 0.11 and
# 99.5th percentile >= 0.35 on the first shipped model's ten labs, docs/MODEL.md); an image below either half of
# that is near black or near flat, far outside what they saw. Only such images are flagged: a washed-out or
# brighter copy still costs a raw model ARI (MODEL.md "Intensity") without any warning.
WARN_SPAN = 0.05
WARN_HIGH = 0.15


def check_mode(mode: Any) -> str:
    """``mode`` if it is one of ``MODES``; else a ValueError naming ``data.intensity``."""
    if mode not in MODES:
        raise ValueError(f"{KEY} must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    return str(mode)


def mode_of(config: Any) -> str:
    """The intensity mode a run's config (a ConfigDict, or a model whose ``config`` is one) trained with:
    ``data.intensity``, or ``raw`` for configs from before the key existed."""
    config = getattr(config, "config", config)
    data = getattr(config, "data", None) if config is not None else None
    if data is None and isinstance(config, dict):
        data = config.get("data")
    if data is None:
        return RAW
    value = data.get("intensity", RAW) if hasattr(data, "get") else getattr(data, "intensity", RAW)
    return check_mode(value or RAW)


def percentiles(image: np.ndarray) -> tuple[float, float]:
    """``(low, high)``: the 0.5th and 99.5th percentiles of a float image's pixels, all channels together."""
    lo, hi = np.percentile(np.asarray(image, np.float32), [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(lo), float(hi)


def stretch(image: np.ndarray) -> np.ndarray:
    """One float image ``[H, W, C]`` in [0, 1] with its (low, high) percentiles mapped to (0, 1), clipped;
    float32. A flat image (no contrast) is returned as it is."""
    image = np.asarray(image, np.float32)
    if image.size == 0:
        return image
    lo, hi = percentiles(image)
    if hi - lo < MIN_SPAN:
        return image
    out = image - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def stretch_batch(images):
    """``stretch`` of every image of a batch ``[B, H, W, C]`` in jax.numpy (jittable): what a style
    technique's re-rendered tiles get inside the training step when the run stretches."""
    import jax.numpy as jnp  # noqa: PLC0415 - the numpy paths (data, predict) need no jax

    flat = images.reshape(images.shape[0], -1).astype(jnp.float32)
    lo, hi = jnp.percentile(flat, jnp.asarray([LOW_PERCENTILE, HIGH_PERCENTILE]), axis=1)
    span = hi - lo
    ok = span >= MIN_SPAN
    scale = jnp.where(ok, 1.0 / jnp.where(ok, span, 1.0), 1.0)
    shift = jnp.where(ok, lo, 0.0)
    out = jnp.clip((flat - shift[:, None]) * scale[:, None], 0.0, 1.0)
    out = jnp.where(ok[:, None], out, flat)
    return out.reshape(images.shape).astype(images.dtype)


def normalise(images: np.ndarray, mode: str) -> np.ndarray:
    """``images`` (one ``[H, W, C]`` or a stack ``[N, H, W, C]``) as a model trained with ``mode`` sees
    them: unchanged for ``raw``, each image stretched on its own for ``stretch``."""
    mode = check_mode(mode)
    if mode == RAW:
        return images
    images = np.asarray(images)
    if images.ndim == 3:  # one colour image [H, W, C] (every image here has 3 channels)
        return stretch(images)
    if images.ndim != 4:
        raise ValueError(f"expected an image [H, W, C] or a stack [N, H, W, C], got shape {images.shape}")
    return np.stack([stretch(x) for x in images]) if len(images) else images.astype(np.float32)


def range_warning(image: np.ndarray, mode: str, found: tuple[float, float] | None = None) -> str | None:
    """For a ``raw`` model: a sentence when the image is near black or near flat (e.g. 12-bit data in a
    16-bit file), far outside the training labs; else None. ``found``: its ``percentiles``, if known."""
    if check_mode(mode) != RAW:
        return None
    lo, hi = found if found is not None else percentiles(image)
    if hi - lo >= WARN_SPAN and hi >= WARN_HIGH:
        return None
    return (
        f"the image's intensities span only {lo:.3f}-{hi:.3f} of the full range (0.5-99.5 percentiles): far "
        "darker or flatter than any image this model was trained on (it reads raw intensities), so its map "
        "is probably wrong; rescale the image to its full range (e.g. 12-bit data saved in a 16-bit file) "
        "or use a model trained with data.intensity='stretch'"
    )


def record(image: np.ndarray, mode: str) -> dict[str, Any]:
    """What predict writes about one image's intensities: the mode, the image's percentiles, and a warning
    where ``range_warning`` has one."""
    lo, hi = percentiles(image)
    out: dict[str, Any] = {"mode": mode, "percentiles": [round(lo, 4), round(hi, 4)]}
    warning = range_warning(image, mode, (lo, hi))
    if warning:
        out["warning"] = warning
    return out
