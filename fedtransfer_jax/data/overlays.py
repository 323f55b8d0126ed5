"""Burned-in annotations inside a micrograph (a scale bar, a text box, a marker square) and other flat
rectangles that are not micrograph (stitching padding, a clipped strip): found, filled in before the model
sees the image, and left out of the grains.

Microscope and imaging software draw a scale bar and its label into the pixels, usually in a corner, in a
pure colour (white, black, sometimes yellow or red) on a flat box. Half a percent of such pixels is enough
to wreck a map: the image's 0.5-99.5 percentiles (data/intensity.py) then stretch to the box's colour
instead of the micrograph's, the contrast the model sees drops, and the box itself is drawn as grains
(a 70 x 5 px white bar on a 256 px tint-etched crop took the shipped model from 91 grains to 18).

``find`` marks a region as an annotation only when it looks drawn, not imaged: flat (no noise: every
2 x 2 block of it within ``FLAT_TOL`` in every channel), in a pure colour (each channel within
``PURE_TOL`` of 0 or 1: a corner of the RGB cube), at least ``MIN_AREA`` px, and a filled rectangle (the
region with its holes, e.g. the text of a label box, fills at least ``MIN_FILL`` of its bounding box, and
its own colour ``MIN_OWN_FILL``: a frame drawn around part of the micrograph is not a box).
Clipped highlights or pores are flat and pure too, but not rectangles; a micrograph's own content is not
flat. A region in a colour that more than ``COMMON`` of the rest of the image also has (a black box on a
dark-field image's black background) is left alone: it may be the micrograph's, and it moves neither the
intensity percentiles nor much of the map. The mask is grown by ``MARGIN`` px to take in anti-aliased edges.
More than ``MAX_REGIONS`` such regions, or more than ``MAX_FRACTION`` of the image, is a drawing of flat
cells, not a labelled micrograph: nothing is marked. Flat strips that are not micrograph either (black
padding, a resin mount's straight edge, an over-exposed or unindexed band) pass the same test, and are better
left out too. Not found: text written straight onto the micrograph without a box, lines 1 px thin,
annotations in mixed colours, and some thin bars in colour JPEGs (chroma subsampling bleeds the micrograph
into them). ``scripts/overlay_probe.py`` measures it (docs/results/overlays/overlay_probe.txt).

``fill`` replaces the masked pixels by a smooth continuation of their surroundings (normalised Gaussian
convolution, nearest unmasked pixel where that reaches nothing), so the model sees micrograph-like
content there and the intensity statistics are the micrograph's own. analysis/measure.py then writes the
mask as boundary in the map and leaves its pixels out of every grain.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FLAT_TOL = 12.0 / 255.0  # JPEG (quality 40-75) leaves a drawn box within ~10 grey levels
PURE_TOL = 24.0 / 255.0
MIN_AREA = 200  # a square box or marker ...
MIN_BAR_AREA = 60  # ... or a bar at least BAR_ASPECT times as long as it is wide
BAR_ASPECT = 4.0
MIN_FILL = 0.92  # a round pore fills pi/4 of its box, a drawn box all of it
MIN_OWN_FILL = 0.6  # ... and the box's own colour most of it: a label's text is a small part, a frame's inside is not
MAX_FRACTION = 0.5  # more than this flat, pure and rectangular: not an annotation on a micrograph
COMMON = 0.005  # a colour on more of the rest of the image than this is the micrograph's (the stretch's percentile)
MAX_REGIONS = 8  # ... nor more regions than this: a drawing of flat rectangular cells, not a labelled micrograph
MARGIN = 2
FILL_SIGMA = 8.0
MODES = ("auto", "none")


def parse_mode(value: str) -> str:
    """``--overlays``: 'auto' or 'none'."""
    v = str(value).strip().lower()
    if v not in MODES:
        raise ValueError(f"--overlays must be 'auto' (find scale bars and label boxes) or 'none', got {value!r}")
    return v


def _rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, np.float32)
    return a[..., None] if a.ndim == 2 else a


def find(image: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: the pixels of burned-in annotations in ``image`` ([H, W] or [H, W, C] in [0, 1]);
    all False when there are none (module docstring)."""
    a = _rgb(image)
    h, w = a.shape[:2]
    mask = np.zeros((h, w), bool)
    if h < 2 or w < 2:
        return mask
    pure = np.ones((h, w), bool)
    block = np.ones((h - 1, w - 1), bool)
    colour_code = np.zeros((h, w), np.uint8)
    for c in range(a.shape[-1]):  # channel by channel: a 64 Mpx image holds no [H, W, 3] temporaries
        ch = a[..., c]
        pure &= (ch <= PURE_TOL) | (ch >= 1.0 - PURE_TOL)
        colour_code |= (ch >= 0.5).astype(np.uint8) << c
        # A 2 x 2 block is flat when its four pixels agree within FLAT_TOL in every channel; each of its
        # pixels is then part of a flat region (a 2 px scale bar has such blocks, noise has none).
        hi = np.maximum(np.maximum(ch[:-1, :-1], ch[1:, :-1]), np.maximum(ch[:-1, 1:], ch[1:, 1:]))
        hi -= np.minimum(np.minimum(ch[:-1, :-1], ch[1:, :-1]), np.minimum(ch[:-1, 1:], ch[1:, 1:]))
        block &= hi <= FLAT_TOL
    flat = np.zeros((h, w), bool)
    for dy in (0, 1):
        for dx in (0, 1):
            flat[dy : dy + h - 1, dx : dx + w - 1] |= block
    core = flat & pure
    if core.sum() < MIN_BAR_AREA:
        return mask
    # Each pure colour on its own (a white bar on a black background is two regions, not one), and its
    # core closed first: JPEG ringing around a label's text breaks a box's flat core into a lace.
    found = []  # (box, region, colour: the RGB cube's corner its code names): the flat, pure, filled rectangles
    for code in np.unique(colour_code[core]):
        same = core & (colour_code == code)
        same = ndimage.binary_closing(same, structure=np.ones((3, 3), bool), iterations=2, border_value=0) | same
        labels, _ = ndimage.label(same, structure=np.ones((3, 3), bool))
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            own = labels[box] == i
            region = ndimage.binary_fill_holes(own)
            area = int(region.sum())
            bh, bw = region.shape
            bar = max(bh, bw) >= BAR_ASPECT * min(bh, bw)
            if area < (MIN_BAR_AREA if bar else MIN_AREA) or area / region.size < MIN_FILL:
                continue
            if own.sum() < MIN_OWN_FILL * region.size:  # an outline around micrograph, not a box around text
                continue
            if area > MAX_FRACTION * h * w:  # a background, not a box drawn on the micrograph
                continue
            found.append((box, region, [(int(code) >> c) & 1 for c in range(a.shape[-1])]))
    if not found:
        return mask
    drawn = np.zeros((h, w), bool)
    for box, region, _ in found:
        drawn[box] |= region
    rest = ~ndimage.binary_dilation(drawn, iterations=MARGIN + 1)
    for box, region, colour in found:
        # A colour the micrograph itself has (a dark-field background, saturated highlights) is left alone:
        # there the region may be the micrograph's own, and a box of it changes neither the percentiles
        # nor much of the map.
        near = rest.copy()
        for c in range(a.shape[-1]):
            near &= np.abs(a[..., c] - colour[c]) <= PURE_TOL
        if near.sum() <= COMMON * max(1, rest.sum()):
            mask[box] |= region
    if not mask.any():
        return mask
    mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=MARGIN)
    if mask.mean() > MAX_FRACTION or ndimage.label(mask)[1] > MAX_REGIONS:
        return np.zeros((h, w), bool)
    return mask


def fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the ``mask`` pixels replaced by a smooth continuation of the pixels around them
    (float32, same shape); unchanged where the mask is empty."""
    a = np.asarray(image, np.float32)
    if not mask.any() or mask.all():  # nothing to fill, or nothing to fill it from
        return a
    rgb = _rgb(a)
    keep = (~mask).astype(np.float32)
    weight = ndimage.gaussian_filter(keep, FILL_SIGMA)
    out = rgb.copy()
    smooth = np.stack(
        [ndimage.gaussian_filter(rgb[..., c] * keep, FILL_SIGMA) for c in range(rgb.shape[-1])], axis=-1
    ) / np.maximum(weight, 1e-12)[..., None]
    reached = weight > 1e-3
    out[mask & reached] = smooth[mask & reached]
    far = mask & ~reached
    if far.any():  # deep inside a large box: the nearest unmasked pixel
        iy, ix = ndimage.distance_transform_edt(mask, return_distances=False, return_indices=True)
        out[far] = rgb[iy[far], ix[far]]
    return out.reshape(a.shape)


def describe(mask: np.ndarray) -> dict:
    """What predict records: the number of annotation regions, their pixels and their boxes
    ``[y, x, height, width]``."""
    labels, n = ndimage.label(mask)
    boxes = [[s[0].start, s[1].start, s[0].stop - s[0].start, s[1].stop - s[1].start] for s in ndimage.find_objects(labels)]
    return {"regions": int(n), "pixels": int(mask.sum()), "boxes": boxes}
