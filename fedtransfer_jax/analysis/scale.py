"""Resampling a micrograph to the magnification its model was trained at (`--scale`).

Models trained on synthetic grains 9-30 px across over-segment micrographs whose grains are several times
larger: texture inside a grain reads as boundaries. Predicting on a downscaled image and mapping the
probabilities back fixes it, and the right factor differs per image.

``--scale X`` (a number > 0): the image [H, W] is resampled to round(X H) x round(X W) (bilinear, with
PIL's antialiasing when shrinking), the model predicts there, and the boundary *probability* map is
resampled back to H x W (bilinear) before thresholding and post-processing. So the boundary map, the
grain table and the grain sizes are always in the original pixels (and `--pixel_size_um` units), and line
widths are what the post-processing makes them. ``--scale 1`` never resamples: exactly the model's output.

``--scale auto`` (the CLIs' default) picks each image's scale:

1. Candidates: ``CANDIDATES`` = 1, 1/1.5, 1/2, 1/3, 1/4 (never upscaling), leaving out those at which the
   image's shorter side would be under ``MIN_MODEL_SIDE`` = 64 px (scale 1 always stays).
2. At each candidate s the model predicts a central view of the image of at most ``VIEW_PX`` = 384 px a
   side *at that scale* (so each candidate costs at most one 384 x 384 prediction, whatever the image
   size); the probabilities are thresholded and post-processed with the run's settings (at the model's
   resolution) and the view's mean grain size measured: the mean equivalent-circle diameter, in model
   px, of the grains not cut by the view's edge (``runs.grain_size.mean_diameter_of_labels``).
3. A candidate whose map could not give a grain size (``metrics.grains.grain_size_plausibility``: more
   than half the map boundary, no boundary at all, fewer than 5 grains inside the view, one grain over
   half the view) is rejected. If every candidate with grains is, the scale is 1: no map is plausible, so
   no measured size can guide a resampling (on micrographs of 5-14 px grains, taking the closest of the
   rejected sizes chose smaller scales, down to 1/4, where such grains vanish: scripts/all_rejected_check.py).
4. The chosen scale is the candidate whose mean grain diameter is closest, in log, to the grain size the
   model was trained on (``runs.grain_size.trained_grain_size``: recorded in the workdir, else from the
   training config, else 16 px); but where several lie within ``TOLERANCE`` = 1.25x of it, the largest of
   those (the least resolution lost: a model shown grains already at or below its size merges some, so
   the smaller scale's mean overshoots). Ties go to the larger scale. No candidate with grains: scale 1.
5. The final prediction runs at the chosen scale on the whole image (reusing the candidate's prediction
   when its view was the whole image).

Each image's choice is recorded as ``{"used", "mode", "candidates": {scale: mean diameter px or None},
"target_px", "target_source", "rejected": {scale: why}, "reason", "stability", "stability_compared_with"}``:
the last two say how much the chosen scale's grain map agrees with its neighbouring candidates' maps
(analysis/stability.py; None with one candidate only); and ``"warning"`` where every candidate was rejected
(predict shows it unless the final map's own checks already withhold the grain size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from fedtransfer_jax.analysis import stability as stability_lib
from fedtransfer_jax.data import image_files, intensity
from fedtransfer_jax.metrics import grains as grains_lib
from fedtransfer_jax.runs import grain_size

AUTO = "auto"
CANDIDATES = (1.0, 1 / 1.5, 1 / 2, 1 / 3, 1 / 4)
MIN_MODEL_SIDE = 64
VIEW_PX = 384
TOLERANCE = 1.25
FLAG_HELP = (
    "Resample each image by this factor before the model (0.5 halves it; 1 = as is) and map the result "
    "back to the image's pixels; 'auto' (default) picks per image the scale at which the predicted grains "
    "are closest to the size the model was trained on."
)


# Enlarging helps only grains a few pixels across; 4x is already 16x the pixels (and the work).
MAX_SCALE = 4.0
MAX_SCALED_PIXELS = image_files.MAX_PIXELS  # the memory bound of a read image: the same arrays are held
MIN_SCALED_SIDE = 16


ALL_REJECTED_WARNING = (
    "no scale gave a plausible map at the image's centre (every candidate rejected, see the scale record): "
    "the model may be segmenting texture or noise here; check the overlay before using the numbers"
)


def parse_scale(value: Any) -> str | float:
    """``'auto'`` or a finite float > 0 from ``--scale``; ValueError naming --scale otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        s = float(value)
    except (TypeError, ValueError):
        s = math.nan
    if isinstance(value, bool) or not (math.isfinite(s) and 0 < s <= MAX_SCALE):
        raise ValueError(
            f"--scale must be 'auto' or a factor in (0, {MAX_SCALE:g}] (0.5 halves the image, 2 doubles it; "
            f"not a percentage), got {value!r}"
        )
    return s


def check_scaled_size(hw: tuple[int, int], s: float) -> None:
    """Refuses an enlargement past MAX_SCALED_PIXELS (ValueError): the resampled image, its probabilities
    and the network's activations are held in memory at once; and a reduction that leaves the image's
    shorter side under MIN_SCALED_SIDE px, where no grain can be seen."""
    h, w = scaled_shape(hw, s)
    if s < 1.0 and min(h, w) < MIN_SCALED_SIDE:
        raise ValueError(
            f"--scale {s:g} would shrink this {hw[0]}x{hw[1]} px image to {h}x{w} px, under {MIN_SCALED_SIDE} px "
            "a side: use a larger --scale (or 'auto')"
        )
    if s > 1.0 and h * w > MAX_SCALED_PIXELS:
        raise ValueError(
            f"--scale {s:g} would enlarge this {hw[0]}x{hw[1]} px image to {h}x{w} px, more than "
            f"{MAX_SCALED_PIXELS / 1e6:.0f} Mpx: use a smaller --scale or crop the image"
        )


def scaled_shape(hw: tuple[int, int], s: float) -> tuple[int, int]:
    return max(1, int(round(hw[0] * s))), max(1, int(round(hw[1] * s)))


def resample(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float [H, W] or [H, W, C] array to ``hw`` (float32; PIL, antialiased when
    shrinking, pixel centres aligned)."""
    a = np.asarray(array, np.float32)
    if a.shape[:2] == tuple(hw):
        return a
    h, w = hw

    def one(ch: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(np.ascontiguousarray(ch)).resize((w, h), Image.BILINEAR), np.float32)

    if a.ndim == 2:
        return one(a)
    return np.stack([one(a[..., c]) for c in range(a.shape[-1])], axis=-1)


def predict_at(model, image: np.ndarray, s: float, *, overlap=None, flips=False) -> np.ndarray:
    """The model's boundary probabilities at scale ``s``, at the model's resolution [round(sH), round(sW)]."""
    if s == 1.0:
        return model.predict_prob(image, overlap=overlap, flips=flips)
    check_scaled_size(image.shape[:2], s)
    return model.predict_prob(resample(image, scaled_shape(image.shape[:2], s)), overlap=overlap, flips=flips)


def back_to(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Probabilities predicted at some scale, resampled (bilinear) to the original ``hw``."""
    p = np.asarray(prob)
    return p if p.shape[:2] == tuple(hw) else resample(p, hw)


def prob_at_scale(model, image: np.ndarray, s: float, *, overlap=None, flips=False) -> np.ndarray:
    """Boundary probabilities [H, W] of ``image`` [H, W, 3] predicted at scale ``s`` and mapped back."""
    return back_to(predict_at(model, image, s, overlap=overlap, flips=flips), image.shape[:2])


def candidates_for(hw: tuple[int, int]) -> list[float]:
    """The scales ``auto`` tries for an image of ``hw``: 1, then the smaller ones it stays >= 64 px at."""
    short = min(hw)
    return [s for s in CANDIDATES if s == 1.0 or short * s >= MIN_MODEL_SIDE]


def _key(s: float) -> str:
    return f"{s:.3g}"


def _view_box(hw: tuple[int, int], s: float) -> tuple[int, int, int, int]:
    """``(y, x, height, width)``: the central part of an image of ``hw`` at most VIEW_PX a side at scale ``s``."""
    h, w = hw
    side = int(math.ceil(VIEW_PX / s))
    vh, vw = min(h, side), min(w, side)
    return (h - vh) // 2, (w - vw) // 2, vh, vw


def _view(image: np.ndarray, s: float) -> tuple[np.ndarray, bool]:
    """The central crop of ``image`` that is at most VIEW_PX a side at scale ``s``; and whether it is whole."""
    y, x, vh, vw = _view_box(image.shape[:2], s)
    return image[y : y + vh, x : x + vw], (vh, vw) == image.shape[:2]


def target_for(model) -> tuple[float, str]:
    """The grain size ``model`` was trained on (``runs.grain_size.trained_grain_size``), cached on it."""
    cached = getattr(model, "trained_grain_px", None)
    if cached is not None:
        return cached
    source = getattr(model, "source", None) or {}
    found = grain_size.trained_grain_size(source.get("workdir"), getattr(model, "config", None))
    try:
        model.trained_grain_px = found
    except AttributeError:
        pass
    return found


def pick(
    cands: list[float],
    diam: Mapping[float, float | None],
    rejected: Mapping[str, str],
    target_px: float,
    tolerance: float = TOLERANCE,
) -> tuple[float, str]:
    """``(scale, reason)``: steps 3-4 of the auto rule (module docstring) from each candidate's measured mean
    grain diameter ``diam`` (None: no grains) and the candidates ``rejected`` as implausible (keyed by
    ``_key``)."""
    with_grains = [s for s in cands if diam[s] is not None]
    pool = [s for s in with_grains if _key(s) not in rejected]
    if not with_grains:
        best = 1.0
        reason = "no grains predicted at any scale: scale 1"
    elif not pool:
        # No scale gave a plausible map: resampling has nothing to go on, and the sizes measured on implausible
        # maps picked scales where fine grains vanish (scripts/all_rejected_check.py).
        best = 1.0
        reason = "no scale's map was plausible: scale 1, the model's own resolution"
    else:
        def off(s: float) -> float:
            return abs(math.log(diam[s] / target_px))

        near = [s for s in pool if off(s) <= math.log(tolerance) + 1e-12]
        if len(near) > 1:
            best = max(near)
            reason = (
                f"mean grain {diam[best]:.1f} px (resampled pixels) at scale {_key(best)}: the largest scale "
                f"within {tolerance:g}x of the trained {target_px:.1f} px"
            )
        else:
            best = min(pool, key=lambda s: (off(s), -s))
            reason = (
                f"mean grain {diam[best]:.1f} px (resampled pixels) at scale {_key(best)} is the closest to the "
                f"trained {target_px:.1f} px"
            )
        if len(cands) > 1 and best != 1.0 and diam.get(1.0) is not None:
            reason += f" (scale 1: {diam[1.0]:.1f} px)"
    if with_grains and len(cands) == 1:
        reason = f"only scale 1 tried (the image is under {MIN_MODEL_SIDE / CANDIDATES[1]:.0f} px a side); " + reason
    return best, reason


def choose(
    model, image: np.ndarray, settings, *, target: tuple[float, str], overlap=None, flips=False
) -> tuple[float, dict[str, Any], np.ndarray | None]:
    """``(scale, record, prob)``: the auto rule (module docstring) for one image. ``prob`` is the chosen
    scale's model-resolution prediction of the whole image when a candidate already made it, else None."""
    target_px, target_source = target
    hw = image.shape[:2]
    cands = candidates_for(hw)
    diam: dict[float, float | None] = {}
    rejected: dict[str, str] = {}
    whole: dict[float, np.ndarray] = {}
    views: dict[float, tuple[np.ndarray, tuple[int, int, int, int]]] = {}
    for s in cands:
        view, is_whole = _view(image, s)
        prob = predict_at(model, view, s, overlap=overlap, flips=flips)
        views[s] = (prob, _view_box(hw, s))
        if is_whole:
            whole[s] = prob
        boundary = settings.apply(prob)
        lab = grains_lib.grains_from_boundary(boundary)
        d, _ = grain_size.mean_diameter_of_labels(lab)
        diam[s] = d
        withhold, _ = grains_lib.grain_size_plausibility(lab, boundary)
        if d is None or withhold:
            rejected[_key(s)] = "; ".join(withhold) or "no grains"
    best, reason = pick(cands, diam, rejected, target_px)
    # How far to trust the map (analysis/stability.py): its grains at the neighbouring scales, compared in
    # the image's pixels after the same post-processing as the final map.
    maps = {
        s: (settings.apply(back_to(views[s][0], views[s][1][2:])), views[s][1])
        for s in [best, *stability_lib.neighbours(cands, best)]
    }
    value, compared = stability_lib.at_scale(maps, best, cands)
    record = {
        "used": round(best, 4),
        "mode": AUTO,
        "candidates": {_key(s): (None if diam[s] is None else round(diam[s], 2)) for s in cands},
        "target_px": round(float(target_px), 2),
        "target_source": target_source,
        "rejected": rejected,
        "reason": reason,
        "stability": None if value is None else round(value, 3),
        "stability_compared_with": [_key(s) for s in compared],
    }
    if len(rejected) == len(cands):  # the final map may pass on the whole image: say what the views showed
        record["warning"] = ALL_REJECTED_WARNING
    return best, record, whole.get(best)


def probabilities(
    model,
    image: np.ndarray,
    *,
    scale: str | float = 1.0,
    settings=None,
    target: tuple[float, str] | None = None,
    overlap: int | None = None,
    flips: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(prob [H, W], record)``: boundary probabilities of ``image`` at ``scale`` (a float > 0, or
    'auto' with ``settings`` and ``target`` (default: ``target_for(model)``)) in the image's pixels, and
    the scale record (module docstring). Scale 1 is the model's own output, untouched. The image is first
    normalised as the model's training images were (``data.intensity``, data/intensity.py)."""
    scale = parse_scale(scale)
    image = intensity.normalise(image, intensity.mode_of(model))
    hw = image.shape[:2]
    if scale == AUTO:
        if settings is None:
            raise ValueError("--scale auto needs the post-processing settings")
        s, record, prob = choose(
            model, image, settings, target=target or target_for(model), overlap=overlap, flips=flips
        )
        if prob is None:
            prob = predict_at(model, image, s, overlap=overlap, flips=flips)
        return back_to(prob, hw), record
    record = {
        "used": float(scale),
        "mode": "fixed",
        "candidates": {},
        "target_px": None,
        "reason": "given with --scale" if scale != 1.0 else "scale 1: the image as it is",
    }
    return prob_at_scale(model, image, scale, overlap=overlap, flips=flips), record


def mixed_scales_note(entries) -> str | None:
    """A line for predict's summary where ``--scale auto`` measured the images of one run at different
    scales (each entry: an image's manifest entry): sizes stay in each image's own pixels, but the maps
    differ with the scale, so a series meant to be compared is better measured at one fixed scale."""
    used: dict[str, int] = {}
    for e in entries:
        record = e.get("scale") or {}
        if record.get("mode") == AUTO and record.get("used") is not None:
            key = _key(record["used"])
            used[key] = used.get(key, 0) + 1
    if len(used) < 2:
        return None
    counts = ", ".join(f"{k}: {n} image(s)" for k, n in sorted(used.items(), key=lambda kv: -float(kv[0])))
    return (f"--scale auto chose different scales ({counts}); sizes are in each image's own pixels, but "
            "for a series you mean to compare, one fixed --scale for all gives like-for-like maps")


def describe(record: Mapping[str, Any] | None) -> str:
    """Short text for tables: '0.5 auto', '1', '-' (no record: an entry from before --scale)."""
    if not record:
        return "-"
    used = record.get("used")
    text = "-" if used is None else f"{used:.3g}"
    return text + (" auto" if record.get("mode") == AUTO else "")
