"""What a micrograph file says about its own scale: the pixel size its metadata states.

A folder of micrographs taken at several magnifications has one pixel size per image, and microscopes
write it into the file. ``read_calibration`` reads it from the metadata that instruments and the usual
tools write into TIFFs (all parsed by tifffile, or plain text/XML it exposes):

* FEI / Thermo Fisher SEM and FIB (tags 34680/34682): ``[Scan] PixelWidth`` in metres, and the height of
  the data bar the instrument appends below the image, ``[PrivateFei] DatabarHeight``;
* Phenom desktop SEM (tag 34683, XML): ``<pixelWidth unit="um">`` and ``<databarHeight>``;
* Zeiss SmartSEM (tag 34118): the field width ``AP_WIDTH`` over the image's width (its ``Image Pixel Size``
  is that of a 1024-px scan, whatever width the image was saved at);
* TESCAN SEM (tag 50431, ``KEY=VALUE`` text): ``PixelSizeX`` and ``PixelSizeY`` in metres;
* Olympus SIS / Stream cameras (tag 33560, on whichever page carries it): ``pixelsizex`` in metres;
* ImageJ / Fiji: the ``unit=`` of its description with the TIFF XResolution (pixels per unit);
* OME-TIFF (Bio-Formats, microscope cameras): ``PhysicalSizeX`` and ``PhysicalSizeXUnit``.

Hitachi and JEOL SEMs write their metadata beside the image instead, in a text file of the same name
(``IMAGE.txt``), whatever the image's format:

* Hitachi (``[SemImageFile]`` / ``[TemImageFile]``): ``PixelSize`` in nm, for ``DataSize`` = W x H;
* JEOL (``$CM_FORMAT``/``$$SM_...`` lines): the scale bar, ``$$SM_MICRON_MARKER`` (e.g. ``10um``) long and
  ``$$SM_MICRON_BAR`` px wide, for ``$CM_FULL_SIZE`` = W H.

A side file written for another width than the image's (the image was resized or cropped since) is noted
and not used.

A plain TIFF/PNG/JPEG resolution (72, 96 or 300 dpi) is a printing hint that cameras and editors write
whatever the magnification, so it is never taken as a calibration.

The height of the SEM data bar the metadata states (FEI/Thermo, Phenom) is read here too; data/databar.py
decides which rows to leave out.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

from fedtransfer_jax.data import image_files

# Lengths in micrometres per unit, for the units these formats write.
_UM_PER_UNIT = {
    "pm": 1e-6, "nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6, "\\u00b5m": 1.0,
}
# A pixel size outside this range (1 pm .. 10 mm) is a broken tag (or flag), not a calibration.
PLAUSIBLE_UM = (1e-6, 1e4)


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


def _zeiss(meta: dict, width_px: int) -> tuple[float | None, str]:
    """Zeiss SmartSEM: the field width over the stored image's width. Its ``Pixel Size`` fields hold the
    pixel of a 1024-px-wide scan whatever width the image was saved at (an image saved 512 px wide has
    pixels twice that size, as its scale bar shows), so they are used only as rosettasciio does (x 1024 /
    width) or for a 1024-px image."""
    field = meta.get("ap_width")
    field_um = _um(field[1], field[2]) if isinstance(field, tuple) and len(field) >= 3 else None
    if field_um is not None:
        return field_um / width_px, "Zeiss SEM metadata AP_WIDTH (field width) / image width"
    primary = meta.get("")
    if isinstance(primary, tuple) and len(primary) > 3 and isinstance(primary[3], float) and primary[3] > 0:
        return primary[3] * 1e6 * 1024 / width_px, "Zeiss SEM metadata (scan pixel size x 1024 / image width)"
    entry = meta.get("ap_image_pixel_size") or meta.get("ap_pixel_size")
    if width_px == 1024 and isinstance(entry, tuple) and len(entry) >= 3:
        return _um(entry[1], entry[2]), "Zeiss SEM metadata AP_IMAGE_PIXEL_SIZE"
    return None, ""


def _tescan(value, notes: list[str]) -> tuple[float | None, str]:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    fields = {}
    for line in text.replace("\x00", "\n").splitlines():
        key, sep, val = line.partition("=")
        if sep:
            fields.setdefault(key.strip(), val.strip())
    width = _um(fields.get("PixelSizeX"), "m")
    if width is None:
        return None, ""
    source = "TESCAN metadata PixelSizeX"
    return _square(width, _um(fields.get("PixelSizeY"), "m"), source, notes), source


def _olympus_sis(tif, width_px: int, notes: list[str]) -> tuple[float | None, str]:
    """Olympus SIS: the first page with a decoded OlympusSIS structure (often the full-bit-depth page behind
    an RGB preview of the same size); a page of another width than the one read is not used."""
    for page in tif.pages[:8]:
        tag = page.tags.get(33560)
        value = tag.value if tag is not None else None
        if not isinstance(value, dict) or "pixelsizex" not in value:
            continue
        source = "Olympus SIS metadata pixelsizex"
        if int(page.imagewidth) != width_px:
            notes.append(
                f"{source} is for a {page.imagewidth} px wide page, not the {width_px} px image read: not used"
            )
            return None, ""
        return _square(_um(value.get("pixelsizex"), "m"), _um(value.get("pixelsizey"), "m"), source, notes), source
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
    notes: list[str] = []
    size, source, bar, bar_source, upright, width, height = None, "", 0, "", True, 0, 0
    if image_files.is_tiff(path):
        try:
            size, source, bar, bar_source, upright, width, height = _from_tiff(path, notes)
        except Exception:  # noqa: BLE001 - a file tifffile cannot parse has no calibration; read_image names it
            return Calibration()
    side_file = _side_file(path)
    if side_file is not None:
        width = width or _stored_width(path)
        if width:
            side_notes: list[str] = []
            side_size, side_source = _side_file_size(side_file, width, side_notes)
            if size is None:
                size, source = side_size, side_source
                notes.extend(side_notes)
            elif side_size is not None and abs(side_size - size) > 0.02 * size:
                notes.append(
                    f"{side_source} states {side_size:.4g} µm per pixel, the file itself {size:.4g} ({source}): "
                    "the file's own is used"
                )
    if size is not None and not PLAUSIBLE_UM[0] <= size <= PLAUSIBLE_UM[1]:
        notes.append(f"{source} gives {size:.3g} µm per pixel, not a plausible pixel size: not used")
        size, source = None, ""
    if bar and (not upright or bar >= height):
        why = "the image is rotated" if not upright else "not below the image"
        notes.append(f"{bar_source} = {bar} rows not used ({why})")
        bar, bar_source = 0, ""
    return Calibration(size, source if size is not None else "", bar, bar_source, tuple(notes))


SIDE_FILE_MAX_BYTES = 256 * 1024  # Hitachi/JEOL side files are a few kB; never read a large file whole
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµμ]+)\s*$")
_HITACHI_SECTIONS = ("[SemImageFile]", "[TemImageFile]")


def _side_file(path: Path) -> Path | None:
    """``IMAGE.txt`` (or ``.TXT``) beside ``IMAGE.tif``/``.jpg``/...: where Hitachi and JEOL SEMs write metadata.
    None when there is none or it cannot be looked at (a name too long, a folder without permission)."""
    for suffix in (".txt", ".TXT"):
        try:
            candidate = path.with_suffix(suffix)
            if candidate != path and candidate.is_file():
                return candidate
        except (OSError, ValueError):
            continue
    return None


def is_side_file(path: str | Path) -> bool:
    """Whether the text file at ``path`` is a Hitachi or JEOL side file (its first 4 kB say so)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4097)
    except OSError:
        return False
    return _vendor(_side_lines(raw[:4096], truncated=len(raw) > 4096)) is not None


def _stored_width(path: Path) -> int:
    """The image's stored width in px from its header (0 when it cannot be read: read_image reports that)."""
    try:
        with image_files.open_pil(path) as im:
            return int(im.size[0])
    except Exception:  # noqa: BLE001
        return 0


def _side_text(raw: bytes, truncated: bool) -> str:
    """The text of a side file as instruments write it: UTF-8 (with or without a BOM), UTF-16, or the PC's
    code page (JEOL's µ is one latin-1 byte); NULs count as line ends; a last line cut by the read limit is
    dropped rather than read as a shorter number."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) > 8 and raw[1::2].count(0) > 0.4 * len(raw[1::2])):
        text = raw.decode("utf-16" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-16-le", "replace")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    text = text.lstrip("\ufeff").replace("\x00", "\n")
    if truncated:
        text = text.rsplit("\n", 1)[0]
    return text


def _side_lines(raw: bytes, truncated: bool) -> list[str]:
    """The stripped, non-empty lines of a side file's bytes (``_side_text``)."""
    return [line.strip() for line in _side_text(raw, truncated).splitlines() if line.strip()]


def _is_hitachi_header(line: str) -> bool:
    return line.split(";", 1)[0].strip() in _HITACHI_SECTIONS


def _vendor(lines: list[str]) -> str | None:
    """'Hitachi' (a ``[SemImageFile]``/``[TemImageFile]`` section), 'JEOL' (a ``$$SM_MICRON_BAR`` line), or None."""
    if any(_is_hitachi_header(line) for line in lines):
        return "Hitachi"
    return "JEOL" if "SM_MICRON_BAR" in _jeol_fields(lines) else None


def _hitachi_fields(lines: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of the ``[SemImageFile]``/``[TemImageFile]`` section only (first of each key)."""
    fields: dict[str, str] = {}
    inside = False
    for line in lines:
        if line.startswith("["):
            inside = _is_hitachi_header(line)
        elif inside:
            key, sep, val = line.partition("=")
            if sep:
                fields.setdefault(key.strip(), val.strip())
    return fields


def _jeol_fields(lines: list[str]) -> dict[str, str]:
    """``$KEY VALUE`` / ``$$KEY VALUE`` lines (first of each key; any whitespace between)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith("$"):
            key, *val = line.lstrip("$").split(None, 1)
            fields.setdefault(key, val[0].strip() if val else "")
    return fields


def _side_file_size(side_file: Path, width_px: int, notes: list[str]) -> tuple[float | None, str]:
    """The pixel size a Hitachi or JEOL side file states for an image ``width_px`` wide (module docstring);
    ``(None, "")`` for a text file that is neither, with a note where one was found but not used."""
    name = side_file.name
    try:
        with open(side_file, "rb") as fh:
            raw = fh.read(SIDE_FILE_MAX_BYTES + 1)
    except OSError as e:
        notes.append(f"side file {name} could not be read ({e.strerror or e}): its pixel size not used")
        return None, ""
    lines = _side_lines(raw[:SIDE_FILE_MAX_BYTES], truncated=len(raw) > SIDE_FILE_MAX_BYTES)
    vendor = _vendor(lines)
    if vendor == "Hitachi":
        hitachi = _hitachi_fields(lines)
        source = f"Hitachi side file {name} PixelSize"
        size = _um(hitachi.get("PixelSize"), "nm")
        if size is None:
            notes.append(f"{source}: {hitachi.get('PixelSize', 'missing')!r} is not a pixel size in nm: not used")
        stated = hitachi.get("DataSize", "")
    elif vendor == "JEOL":
        jeol = _jeol_fields(lines)
        source = f"JEOL side file {name} scale bar ($$SM_MICRON_MARKER / $$SM_MICRON_BAR)"
        marker = _LENGTH.match(jeol.get("SM_MICRON_MARKER", ""))
        try:
            bar_px = float(jeol["SM_MICRON_BAR"])
        except ValueError:
            bar_px = float("nan")
        length = _um(marker.group(1), marker.group(2)) if marker else None
        size = length / bar_px if length is not None and math.isfinite(bar_px) and bar_px > 0 else None
        if size is None:
            notes.append(
                f"{source}: marker {jeol.get('SM_MICRON_MARKER', 'missing')!r} over {jeol['SM_MICRON_BAR']!r} px "
                "not understood: not used"
            )
        stated = jeol.get("CM_FULL_SIZE", "")
    else:
        return None, ""
    if size is None:
        return None, ""
    written = re.match(r"^\s*(\d+)", stated)
    if written is None:
        notes.append(f"{source} does not state the image width it was written for: not checked against this image")
    elif int(written.group(1)) != width_px:
        notes.append(
            f"{source} is for an image {written.group(1)} px wide, not this {width_px} px one (resized or "
            "cropped since?): not used"
        )
        return None, ""
    return size, source


def _from_tiff(path: Path, notes: list[str]):
    """``(size, source, bar, bar_source, upright, width, height)`` from a TIFF's own tags."""
    import tifffile

    size, source, bar, bar_source = None, "", 0, ""
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
            size, source = _zeiss(tif.sem_metadata or {}, int(page.imagewidth))
        tescan = page.tags.get(50431)
        if size is None and tescan is not None:
            size, source = _tescan(tescan.value, notes)
        if size is None:
            size, source = _olympus_sis(tif, int(page.imagewidth), notes)
        if size is None and tif.is_imagej:
            size, source = _imagej(tif, page, notes)
        if size is None and tif.is_ome and tif.ome_metadata:
            size, source = _ome(tif.ome_metadata, notes)
        return size, source, bar, bar_source, upright, int(page.imagewidth), int(page.imagelength)


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
