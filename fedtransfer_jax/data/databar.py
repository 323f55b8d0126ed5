"""Which bottom rows of a micrograph are the instrument's data bar, left out of its grains.

SEM images usually carry a data bar (magnification, HV, scale bar, as text on a flat background) along the
bottom, as rows of the image file. Segmented, its glyphs become dozens of "grains". ``databar_rows``
takes its height from the metadata when the file has it, else ``detect_databar`` looks for it in the pixels:
a full-width band at the bottom, at least 8 rows and at most 30 % of the height, whose rows are mostly one
background value (the same in every row), below rows that are not, with writing on it (at least 5 marks in
high contrast, shorter than the band). A micrograph's own rows are not like that: grain interiors carry
noise, texture and other grains across a full row, and a flat band of the microstructure (a twin lamella)
carries no writing. ``scripts/databar_probe.py`` measures it.
"""

from __future__ import annotations

import numpy as np

from fedtransfer_jax.data.calibration import Calibration

MIN_BAR_ROWS = 8
_MIN_LEFT = 32  # rows a micrograph keeps below --databar (a grain-size measurement needs some)
MAX_BAR_FRACTION = 0.30
_TOL = 8  # grey levels (of 255) around a row's background value that count as background
_FLAT_ROW = 0.3  # a bar row is at least this fraction background (text covers the rest)
_BAR_MEAN = 0.75  # ... and on average at least this
_INK = 100  # grey levels from the background that count as writing (text is drawn in high contrast)
_MIN_GLYPHS = 5  # ... in at least this many marks
_LINE_ROW = 0.97  # a row this uniform, of any value, is a frame line of the bar
_CLEAN_ROW = 0.9  # one of its top 3 rows is at least this fraction background (bars have a margin)
_ABOVE_NEAR = 0.5  # each of the 4 rows above it is at most this fraction the bar's background value


def _row_modes(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of 8-bit grey values: the most common value, and the fraction of pixels within ``_TOL`` of it."""
    h = q.shape[0]
    counts = np.zeros((h, 256), np.int64)
    np.add.at(counts, (np.repeat(np.arange(h), q.shape[1]), q.ravel()), 1)
    modes = counts.argmax(axis=1)
    window = np.cumsum(np.pad(counts, ((0, 0), (_TOL + 1, _TOL))), axis=1)
    near = window[np.arange(h), modes + 2 * _TOL + 1] - window[np.arange(h), modes]
    return modes, near / q.shape[1]


def detect_databar(image: np.ndarray) -> int:
    """Rows at the bottom of ``image`` ([H, W] or [H, W, C] in [0, 1]) that look like an instrument's data
    bar (module docstring), or 0. Conservative, since a false find hides part of a micrograph: the band's
    rows share one background value, are mostly that value (text and a scale bar cover the rest), and
    start with a clean background row; the rows just above it mostly differ from that value, which is what
    a straight, full-width edge between an image and a bar looks like (a grain's edge is not straight)."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    h, w = grey.shape
    limit = int(MAX_BAR_FRACTION * h)
    if w < 32 or limit < MIN_BAR_ROWS:
        return 0
    region = np.clip(np.rint(grey[max(0, h - limit - 8) :] * 255.0), 0, 255).astype(np.int64)
    modes, flat = _row_modes(region)
    n = len(region)
    # The bar's background: the commonest row value of its last rows (not the last row's own, which is
    # often a frame line: FEI draws white lines above and below its bar).
    background = int(np.bincount(modes[-MIN_BAR_ROWS:]).argmax())
    near = np.abs(region - background) <= _TOL  # [rows, W]: a pixel of the bar's background
    rows, misses, run = 0, 0, 0
    for i in range(n - 1, -1, -1):  # upwards from the last row
        depth = n - i
        if depth > limit:
            break
        on_background = flat[i] >= _FLAT_ROW and abs(int(modes[i]) - background) <= _TOL
        if on_background or flat[i] >= _LINE_ROW:  # text on the background, or a full-width frame line
            rows, run = depth, 0
        else:
            misses, run = misses + 1, run + 1
            if run > 3 or misses > 0.15 * depth + 1:
                break
    if rows < max(MIN_BAR_ROWS, int(0.02 * h)) or rows >= limit or n - rows < 4:
        return 0
    top = n - rows
    clean_top = near[top : top + 3].mean(axis=1).max() >= _CLEAN_ROW
    above = near[top - 4 : top].mean(axis=1)
    if not clean_top or flat[top:].mean() < _BAR_MEAN or above.max() > _ABOVE_NEAR:
        return 0
    if _glyphs(region[top:], background) < _MIN_GLYPHS:
        return 0  # a flat band without writing: a twin lamella, a flat grain, padding, not a data bar
    return rows


def _glyphs(band: np.ndarray, background: int) -> int:
    """Marks written on a band: connected groups of pixels far from its background that are shorter than
    the band (letters, digits, a scale bar). A grain boundary crossing a flat band spans all of it."""
    from scipy import ndimage  # noqa: PLC0415

    ink = np.abs(band - background) > _INK  # (frame lines along the band's edges are not writing: dropped)
    # Joined across gaps of a few px: a line that noise breaks into pieces is one mark again (and a word's
    # letters become one mark, still several per data bar).
    inner = np.ones(len(band), bool)
    inner[[0, -1]] = False
    ink = ndimage.binary_dilation(ink, iterations=2) & inner[:, None]
    labels, n = ndimage.label(ink, structure=np.ones((3, 3), bool))
    if n == 0:
        return 0
    rows_of = ndimage.find_objects(labels)
    heights = np.array([sl[0].stop - sl[0].start for sl in rows_of])
    widths = np.array([sl[1].stop - sl[1].start for sl in rows_of])
    small = (heights >= 3) & (heights <= 0.8 * len(band)) & (widths <= 0.5 * band.shape[1])
    return int(small.sum())


def databar_rows(image: np.ndarray, calibration: Calibration, mode: str | int = "auto") -> tuple[int, str]:
    """How many bottom rows of ``image`` to leave out, and why. ``mode``: 'auto' (the file's metadata, else
    ``detect_databar``), 'none' (keep every row), or a number of rows."""
    h = image.shape[0]
    if mode == "none":
        return 0, ""
    if not isinstance(mode, str):
        rows = int(mode)
        if rows and not 0 <= rows <= h - _MIN_LEFT:
            raise ValueError(f"--databar={rows} rows leaves less than {_MIN_LEFT} rows of an image {h} px high")
        return rows, "--databar" if rows else ""
    if calibration.databar_rows:
        return calibration.databar_rows, calibration.databar_source
    rows = detect_databar(image)
    found = "found in the pixels: a flat band with writing on it, as instruments draw their data bar"
    return rows, found if rows else ""


def parse_databar(value: str) -> str | int:
    """``--databar``: 'auto', 'none' or a number of rows >= 0."""
    v = str(value).strip().lower()
    if v in ("auto", "none"):
        return v
    try:
        rows = int(v)
    except ValueError:
        rows = -1
    if rows < 0:
        raise ValueError(f"--databar must be 'auto', 'none' or a number of rows >= 0, got {value!r}")
    return rows
