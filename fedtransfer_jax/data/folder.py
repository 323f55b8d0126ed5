"""Real micrographs on disk: reading images/labels, pairing them, label sanity checks, leak-free splits.

Layouts understood (see docs/ARCHITECTURE.md for the array conventions):

    DIR/<client>/images/*  +  DIR/<client>/labels/*     (one sub-folder per lab / client)
    DIR/images             +  DIR/labels                 (a single client named after DIR)

A label file has the same stem as its image and one of the suffixes in ``LABEL_SUFFIXES``. Label files
mark boundaries with 255 (anything > 127 counts); data sets that mark boundaries with 0 are read with
``invert=True``. Everything here is plain numpy so it can run inside a tfds builder without TensorFlow.

Reading undoes what a viewer would show differently from the stored samples, for images and labels
alike: the EXIF/TIFF Orientation tag is applied (a camera JPEG tagged "rotate 90" is read upright), CMYK
JPEGs (incl. Adobe-inverted) and TIFFs are converted to RGB, and palette (indexed-colour) labels are read
by colour index (two indices: the brighter colour is boundary; more is an error naming the file). A float
image with NaN/inf pixels is refused (naming the file and the first bad pixel) rather than repaired: a
NaN spreads through every convolution of its tile. A FIFO or other non-regular file named like an image
is never opened (skipped with a ``SkippedFileWarning``; reading it directly is a ``NotRegularFileError``).
An image whose upright size differs from its label's is an error naming both files.

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
=====================================================  =========  ===========================================

The limits (``PLAUSIBLE_BOUNDARY_FRACTION``, ``INVERTED_ABOVE``...) come from hand-labelled and synthetic
data: the real TBM tint-etched crops have 10-24 % boundary pixels, the synthetic labs 11-33 % per image.
Messages name the files and the key/flag that fixes them (``data.invert_labels`` / ``--invert_labels``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")

PathLike = str | Path
Pair = tuple[Path, Path]


# ----------------------------------------------------------------------------------------------
# Low-level readers.
# ----------------------------------------------------------------------------------------------


class NotRegularFileError(ValueError):
    """A path named like an image that is not a regular file (a FIFO, socket or device): never opened,
    because reading a FIFO blocks until something writes to it."""


def check_regular_file(path: PathLike) -> None:
    """Raises ``NotRegularFileError`` (naming the file) unless ``path`` is a regular file (symlinks are
    followed); a missing path raises ``FileNotFoundError``. Never opens the file."""
    import stat

    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise NotRegularFileError(f"{path} is {kind}, not an image file: not read (move it out of the folder)")


# EXIF/TIFF Orientation (tag 274): how the stored pixels must be turned to be seen upright.
_ORIENTATION_TAG = 0x0112


def _apply_orientation(arr: np.ndarray, orientation: int | None) -> np.ndarray:
    """The stored array turned upright for an EXIF/TIFF Orientation value (1-8; others: unchanged).

    Same transforms as ``PIL.ImageOps.exif_transpose`` (tested against it), on numpy so that 16-bit and
    float data keep their dtype: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise.
    """
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = np.swapaxes(arr, 0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = np.swapaxes(arr[::-1, ::-1], 0, 1)
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def _pil_orientation(img) -> int | None:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the pixels unreadable
        return None


def _palette_indices(img, path: Path) -> np.ndarray:
    """A palette ('P') label read by colour index: 255 = boundary, 0 = background.

    Indexed PNGs (VOC-style annotation tools) store a class index per pixel and a palette of display
    colours that need not be black and white. A label uses exactly two indices: the one whose palette
    colour is brighter (brightest channel, as for RGB labels) is the boundary, the darker one the
    background (with the usual VOC palette, index 0 is black: background). One used index: the label is
    all background, or all boundary if its colour is bright. More indices, or two equally bright
    colours, are an error naming the file.
    """
    index = np.asarray(img)
    used = np.flatnonzero(np.bincount(index.ravel(), minlength=256))
    pal = img.getpalette() or []
    colours = np.zeros((256, 3), np.int64)
    flat = np.asarray(pal[: 3 * 256], np.int64)
    colours[: flat.size // 3] = flat[: flat.size // 3 * 3].reshape(-1, 3)
    bright = colours.max(axis=-1)
    if used.size > 2:
        raise ValueError(
            f"palette (indexed-colour) label {path} uses {used.size} colour indices "
            f"{used[:8].tolist()}{'...' if used.size > 8 else ''}: a boundary label needs exactly two "
            "(background and boundary); merge the classes, or save it as a black (0) / white (255) "
            "greyscale PNG"
        )
    if used.size == 2:
        a, b = used
        if bright[a] == bright[b]:
            raise ValueError(
                f"palette label {path} uses two colour indices ({a}, {b}) with equally bright colours "
                f"{tuple(colours[a])} and {tuple(colours[b])}: cannot tell boundary from background; save it "
                "as a black (0) / white (255) greyscale PNG"
            )
        boundary_index = a if bright[a] > bright[b] else b
    else:
        boundary_index = used[0] if bright[used[0]] > 127 else -1
    return np.where(index == boundary_index, 255, 0).astype(np.uint8)


def _cmyk_to_rgb(arr: np.ndarray) -> np.ndarray:
    """A CMYK(A) TIFF's ink amounts as RGB (0 ink = white), the way PIL converts CMYK."""
    full = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
    ink = arr[..., :4].astype(np.float64) / full
    rgb = (1.0 - ink[..., :3]) * (1.0 - ink[..., 3:4])
    return (rgb * full).round().astype(arr.dtype) if full > 1 else rgb.astype(arr.dtype)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        arr = np.asarray(tif.asarray())
        tag = page.tags.get("Orientation")
        orientation = int(tag.value) if tag is not None else 1
        photometric = int(getattr(page, "photometric", 0) or 0)
        inkset = int(page.tags["InkSet"].value) if "InkSet" in page.tags else 1
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and arr.shape[-1] > 4 and arr.shape[0] <= 4:
        arr = np.moveaxis(arr, 0, -1)  # Planar (channel-first) TIFF.
    if photometric == 5 and inkset == 1 and arr.ndim == 3 and arr.shape[-1] >= 4:  # SEPARATED, CMYK inks
        arr = _cmyk_to_rgb(arr)
    if orientation != 1 and arr.ndim in (2, 3):
        arr = _apply_orientation(arr, orientation)
    return arr


def _read_raw(path: Path, *, palette_as_index: bool = False) -> np.ndarray:
    """Decodes a file to its native array (uint8/uint16/float...), channel-last, upright.

    TIFF goes through tifffile because PIL mangles 16-bit and multi-sample TIFFs; everything else
    through PIL. Any decoder failure is turned into a ValueError naming the file, so a single corrupt
    micrograph in a folder of hundreds is easy to find. What a viewer would show differently from the
    stored samples is undone here, for images and labels alike (so a pair stays aligned):

    * EXIF/TIFF Orientation (a camera's "rotate 90 degrees to display" tag) is applied;
    * CMYK (JPEG, incl. Adobe's inverted CMYK, and TIFF) is converted to RGB, not read as RGBA;
    * palette images are expanded to their colours, or, with ``palette_as_index`` (labels), read by
      colour index (``_palette_indices``).

    A path that is not a regular file (a FIFO named ``x.png``) is refused without being opened.
    """
    check_regular_file(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            arr = _read_tiff(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                orientation = _pil_orientation(img)
                if img.mode == "P" and palette_as_index:
                    arr = _palette_indices(img, path)
                else:
                    if img.mode == "P":  # Palette images: expand to real colours first.
                        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):  # Not RGB samples: convert.
                        img = img.convert("RGB")
                    arr = np.asarray(img)
            arr = _apply_orientation(arr, orientation) if orientation not in (None, 1) else arr
    except (FileNotFoundError, NotRegularFileError):
        raise
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e
    except Exception as e:  # PIL/tifffile raise many different types for corrupt data.
        raise ValueError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and arr.shape[-1] > 4 and arr.shape[0] <= 4:
        arr = np.moveaxis(arr, 0, -1)  # Planar (channel-first) TIFF.
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] > 4):
        raise ValueError(f"unsupported image layout {arr.shape} in {path} (expected HxW or HxWxC, C<=4)")
    if arr.size == 0:
        raise ValueError(f"empty image in {path}")
    return arr


def _to_unit(arr: np.ndarray, path: Path) -> np.ndarray:
    """Scales an integer/bool/float array to float32 in [0, 1] using the dtype's maximum.

    Scaling by the dtype maximum (not the image maximum) keeps absolute intensities comparable across
    images of one lab, which is what style statistics rely on.
    """
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.int32 and arr.min() >= 0 and arr.max() <= 65535:
            return (arr / 65535.0).astype(np.float32)  # PIL mode 'I' holding a 16-bit PNG.
        info = np.iinfo(arr.dtype)
        if info.min < 0 and arr.min() < 0:
            raise ValueError(f"signed integer image with negative values in {path}")
        return (arr.astype(np.float64) / float(info.max)).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:  # NaN would spread through every convolution of its tile and wipe its boundaries.
            raise ValueError(
                f"floating-point image {path} has {bad} NaN/inf pixel(s) (first at row, col "
                f"{tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0][:2])}): not used; fill or mask "
                "them (e.g. with the neighbouring values) and save again"
            )
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"floating-point image {path} has values in [{lo}, {hi}], expected [0, 1]")
        return arr.astype(np.float32)
    raise ValueError(f"unsupported pixel dtype {arr.dtype} in {path}")


def read_image(path: PathLike) -> np.ndarray:
    """Reads a micrograph as float32 ``[H, W, 3]`` in ``[0, 1]``.

    Grey images are replicated to three channels and alpha is dropped, so every lab feeds the same
    RGB network regardless of its camera. 16-bit data is scaled by 65535.

    Raises:
      ValueError: the file is corrupt/unreadable or has an unsupported layout (message names it).
    """
    path = Path(path)
    arr = _to_unit(_read_raw(path), path)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] in (1, 2):  # Grey or grey+alpha.
        arr = arr[..., :1]
    arr = arr[..., :3]  # RGBA -> RGB.
    return np.ascontiguousarray(np.broadcast_to(arr, arr.shape[:2] + (3,)), dtype=np.float32)


def _label_channel_max(raw: np.ndarray) -> np.ndarray:
    """One value per pixel: the brightest colour channel (alpha ignored); annotators often draw in red."""
    if raw.ndim == 2:
        return raw
    return raw[..., : 3 if raw.shape[-1] >= 3 else 1].max(axis=-1)


def _label_from_raw(raw: np.ndarray, path: Path, invert: bool) -> np.ndarray:
    if raw.dtype == np.uint8 and raw.max() == 1:
        on = raw > 0
    else:
        on = _to_unit(raw, path) > 0.5
    if on.ndim == 3:
        channels = on.shape[-1]
        on = on[..., : 3 if channels >= 3 else 1].any(axis=-1)
    if invert:
        on = ~on
    return on.astype(np.uint8)


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
    return LabelStats(
        path=Path(path),
        boundary_fraction=float(np.mean(label)),
        grey_fraction=float(np.mean(mid)),
        max_value=float(grey.max()),
        full_scale=full,
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
    if median > INVERTED_ABOVE:
        fix = (
            f"they already mark boundaries white: set {invert_flag}=False"
            if invert
            else f"they draw boundaries black on white: set {invert_flag}=True"
        )
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
        if invert:
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


def upright_shape(path: PathLike) -> tuple[int, int, int]:
    """``(height, width, orientation)`` of an image as ``read_image`` returns it, from the file's header
    only (no pixel decoding): the EXIF/TIFF Orientation tag (1 = none) swaps height and width for 5-8."""
    path = Path(path)
    check_regular_file(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                h, w = int(page.imagelength), int(page.imagewidth)
                tag = page.tags.get("Orientation")
                orientation = int(tag.value) if tag is not None else 1
        else:
            from PIL import Image

            with Image.open(path) as img:
                (w, h), orientation = img.size, _pil_orientation(img) or 1
    except Exception as e:  # noqa: BLE001 - corrupt headers: named like the readers do
        raise ValueError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e
    return (w, h, orientation) if orientation in (5, 6, 7, 8) else (h, w, orientation)


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


# ----------------------------------------------------------------------------------------------
# Folder layout.
# ----------------------------------------------------------------------------------------------


class SkippedFileWarning(UserWarning):
    """A file named like an image that is not read (a FIFO, socket or device)."""


def _files_with_suffix(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Sorted visible regular files in ``folder`` whose suffix (case-insensitive) is in ``suffixes``.

    An entry named like an image that is not a regular file (a FIFO ``x.png``, a socket, a device) is
    skipped with a ``SkippedFileWarning`` naming it: opening a FIFO would block forever.
    """
    named = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in suffixes)
    odd = [p for p in named if p.exists() and not p.is_file() and not p.is_dir()]
    if odd:
        warnings.warn(
            f"{len(odd)} entr{'y' if len(odd) == 1 else 'ies'} of {folder} named like images are not regular "
            f"files (FIFO, socket or device) and are skipped: {', '.join(map(str, odd[:_LIST_AT_MOST]))}",
            SkippedFileWarning,
            stacklevel=3,
        )
    return [p for p in named if p.is_file()]


def discover_clients(data_dir: PathLike) -> dict[str, Path]:
    """Maps client name -> client folder for either supported layout.

    ``DIR/images`` makes DIR itself the single client (named after its basename); otherwise every
    sub-folder holding an ``images/`` folder is a client. Sub-folders without one are ignored so that
    READMEs/licence folders can sit next to the data.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if (data_dir / "images").is_dir():
        return {data_dir.resolve().name: data_dir}
    clients = {p.name: p for p in sorted(data_dir.iterdir()) if p.is_dir() and (p / "images").is_dir()}
    if not clients:
        raise ValueError(
            f"no clients found in {data_dir}: expected {data_dir}/images + {data_dir}/labels, or "
            f"{data_dir}/<client>/images + {data_dir}/<client>/labels"
        )
    return clients


def list_pairs(client_dir: PathLike) -> list[Pair]:
    """Returns the sorted ``(image_path, label_path)`` pairs of one client folder.

    Pairing happens eagerly so that a missing or ambiguous label fails before any long build starts.

    Raises:
      FileNotFoundError: ``images/``/``labels/`` missing, or an image has no label (names both paths).
      ValueError: the client has no images, or two files share a stem.
    """
    client_dir = Path(client_dir)
    image_dir, label_dir = client_dir / "images", client_dir / "labels"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"client folder {client_dir} has no images/ folder ({image_dir})")
    images = _files_with_suffix(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise ValueError(
            f"client folder {client_dir} has no images in {image_dir} (suffixes {IMAGE_SUFFIXES})"
        )
    if not label_dir.is_dir():
        raise FileNotFoundError(f"client folder {client_dir} has no labels/ folder ({label_dir})")
    labels: dict[str, Path] = {}
    for p in _files_with_suffix(label_dir, LABEL_SUFFIXES):
        if p.stem in labels:
            raise ValueError(f"two label files share the stem {p.stem!r}: {labels[p.stem]} and {p}")
        labels[p.stem] = p
    pairs, seen = [], {}
    for img in images:
        if img.stem in seen:
            raise ValueError(f"two image files share the stem {img.stem!r}: {seen[img.stem]} and {img}")
        seen[img.stem] = img
        if img.stem not in labels:
            expected = " or ".join(str(label_dir / (img.stem + s)) for s in LABEL_SUFFIXES)
            raise FileNotFoundError(f"no label for image {img}: expected {expected}")
        pairs.append((img, labels[img.stem]))
    return pairs


def load_pair(
    image_path: PathLike, label_path: PathLike, invert: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Reads one image and its label, checking that they have the same size.

    Raises:
      ValueError: size mismatch (names both files and both sizes) or an unreadable file.
    """
    image, label = read_image(image_path), read_label(label_path, invert=invert)
    if image.shape[:2] != label.shape:
        orientation = upright_shape(image_path)[2]
        raise ValueError(size_mismatch_message(image_path, image.shape[:2], label_path, label.shape, orientation))
    return image, label


# ----------------------------------------------------------------------------------------------
# Leak-free splitting.
# ----------------------------------------------------------------------------------------------


def group_of(path: PathLike, group_regex: str | None = None) -> str:
    """The full-micrograph id of a file: group 1 of ``group_regex`` on the stem, else the whole stem."""
    stem = Path(path).stem
    if not group_regex:
        return stem
    m = re.search(group_regex, stem)
    if m is None:
        raise ValueError(f"group_regex {group_regex!r} does not match the file name {Path(path).name!r}")
    return m.group(1) if m.re.groups else m.group(0)


def split_by_group(
    paths: Sequence[PathLike | Pair],
    test_fraction: float,
    seed: int,
    group_regex: str | None = None,
) -> tuple[list, list]:
    """Splits files into (train, test) by full-image id so crops of one micrograph never leak.

    Items may be paths or ``(image, label)`` pairs (grouped by the image). Groups are shuffled with
    ``np.random.default_rng([seed])``; ``round(test_fraction * n_groups)`` of them go to test, clamped
    so that each side gets at least one group. Input order is kept within each side.

    Raises:
      ValueError: fewer than 2 groups, test_fraction outside (0, 1), or a name the regex misses.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    keys = [group_of(p[0] if isinstance(p, tuple) else p, group_regex) for p in paths]
    groups = sorted(set(keys))
    if len(groups) < 2:
        first = paths[0][0] if paths and isinstance(paths[0], tuple) else (paths[0] if paths else None)
        raise ValueError(
            f"need at least 2 groups to split, found {len(groups)} (group_regex={group_regex!r}, first file {first})"
        )
    n_test = int(np.clip(round(test_fraction * len(groups)), 1, len(groups) - 1))
    order = np.random.default_rng([seed]).permutation(len(groups))
    test_groups = {groups[i] for i in order[:n_test]}
    train = [p for p, k in zip(paths, keys) if k not in test_groups]
    test = [p for p, k in zip(paths, keys) if k in test_groups]
    return train, test
