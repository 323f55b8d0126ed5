"""Reading one micrograph or label file as the viewer shows it, in plain numpy (a tfds builder can run it
without TensorFlow).

Reading undoes what a viewer would show differently from the stored samples, for images and labels
alike: the EXIF/TIFF Orientation tag is applied (a camera JPEG tagged "rotate 90" is read upright), CMYK
JPEGs (incl. Adobe-inverted) and TIFFs are converted to RGB, and palette (indexed-colour) labels are read
by colour index (two indices: the brighter colour is boundary; more is an error naming the file). A float
image with NaN/inf pixels is refused (naming the file and the first bad pixel) rather than repaired: a
NaN spreads through every convolution of its tile. A FIFO or other non-regular file named like an image
is never opened (``NotRegularFileError``; the folder reader skips it with a warning). A TIFF is read from
its largest full-resolution page (not a thumbnail or pyramid level), with planar samples made
channel-last, white-is-zero grey inverted and palette indices mapped to their colours; a TIFF holding
several images of that size (a Fiji stack of slices or channels) is refused naming the file, since which
one is the micrograph is the user's call. Compressed TIFFs (LZW, JPEG, Deflate) are decoded by `imagecodecs`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
# The leading bytes of each format read here: what decides which reader opens a file (a TIFF saved without
# its suffix still gets the stack check and its calibration; a JPEG saved as ``.tif`` is still read), and
# what names an image file in a folder that lacks an image suffix.
MAGIC = {
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),  # little-, big-endian; BigTIFF
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "BMP": (b"BM",),  # and a DIB header size at byte 14 (_BMP_HEADER_SIZES): "BM" alone is also text
}
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)
SUFFIX_OF = {"TIFF": ".tif", "PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp"}

PathLike = str | Path
Pair = tuple[Path, Path]


# ----------------------------------------------------------------------------------------------
# Low-level readers.
# ----------------------------------------------------------------------------------------------


class NotRegularFileError(ValueError):
    """A path named like an image that is not a regular file (a FIFO, socket or device): never opened,
    because reading a FIFO blocks until something writes to it."""


def broken_link_message(path: PathLike) -> str:
    """What is wrong with a symbolic link that leads to no file: a missing target, or a loop of links."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{path} is a link that leads back to itself (a loop of links)"
    return f"{path} is a link to {os.readlink(path)}, which does not exist (a broken link)"


def check_regular_file(path: PathLike) -> None:
    """Raises ``NotRegularFileError`` (naming the file) unless ``path`` is a regular file (symlinks are
    followed); a missing path raises ``FileNotFoundError``. Never opens the file."""
    import stat

    if os.path.islink(path) and not os.path.exists(path):
        raise FileNotFoundError(broken_link_message(path))
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise NotRegularFileError(f"{path} is {kind}, not an image file: not read (move it out of the folder)")


def format_by_content(path: PathLike) -> str | None:
    """'TIFF', 'PNG', 'JPEG' or 'BMP' by the file's first bytes (``MAGIC``), whatever its name; None for any
    other content or a file that cannot be opened (its reader reports that)."""
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return None
    found = next((name for name, magics in MAGIC.items() if head.startswith(magics)), None)
    if found == "BMP" and (len(head) < 18 or int.from_bytes(head[14:18], "little") not in _BMP_HEADER_SIZES):
        return None
    return found


# The most pixels one image may have. predict holds an image, its probabilities and the network's activations
# at once: ~1.7 GB at 16 Mpx on the 2-core CPU (measured, --scale 1), so ~7 GB here. A larger image is refused
# from its header, before it is decoded, with one message (not PIL's "decompression bomb" warning or error,
# nor a machine out of memory).
MAX_PIXELS = 64_000_000


def check_pixel_count(path: PathLike, height: int, width: int) -> None:
    """ValueError naming ``path`` if an image of ``height`` x ``width`` px is over ``MAX_PIXELS``."""
    if height * width > MAX_PIXELS:
        raise ValueError(
            f"{path} is {width} x {height} px ({height * width / 1e6:.0f} Mpx), more than the "
            f"{MAX_PIXELS / 1e6:.0f} Mpx one image may have (it is held in memory several times over): crop it "
            "into parts and measure those"
        )


_PIL_LIMIT = threading.Lock()  # PIL's limit is one global: threads opening images swap it one at a time


@contextlib.contextmanager
def open_pil(path: PathLike):
    """``PIL.Image.open(path)`` without PIL's decompression-bomb warning and error (PIL checks only while
    opening, and with no limit it neither warns nor refuses): ``check_pixel_count`` is the size limit here,
    applied by the callers that decode pixels."""
    from PIL import Image

    with _PIL_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    with img:
        yield img


def is_tiff(path: PathLike) -> bool:
    """Whether the file at ``path`` is a TIFF by its content, whatever its suffix."""
    return format_by_content(path) == "TIFF"


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
    pal = img.getpalette() or []
    colours = np.zeros((256, 3), np.int64)
    flat = np.asarray(pal[: 3 * 256], np.int64)
    colours[: flat.size // 3] = flat[: flat.size // 3 * 3].reshape(-1, 3)
    return _label_from_indices(np.asarray(img), colours, path)


def _label_from_indices(index: np.ndarray, colours: np.ndarray, path: Path) -> np.ndarray:
    """``_palette_indices``' rule on an index array and its colours ``[n, 3]`` (8-bit scale)."""
    used = np.flatnonzero(np.bincount(index.ravel(), minlength=len(colours)))
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


def main_tiff_page(tif, path: Path):
    """The page of a TIFF that holds the micrograph: the largest full-resolution image page.

    Reduced-resolution pages (thumbnails, pyramid levels: NewSubfileType bit 0) and transparency masks
    (bit 2) are skipped, and a thumbnail stored first without that flag loses to the larger image. When
    other pages (or its series) hold images of the same shape and type (a Fiji/ImageJ stack, channels or
    detectors or z-slices as pages), the file is refused naming it: which one is "the" micrograph is for
    the user to say, and reading the slices as colour channels would segment a false-colour mix.
    """
    pages = list(tif.pages)
    if not pages:
        raise ValueError(f"cannot read image file {path}: a TIFF without a readable image (truncated?)")
    images = [p for p in pages if not int(getattr(p, "subfiletype", 0) or 0) & 0b101] or pages
    page = max(images, key=lambda p: int(p.imagelength) * int(p.imagewidth))  # the first of the largest
    twins = [p for p in images if p.shape == page.shape and p.dtype == page.dtype]  # pages like it
    count = len(twins)
    for series in tif.series:  # a contiguous ImageJ stack may describe all its slices in one page
        if any(getattr(p, "offset", None) == page.offset for p in series.pages[:1]):
            count = max(count, int(np.prod(series.shape)) // max(1, int(np.prod(page.shape))))
    if count > 1:
        raise ValueError(
            f"{path} is a stack of {count} images of {page.imagelength}x{page.imagewidth} px (pages, channels "
            "or slices): one micrograph per file is read; save the slice or channel you want as its own file "
            "(Fiji: Image > Duplicate, or Image > Stacks > Stack to Images)"
        )
    return page


def _invert_white_is_zero(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == bool:
        return ~arr
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return ((1 << min(bits, arr.dtype.itemsize * 8)) - 1 - arr.astype(np.int64)).astype(arr.dtype)
    if np.issubdtype(arr.dtype, np.integer):
        return (np.iinfo(arr.dtype).max - arr.astype(np.int64)).astype(arr.dtype)
    return 1.0 - arr


def _tiff_as_shown(arr: np.ndarray, page, path: Path, *, imagej: bool, label: bool) -> np.ndarray:
    """A page's samples as a viewer shows them: channel-last, CMYK and palette colours as RGB, white-is-zero
    grey inverted, upright. Labels keep their stored values (1 or 255 = boundary, whatever the display:
    tifffile saves a bool mask as white-is-zero) and read a palette by index (``_label_from_indices``);
    an ImageJ palette is a display LUT over grey values, which are what is read."""
    photometric = int(page.photometric if page.photometric is not None else 1)
    if int(page.planarconfig or 1) == 2 and arr.ndim == 3 and arr.shape[0] == page.samplesperpixel:
        arr = np.moveaxis(arr, 0, -1)  # planar (channel-first) samples
    if photometric == 0 and arr.ndim == 2 and not label:  # MINISWHITE: 0 is white
        arr = _invert_white_is_zero(arr, int(page.bitspersample))
    elif photometric == 3 and arr.ndim == 2 and page.colormap is not None and not imagej:  # PALETTE
        colours = np.asarray(page.colormap)  # [3, 2**bits], 16-bit scale
        if label:
            return _label_from_indices(arr, (colours.T >> 8 if colours.max() > 255 else colours.T), path)
        arr = np.moveaxis(colours[:, arr], 0, -1)
        arr = arr.astype(np.uint8) if colours.max() <= 255 else arr.astype(np.uint16)
    elif photometric == 5 and arr.ndim == 3 and arr.shape[-1] >= 4:  # SEPARATED, CMYK inks
        inkset = int(page.tags["InkSet"].value) if "InkSet" in page.tags else 1
        arr = _cmyk_to_rgb(arr) if inkset == 1 else arr
    tag = page.tags.get("Orientation")
    orientation = int(tag.value) if tag is not None else 1
    return _apply_orientation(arr, orientation) if orientation != 1 and arr.ndim in (2, 3) else arr


def _read_tiff(path: Path, *, label: bool = False) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = main_tiff_page(tif, path)
        check_pixel_count(path, int(page.imagelength), int(page.imagewidth))
        try:
            arr = np.asarray(page.asarray())
        except ValueError as e:  # tifffile names the missing codec package
            hint = "; pip install imagecodecs" if "imagecodecs" in str(e) else ""
            raise ValueError(f"cannot read TIFF {path}: {e}{hint}") from e
        arr = _tiff_as_shown(arr, page, path, imagej=bool(tif.is_imagej), label=label)
        _refuse_unmarked_second_channel(arr, page, path)
    return np.squeeze(arr) if arr.ndim > 3 else arr


def _refuse_unmarked_second_channel(arr: np.ndarray, page, path: Path) -> None:
    """Grey + a second sample is read as grey + alpha (the alpha dropped) only when the TIFF says the second
    sample is alpha; two detectors' signals (SE and BSE, or two channels) are not, and dropping one silently
    would segment whichever came first."""
    if arr.ndim != 3 or arr.shape[-1] != 2:
        return
    extra = tuple(int(x) for x in (getattr(page, "extrasamples", None) or ()))
    if extra and extra[0] in (1, 2):  # associated / unassociated alpha
        return
    raise ValueError(
        f"{path} has two samples per pixel and the second is not marked as alpha (two detectors or channels?): "
        "which one is the micrograph is your call; save that channel as its own file (Fiji: Image > Color > "
        "Split Channels)"
    )


def _read_raw(path: Path, *, palette_as_index: bool = False) -> np.ndarray:
    """Decodes a file to its native array (uint8/uint16/float...), channel-last, upright.

    TIFF goes through tifffile because PIL mangles 16-bit and multi-sample TIFFs; everything else
    through PIL. Any decoder failure is turned into a ValueError naming the file, so a single corrupt
    micrograph in a folder of hundreds is easy to find. What a viewer would show differently from the
    stored samples is undone here, for images and labels alike (so a pair stays aligned):

    * EXIF/TIFF Orientation (a camera's "rotate 90 degrees to display" tag) is applied;
    * CMYK (JPEG, incl. Adobe's inverted CMYK, and TIFF) is converted to RGB, not read as RGBA;
    * palette images are expanded to their colours, or, with ``palette_as_index`` (labels), read by
      colour index (``_palette_indices``); labels also keep a white-is-zero TIFF's stored values.

    A path that is not a regular file (a FIFO named ``x.png``) is refused without being opened.
    """
    check_regular_file(path)
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes): not an image")
    try:
        if is_tiff(path):
            arr = _read_tiff(path, label=palette_as_index)
        else:
            with open_pil(path) as img:
                check_pixel_count(path, img.size[1], img.size[0])
                frames = getattr(img, "n_frames", 1)
                if frames > 1 and img.format in ("GIF", "PNG", "WEBP"):  # an animation, as a TIFF stack is refused
                    raise ValueError(
                        f"{path} holds {frames} frames (an animation): one micrograph per file is read; save the "
                        "frame you want as its own file"
                    )
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
            raise ValueError(
                f"floating-point image {path} has values in [{lo:g}, {hi:g}], expected [0, 1]: save it as 8- or "
                "16-bit integers (Fiji: Image > Type > 8-bit or 16-bit) or scaled to [0, 1]"
            )
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


def upright_shape(path: PathLike) -> tuple[int, int, int]:
    """``(height, width, orientation)`` of an image as ``read_image`` returns it, from the file's header
    only (no pixel decoding): the EXIF/TIFF Orientation tag (1 = none) swaps height and width for 5-8."""
    path = Path(path)
    check_regular_file(path)
    try:
        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = main_tiff_page(tif, path)
                h, w = int(page.imagelength), int(page.imagewidth)
                tag = page.tags.get("Orientation")
                orientation = int(tag.value) if tag is not None else 1
        else:
            with open_pil(path) as img:
                (w, h), orientation = img.size, _pil_orientation(img) or 1
    except ValueError as e:
        if str(path) in str(e):  # already names the file (a TIFF stack)
            raise
        raise ValueError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e
    except Exception as e:  # noqa: BLE001 - corrupt headers: named like the readers do
        raise ValueError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e
    return (w, h, orientation) if orientation in (5, 6, 7, 8) else (h, w, orientation)
