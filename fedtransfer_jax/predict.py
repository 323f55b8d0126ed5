r"""Segments micrographs of any size and measures their grains.

  python -m fedtransfer_jax.predict --workdir /tmp/smoke --method fedavg --images IN --out OUT

For every image `IN/<stem>.<ext>` (or IN itself, if a file; grey or RGB, PNG/JPEG/TIFF incl. 16-bit) it
writes:
  OUT/<stem>.png          boundary map of the input's height and width (255 = boundary)
  OUT/<stem>_grains.csv   grain table: grain_id, area_px, area_um2, equivalent diameters
and OUT/grain_sizes.json with each image's grain count, mean grain size and ASTM E112 grain size
number G (areas in um^2 need --pixel_size_um). All files are written atomically.

Inference is a tiled sliding window with overlap (`--overlap`, default tile/4) and optional flip
test-time augmentation (`--flips`); post-processing closes small gaps (`--close_radius`), removes
isolated fragments (`--min_fragment_px`), merges grains smaller than `--min_grain_area` and can thin
the lines to `--line_width` px.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
from absl import app, flags
from PIL import Image

from fedtransfer_jax import inference, io_utils, metrics as metrics_lib
from fedtransfer_jax.data import folder


def define_flags() -> None:
    """Command-line flags, defined only when run as a program (so evaluate and predict can be
    imported together, e.g. by scripts and tests)."""
    global _WORKDIR, _METHOD, _CLIENT, _IMAGES, _OUT, _OVERLAP, _FLIPS, _THRESHOLD, _CLOSE, _MIN_FRAGMENT, _MIN_GRAIN, _LINE_WIDTH, _PIXEL_SIZE, _EXCLUDE_BORDER
    _WORKDIR = flags.DEFINE_string("workdir", None, "Workdir written by launch.py.", required=True)
    _METHOD = flags.DEFINE_string("method", None, "Method whose model to use (default: best available).")
    _CLIENT = flags.DEFINE_string("client", None, "For --method=local: which client's model.")
    _IMAGES = flags.DEFINE_string("images", None, "Image file or folder of images.", required=True)
    _OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
    _OVERLAP = flags.DEFINE_integer("overlap", None, "Tile overlap in px (default: tile/4).")
    _FLIPS = flags.DEFINE_bool("flips", False, "Test-time augmentation: average over the 4 flips.")
    _THRESHOLD = flags.DEFINE_float("threshold", None, "Boundary probability threshold (default: config's).")
    _CLOSE = flags.DEFINE_integer(
        "close_radius", 1, "Morphological closing radius that bridges gaps (0 = off)."
    )
    _MIN_FRAGMENT = flags.DEFINE_integer(
        "min_fragment_px", 20, "Remove isolated boundary fragments smaller " "than this (0 = off)."
    )
    _MIN_GRAIN = flags.DEFINE_integer(
        "min_grain_area", 0, "Merge grains smaller than this many px (0 = off)."
    )
    _LINE_WIDTH = flags.DEFINE_integer(
        "line_width",
        0,
        "Thin boundaries to 1 px then dilate to this width " "(0 = keep the predicted width).",
    )
    _PIXEL_SIZE = flags.DEFINE_float("pixel_size_um", 0.0, "Pixel size in micrometres (0 = unknown).")
    _EXCLUDE_BORDER = flags.DEFINE_bool(
        "exclude_border_grains", False, "Leave grains touching the image " "edge out of the grain table."
    )


def _write_png_atomic(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def segment(
    model: inference.LoadedModel,
    image: np.ndarray,
    *,
    threshold=None,
    overlap=None,
    flips=False,
    close_radius=1,
    min_fragment_px=20,
    min_grain_area=0,
    line_width=0,
) -> np.ndarray:
    """Boolean boundary map [H, W] for an image [H, W, 3]."""
    threshold = model.config.eval.threshold if threshold is None else threshold
    boundary = model.predict_prob(image, overlap=overlap, flips=flips) > threshold
    return metrics_lib.postprocess_boundary(
        boundary,
        close_radius=close_radius,
        thin=line_width > 0,
        min_fragment_px=min_fragment_px,
        min_grain_area=min_grain_area,
        dilate_to=line_width,
    )


def predict_folder(
    model: inference.LoadedModel,
    images: str,
    out: str,
    *,
    pixel_size_um: float = 0.0,
    exclude_border: bool = False,
    **segment_kw,
) -> dict:
    os.makedirs(out, exist_ok=True)
    pixel = pixel_size_um or None
    sizes = {}
    for path in inference.list_images(images):
        stem = os.path.splitext(os.path.basename(path))[0]
        image = folder.read_image(path)
        boundary = segment(model, image, **segment_kw)
        _write_png_atomic(os.path.join(out, stem + ".png"), boundary.astype(np.uint8) * 255)
        grains = metrics_lib.grains_from_boundary(boundary)
        rows = metrics_lib.grain_table(grains, pixel_size_um=pixel, exclude_border=exclude_border)
        metrics_lib.write_grain_table_csv(rows, os.path.join(out, stem + "_grains.csv"))
        sizes[stem] = {
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            **metrics_lib.grain_size_summary(grains, pixel_size_um=pixel),
        }
    io_utils.write_json_atomic(os.path.join(out, "grain_sizes.json"), {"model": model.tag, "images": sizes})
    return sizes


def main(argv):
    del argv
    method = _METHOD.value or inference.default_method(_WORKDIR.value)
    model = inference.load_model(_WORKDIR.value, method, _CLIENT.value)
    sizes = predict_folder(
        model,
        _IMAGES.value,
        _OUT.value,
        pixel_size_um=_PIXEL_SIZE.value,
        exclude_border=_EXCLUDE_BORDER.value,
        threshold=_THRESHOLD.value,
        overlap=_OVERLAP.value,
        flips=_FLIPS.value,
        close_radius=_CLOSE.value,
        min_fragment_px=_MIN_FRAGMENT.value,
        min_grain_area=_MIN_GRAIN.value,
        line_width=_LINE_WIDTH.value,
    )
    print(json.dumps({"model": model.tag, "out": os.path.abspath(_OUT.value), "images": sizes}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
