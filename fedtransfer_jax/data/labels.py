"""Label files: reading a boundary mask (255 = boundary; ``read_label``) and the sanity checks every
client's labels pass.

Label sanity checks (``check_labels``, run on every client folder before a tfds build and by
``evaluate --data_dir``). Hand-drawn labels go wrong in a few typical ways; the rule is: what is clearly
wrong for a whole client is an error (nothing is built or evaluated), one odd image is a warning
(``LabelWarning``, listing up to 5 files):

=====================================================  =========  ===========================================
finding                                                severity   typical cause / fix
=====================================================  =========  ===========================================
> 10 % of a label's pixels mid-grey (25-75 % of range)  error      a micrograph or an overlay in labels/
0.5-10 % mid-grey pixels                                warning    anti-aliased or JPEG labels (thresholded)
median boundary fraction of the client > 60 %           error      inverted polarity: set the invert flag
one label > 60 % boundary (client median fine)          warning    that file inverted?
boundary fraction outside 1-40 % (not > 60 %, not 0)    warning    odd crop, very thick/thin lines
every label of the client empty (no boundary pixel)     error      wrong value range (e.g. 0/1 saved in a
                                                                   16-bit file), or wrong folder
some labels empty                                       warning    crop inside one grain?
grain-ID map (>8 values in flat regions, the two       error      a segmentation tool's export: draw
commonest under half the pixels)                                   boundaries where the id changes
coloured lines on a light background (the coloured      error      red-on-white annotations: neither
pixels alone make a plausible fraction; all boundary               polarity reads them; save the lines
or, inverted, none)                                                white on black
=====================================================  =========  ===========================================

The limits (``PLAUSIBLE_BOUNDARY_FRACTION``, ``INVERTED_ABOVE``...) come from hand-labelled and synthetic
data: the real TBM tint-etched crops have 10-24 % boundary pixels, the synthetic labs 11-33 % per image.
Messages name the files and the key/flag that fixes them (``data.invert_labels`` / ``--invert_labels``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedtransfer_jax.data.image_files import (
    Pair,
    PathLike,
    _label_channel_max,
    _label_from_raw,
    _read_raw,
    upright_shape,
)


def read_label(path: PathLike, invert: bool = False) -> np.ndarray:
    """Reads a boundary mask as uint8 ``[H, W]`` with ``1 = boundary``.

    Files use 255 = boundary (threshold > 127, i.e. > half the dtype range); RGB(A) labels count a
    pixel as boundary if any colour channel is set (annotators often draw in red). A uint8 file whose
    maximum is 1 is taken to be a 0/1 mask already: under the 255 convention it would be an all-interior
    label, which is never what was meant. ``invert=True`` is for data sets that draw boundaries in black.
    """
    return read_label_with_stats(path, invert)[0]


# ----------------------------------------------------------------------------------------------
# Label sanity checks (rules in the module docstring).
# ----------------------------------------------------------------------------------------------

PLAUSIBLE_BOUNDARY_FRACTION = (0.01, 0.40)
INVERTED_ABOVE = 0.60
GREY_WARN_ABOVE = 0.005
GREY_ERROR_ABOVE = 0.10
_MID_GREY = (0.25, 0.75)  # Share of the value range that is clearly neither black nor white.
_LIST_AT_MOST = 5


class LabelError(ValueError):
    """Labels that are clearly wrong (every problem found, each naming files and the fix)."""


class LabelWarning(UserWarning):
    """Labels that look odd but may be right."""


@dataclasses.dataclass(frozen=True)
class LabelStats:
    """What the checks need from one label file."""

    path: Path
    boundary_fraction: float  # After thresholding (and inversion): the mask the model trains on.
    grey_fraction: float  # Pixels in the middle of the value range (neither black nor white).
    max_value: float  # Largest raw value (brightest channel).
    full_scale: float  # The dtype's white: 255, 65535, 1.0 for float / 0-1 masks.
    # What names the two common wrong kinds of label file (the rules read them, never the mask):
    coloured_fraction: float = 0.0  # Pixels of strong colour (channels differ by > half range): red lines.
    distinct_values: int = 0  # Distinct values (colours, in RGB files); these four on a sample of <= ~1 Mpx.
    flat_fraction: float = 0.0  # Pixels of the same value as their right-hand neighbour (piecewise-constant).
    top2_fraction: float = 1.0  # Pixels of the two commonest values: background and line in any mask.


def label_stats(raw: np.ndarray, label: np.ndarray, path: PathLike) -> LabelStats:
    """Statistics of one label: ``raw`` as decoded from the file, ``label`` the 0/1 mask made of it."""
    grey = _label_channel_max(raw)
    if grey.dtype == bool or (grey.dtype == np.uint8 and grey.max() <= 1):
        full, unit = 1.0, grey.astype(np.float32)
    elif np.issubdtype(grey.dtype, np.integer):
        full = float(65535 if grey.dtype == np.int32 else np.iinfo(grey.dtype).max)  # int32: 16-bit PNG.
        unit = grey.astype(np.float32) / full
    else:
        full, unit = 1.0, grey.astype(np.float32)
    mid = (unit > _MID_GREY[0]) & (unit < _MID_GREY[1])
    # The shape statistics on a sample of at most ~1 Mpx (a 64 Mpx RGB label would need GBs at full size);
    # neighbours in the sample are `step` px apart, which keeps grain-sized flat regions flat.
    step = int(np.ceil(np.sqrt(grey.size / 1e6)))
    sample = raw[::step, ::step]
    coloured, values = 0.0, grey[::step, ::step]  # `values`: one comparable value per pixel (RGB: its colour)
    if sample.ndim == 3 and sample.shape[-1] >= 3:
        rgb = sample[..., :3].astype(np.float32) / (full if np.issubdtype(raw.dtype, np.integer) else 1.0)
        chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
        coloured = float(np.mean(chroma > 0.5))
        q = np.clip(np.round(rgb * 255), 0, 255).astype(np.int64)
        values = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
    counts = np.unique(values, return_counts=True)[1]
    return LabelStats(
        path=Path(path),
        boundary_fraction=float(np.mean(label)),
        grey_fraction=float(np.mean(mid)),
        max_value=float(grey.max()),
        full_scale=full,
        coloured_fraction=coloured,
        distinct_values=int(counts.size),
        flat_fraction=float(np.mean(values[:, 1:] == values[:, :-1])) if values.shape[1] > 1 else 1.0,
        top2_fraction=float(np.sort(counts)[-2:].sum() / counts.sum()),
    )


def looks_like_grain_ids(s: LabelStats) -> bool:
    """A grain-ID map (one value per grain, as segmentation tools export) rather than a boundary mask: many
    distinct values (or colours) in flat regions, none of them common: the two commonest cover under half the
    pixels. In any mask, antialiased, noisy-scanned or coloured, background and line colour cover most of
    it, whatever their values; a micrograph is not flat.
    (A grain-ID map saved as JPEG is not flat either: it is reported as not a binary mask.)"""
    return s.distinct_values > 8 and s.flat_fraction > 0.7 and s.top2_fraction < 0.5


def looks_like_coloured_lines_on_light(stats: Sequence[LabelStats]) -> bool:
    """Labels drawn as coloured lines (say red) on a white background: every pixel has a bright channel, so
    neither polarity reads them; their coloured pixels alone would make a plausible boundary fraction."""
    lo, hi = PLAUSIBLE_BOUNDARY_FRACTION
    return lo <= float(np.median([s.coloured_fraction for s in stats])) <= hi


_GRAIN_IDS_FIX = (
    "labels must be boundary masks: white (255) where two grains meet, black (0) elsewhere (mark each pixel "
    "whose grain id differs from a neighbour's)"
)
_COLOURED_LINES_FIX = (
    "they seem to draw coloured lines on a light background, which neither polarity reads: save them with "
    "the lines white (255) and everything else black (0)"
)


def read_label_with_stats(path: PathLike, invert: bool = False) -> tuple[np.ndarray, LabelStats]:
    """``read_label`` plus the ``LabelStats`` of the file (one decode)."""
    path = Path(path)
    raw = _read_raw(path, palette_as_index=True)
    label = _label_from_raw(raw, path, invert)
    return label, label_stats(raw, label, path)


def _some(stats: Sequence[LabelStats], value=None) -> str:
    """Up to ``_LIST_AT_MOST`` file paths (with a value each), then how many more."""
    shown = [str(s.path) + ("" if value is None else f" ({value(s)})") for s in stats[:_LIST_AT_MOST]]
    more = len(stats) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def label_issues(
    stats: Sequence[LabelStats], *, invert: bool, invert_flag: str, where: str
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for the labels of one client (or one evaluated folder).

    ``invert_flag`` is how the user sets the polarity where the labels are being read
    (``--config.data.invert_labels`` for training, ``--invert_labels`` for evaluate); ``where`` names
    the client/folder. The rules are in the module docstring.
    """
    errors: list[str] = []
    warns: list[str] = []
    if not stats:
        return errors, warns
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lo, hi = PLAUSIBLE_BOUNDARY_FRACTION

    ids = [s for s in stats if looks_like_grain_ids(s)]
    if ids:  # named once; the rules below would misread them (as micrographs, inverted or empty)
        errors.append(
            f"{len(ids)} label file(s) of {where} look like grain-ID maps, not boundary masks (one value per "
            f"grain: {_some(ids, lambda s: f'{s.distinct_values} values')}): {_GRAIN_IDS_FIX}"
        )
        stats = [s for s in stats if s not in ids]
        if not stats:
            return errors, warns
    grey = [s for s in stats if s.grey_fraction > GREY_ERROR_ABOVE]
    if grey:
        errors.append(
            f"{len(grey)} label file(s) of {where} are not binary masks (mid-grey pixels: "
            f"{_some(grey, lambda s: pct(s.grey_fraction))}): is a micrograph or an overlay in labels/? "
            "Labels must be black (0) for grain interior and white (255) for boundary."
        )
    soft = [s for s in stats if GREY_WARN_ABOVE < s.grey_fraction <= GREY_ERROR_ABOVE]
    if soft:
        warns.append(
            f"{len(soft)} label file(s) of {where} have grey levels (anti-aliased or JPEG?): "
            f"{_some(soft, lambda s: pct(s.grey_fraction) + ' mid-grey')}; "
            "they are thresholded at half range."
        )

    fractions = np.array([s.boundary_fraction for s in stats])
    median = float(np.median(fractions))
    if median > INVERTED_ABOVE and looks_like_coloured_lines_on_light(stats):
        errors.append(
            f"the labels of {where} read as a median {pct(median)} boundary (plausible {pct(lo)}-{pct(hi)}), "
            f"e.g. {_some(stats[:1], lambda s: pct(s.boundary_fraction))}: {_COLOURED_LINES_FIX}"
        )
    elif median > INVERTED_ABOVE:
        if invert:
            fix = f"they already mark boundaries white: set {invert_flag}=False"
        else:
            fix = f"they draw boundaries black on white: set {invert_flag}=True"
        errors.append(
            f"the labels of {where} look inverted: a median {pct(median)} of their pixels are boundary "
            f"(plausible {pct(lo)}-{pct(hi)}), "
            f"e.g. {_some(stats[:1], lambda s: pct(s.boundary_fraction))}; {fix}"
        )
    else:
        flipped = [s for s in stats if s.boundary_fraction > INVERTED_ABOVE]
        if flipped:
            warns.append(
                f"{len(flipped)} label(s) of {where} are mostly boundary, inverted unlike the rest? "
                f"{_some(flipped, lambda s: pct(s.boundary_fraction))}"
            )
        odd = [s for s in stats if 0 < s.boundary_fraction < lo or hi < s.boundary_fraction <= INVERTED_ABOVE]
        if odd:
            warns.append(
                f"{len(odd)} label(s) of {where} have a boundary fraction outside the plausible "
                f"{pct(lo)}-{pct(hi)}: {_some(odd, lambda s: pct(s.boundary_fraction))}"
            )

    empty = [s for s in stats if s.boundary_fraction == 0]
    if empty and len(empty) == len(stats):
        first = empty[0]
        if invert and looks_like_coloured_lines_on_light(stats):
            why = _COLOURED_LINES_FIX
        elif invert:
            why = f"with {invert_flag}=True every pixel is white in the file: drop {invert_flag}"
        elif first.max_value > 0:
            why = (
                f"their values go up to {first.max_value:g} of {first.full_scale:g}, but boundary pixels "
                "must be above half the range (255 in 8-bit files, 65535 in 16-bit files)"
            )
        else:
            why = "the files are all black"
        errors.append(f"every label of {where} is empty (no boundary pixel), e.g. {first.path}: {why}")
    elif empty:
        warns.append(f"{len(empty)} label(s) of {where} have no boundary pixel: {_some(empty)}")
    return errors, warns


def check_labels(
    stats: Sequence[LabelStats], *, invert: bool, invert_flag: str, where: str, stacklevel: int = 2
) -> list[str]:
    """Warns (``LabelWarning``) about odd labels and raises ``LabelError`` for wrong ones.

    Returns:
      the warning messages (also emitted through ``warnings.warn``), e.g. for a report.
    """
    errors, warns = label_issues(stats, invert=invert, invert_flag=invert_flag, where=where)
    if errors:  # Warnings about labels that must be fixed anyway would only bury the error.
        raise LabelError("\n".join(errors))
    for message in warns:
        warnings.warn(message, LabelWarning, stacklevel=stacklevel)
    return warns


def size_mismatch_message(image_path: PathLike, image_hw, label_path: PathLike, label_hw, orientation=1) -> str:
    """The error for an image and a label of different sizes (both files, both sizes, upright)."""
    msg = (
        f"image/label size mismatch: {image_path} is {image_hw[0]}x{image_hw[1]} (HxW) but "
        f"{label_path} is {label_hw[0]}x{label_hw[1]}"
    )
    if orientation in (5, 6, 7, 8) and tuple(label_hw) == (image_hw[1], image_hw[0]):
        msg += (
            f" ({image_path} carries the EXIF orientation {orientation}, i.e. it is displayed rotated "
            "by 90 degrees, and is read upright; the label matches the stored, unrotated pixels: rotate the "
            "label to the upright image)"
        )
    return msg


def check_client_labels(pairs: Sequence[Pair], *, invert: bool, invert_flag: str, where: str) -> list[str]:
    """``check_labels`` on the label files of ``(image, label)`` pairs, plus the pairing itself.

    Reads the labels and only the headers of the images. An image whose size (upright, i.e. after its
    EXIF orientation) differs from its label's is an error naming both files (nothing is built or
    evaluated); an image with an EXIF orientation tag whose label has another one, where the label would
    fit the stored pixels as well (square images, 180 degrees, mirrors), is a warning: nothing in the
    files says which way the label was drawn. (A non-square label that fits the upright image is fine.)

    Raises:
      ValueError: a size mismatch or an unreadable file; ``LabelError``: wrong labels (``check_labels``).
    """
    stats, turned = [], []
    for image_path, label_path in pairs:
        label, label_stats_ = read_label_with_stats(label_path, invert)
        h, w, orientation = upright_shape(image_path)
        if (h, w) != label.shape:
            raise ValueError(size_mismatch_message(image_path, (h, w), label_path, label.shape, orientation))
        # Ambiguous only when the stored pixels would fit the label as well: no axis swap, or square.
        ambiguous = orientation in (2, 3, 4) or (orientation in (5, 6, 7, 8) and h == w)
        if ambiguous and orientation != upright_shape(label_path)[2]:
            turned.append(f"{image_path} (orientation {orientation})")
        stats.append(label_stats_)
    warns = check_labels(stats, invert=invert, invert_flag=invert_flag, where=where, stacklevel=3)
    if turned:
        message = (
            f"{len(turned)} image(s) of {where} carry an EXIF orientation tag their label does not have: "
            f"{', '.join(turned[:_LIST_AT_MOST])}{' and more' if len(turned) > _LIST_AT_MOST else ''}; the "
            "images are read upright: check that their labels were drawn on the upright images"
        )
        warnings.warn(message, LabelWarning, stacklevel=2)
        warns.append(message)
    return warns
