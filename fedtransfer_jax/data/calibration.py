"""What a micrograph file says about its own scale, and which of its rows are not micrograph.

A folder of micrographs taken at several magnifications has one pixel size per image, and microscopes
write it into the file. ``read_calibration`` reads it from the metadata that instruments and the usual
tools write into TIFFs (all parsed by tifffile, or plain text/XML it exposes):

* FEI / Thermo Fisher SEM and FIB (tags 34680/34682): ``[Scan] PixelWidth`` in metres, and the height of
  the data bar the instrument appends below the image, ``[PrivateFei] DatabarHeight``;
* Phenom desktop SEM (tag 34683, XML): ``<pixelWidth unit="um">`` and ``<databarHeight>``;
* Zeiss SmartSEM (tag 34118): ``AP_IMAGE_PIXEL_SIZE``, e.g. ``Image Pixel Size = 12.3 nm``;
* ImageJ / Fiji: the ``unit=`` of its description with the TIFF XResolution (pixels per unit);
* OME-TIFF (Bio-Formats, microscope cameras): ``PhysicalSizeX`` and ``PhysicalSizeXUnit``.

A plain TIFF/PNG/JPEG resolution (72, 96 or 300 dpi) is a printing hint that cameras and editors write
whatever the magnification, so it is never taken as a calibration.

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

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fedtransfer_jax.data import image_files

# Lengths in micrometres per unit, for the units these formats write.
_UM_PER_UNIT = {
    "pm": 1e-6, "nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "\\u00b5m": 1.0,
}
# A pixel size outside this range (1 pm .. 10 mm) is a broken tag (or flag), not a calibration.
PLAUSIBLE_UM = (1e-6, 1e4)
_TIFF_SUFFIXES = (".tif", ".tiff")


class Calibration(NamedTuple):
    """What the file says: µm per pixel (None: nothing usable), where that came from, the number of data
    bar rows at the bottom of the stored image (0: none stated) and where that came from, and notes on
    metadata that was found but not used (non-square pixels, an implausible value)."""

    pixel_size_um: float | None = None
    pixel_source: str = ""
    databar_rows: int = 0
    databar_source: str = ""
    notes: tuple[str, ...] = ()


def _um(value, unit: str) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    factor = _UM_PER_UNIT.get(str(unit).strip().lower().replace("\xb5", "µ"))
    if factor is None or not math.isfinite(v) or v <= 0:
        return None
    return v * factor


def _square(width_um: float | None, height_um: float | None, source: str, notes: list[str]) -> float | None:
    """One pixel size from a width and (optional) height; non-square pixels use their geometric mean."""
    if width_um is None:
        return None
    if height_um is not None and abs(height_um - width_um) > 0.01 * width_um:
        notes.append(
            f"{source}: pixels are not square ({width_um:.4g} x {height_um:.4g} µm); sizes use their geometric mean"
        )
        return math.sqrt(width_um * height_um)
    return width_um


def _fei(meta: dict, notes: list[str]) -> tuple[float | None, str, int]:
    size, source = None, ""
    for section in ("Scan", "EScan"):
        s = meta.get(section) or {}
        width = _um(s.get("PixelWidth"), "m")
        if width is not None:
            source = f"FEI/Thermo metadata [{section}] PixelWidth"
            size = _square(width, _um(s.get("PixelHeight"), "m"), source, notes)
            break
    bar = (meta.get("PrivateFei") or {}).get("DatabarHeight")
    return size, source, int(bar) if isinstance(bar, (int, float)) and bar > 0 else 0


def _phenom(text: str, notes: list[str]) -> tuple[float | None, str, int]:
    try:
        root = ET.fromstring(text.strip("\x00 \r\n"))
    except ET.ParseError:
        return None, "", 0
    size, source = None, ""
    pw, ph = root.find(".//pixelWidth"), root.find(".//pixelHeight")
    if pw is not None:
        source = "Phenom metadata pixelWidth"
        width = _um(pw.text, pw.get("unit", "m"))
        height = _um(ph.text, ph.get("unit", "m")) if ph is not None else None
        size = _square(width, height, source, notes)
    bar = root.find(".//databarHeight")
    try:
        rows = int(float(bar.text)) if bar is not None else 0
    except (TypeError, ValueError):
        rows = 0
    return size, source, max(rows, 0)


def _zeiss(meta: dict) -> tuple[float | None, str]:
    entry = meta.get("ap_image_pixel_size") or meta.get("ap_pixel_size")
    if isinstance(entry, tuple) and len(entry) >= 3:
        return _um(entry[1], entry[2]), "Zeiss SEM metadata AP_IMAGE_PIXEL_SIZE"
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], str):
        m = re.match(r"\s*([0-9.eE+-]+)\s*(\S+)", entry[1])
        if m:
            return _um(m.group(1), m.group(2)), "Zeiss SEM metadata AP_IMAGE_PIXEL_SIZE"
    return None, ""


def _imagej(tif, page, notes: list[str]) -> tuple[float | None, str]:
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip()
    if not unit or unit.lower() in ("pixel", "pixels", "px", "inch"):
        return None, ""
    res = page.tags.get("XResolution")
    if res is None:
        return None, ""
    num, den = res.value if isinstance(res.value, tuple) else (res.value, 1)
    if not num or not den:
        return None, ""
    per_px = _um(den / num, unit)
    if per_px is None:
        notes.append(f"ImageJ metadata: unit {unit!r} not understood; pixel size not read")
        return None, ""
    yres = page.tags.get("YResolution")
    height = None
    if yres is not None and isinstance(yres.value, tuple) and yres.value[0]:
        height = _um(yres.value[1] / yres.value[0], unit)
    source = f"ImageJ metadata (unit={unit}, XResolution)"
    return _square(per_px, height, source, notes), source


def _ome(xml: str, notes: list[str]) -> tuple[float | None, str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, ""
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels" and el.get("PhysicalSizeX"):
            source = "OME-XML PhysicalSizeX"
            width = _um(el.get("PhysicalSizeX"), el.get("PhysicalSizeXUnit", "µm"))
            height = None
            if el.get("PhysicalSizeY"):
                height = _um(el.get("PhysicalSizeY"), el.get("PhysicalSizeYUnit", "µm"))
            return _square(width, height, source, notes), source
    return None, ""


def read_calibration(path: str | Path) -> Calibration:
    """The pixel size and data bar height a micrograph file states (see the module docstring); an empty
    ``Calibration`` for a file without any (every non-TIFF, most TIFFs), never an error: reading the image
    itself is what reports a broken file."""
    path = Path(path)
    if path.suffix.lower() not in _TIFF_SUFFIXES:
        return Calibration()
    import tifffile

    notes: list[str] = []
    size, source, bar, bar_source = None, "", 0, ""
    try:
        with tifffile.TiffFile(path) as tif:
            page = image_files.main_tiff_page(tif, path)  # the page read_image reads
            orientation = page.tags.get("Orientation")
            upright = orientation is None or int(orientation.value) == 1
            if tif.is_fei:
                meta = tif.fei_metadata or {}
                size, source, bar = _fei(meta, notes)
                bar_source = "FEI/Thermo metadata [PrivateFei] DatabarHeight" if bar else ""
                image_rows = (meta.get("Image") or {}).get("ResolutionY")
                if bar and isinstance(image_rows, int) and image_rows + bar != int(page.imagelength):
                    # Cropped or resized after the microscope wrote it: the stated bar is not where it was.
                    notes.append(
                        f"{bar_source} = {bar} rows not used: the image is {page.imagelength} rows, not the "
                        f"{image_rows} + {bar} the microscope wrote (cropped or resized since?)"
                    )
                    bar, bar_source = 0, ""
            phenom = page.tags.get(34683)
            if size is None and phenom is not None:
                text = phenom.value.decode("utf-8", "replace") if isinstance(phenom.value, bytes) else str(phenom.value)
                size, source, phenom_bar = _phenom(text, notes)
                if phenom_bar and not bar:
                    bar, bar_source = phenom_bar, "Phenom metadata databarHeight"
            if size is None and tif.is_sem:
                size, source = _zeiss(tif.sem_metadata or {})
            if size is None and tif.is_imagej:
                size, source = _imagej(tif, page, notes)
            if size is None and tif.is_ome and tif.ome_metadata:
                size, source = _ome(tif.ome_metadata, notes)
            height = int(page.imagelength)
    except Exception:  # noqa: BLE001 - a file tifffile cannot parse has no calibration; read_image names it
        return Calibration()
    if size is not None and not PLAUSIBLE_UM[0] <= size <= PLAUSIBLE_UM[1]:
        notes.append(f"{source} gives {size:.3g} µm per pixel, not a plausible pixel size: not used")
        size, source = None, ""
    if bar and (not upright or bar >= height):
        why = "the image is rotated" if not upright else "not below the image"
        notes.append(f"{bar_source} = {bar} rows not used ({why})")
        bar, bar_source = 0, ""
    return Calibration(size, source if size is not None else "", bar, bar_source, tuple(notes))


# ----------------------------------------------------------------------------------------------
# A data bar found in the pixels.
# ----------------------------------------------------------------------------------------------

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


def choose_pixel_size(flag_um: float | None, calibration: Calibration) -> tuple[float | None, str, list[str]]:
    """The pixel size an image is measured with: ``--pixel_size_um`` when given (it wins, with a warning where
    the file states a different one), else the file's own, else None. Returns ``(µm or None, source,
    warnings)``."""
    warnings: list[str] = []
    own = calibration.pixel_size_um
    if flag_um:
        if own is not None and abs(own - flag_um) > 0.02 * flag_um:
            warnings.append(
                f"--pixel_size_um {flag_um:g} used as given, but the file states {own:.4g} µm per pixel "
                f"({calibration.pixel_source}); leave the flag out to use each file's own"
            )
        return flag_um, "--pixel_size_um", warnings
    if own is not None:
        return own, calibration.pixel_source, warnings
    return None, "", warnings
