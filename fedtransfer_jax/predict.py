r"""Segments micrographs of any size and measures their grains.

  python -m fedtransfer_jax.predict --workdir /tmp/smoke --method fedavg --images IN --out OUT

For every image of IN (a folder, or a single file; grey or RGB, PNG/JPEG/TIFF incl. 16-bit) it writes
  OUT/<name>.png          boundary map of the input's height and width (255 = boundary)
  OUT/<name>_grains.csv   grain table: grain_id, area_px, area_um2, equivalent diameters
and OUT/grain_sizes.json, keyed by <name>: each image's input file, output files, grain count, mean
grain size and ASTM E112 grain size number G (areas in um^2 need --pixel_size_um), the post-processing
settings used and where they came from, and the lists `failed` (file, reason) and `skipped` (entries of
IN that are not images). <name> is the input's stem (`x.png` -> `x`); inputs whose stems collide
(`x.png` and `x.tif`) are named stem + '_' + suffix instead (`x_png`, `x_tif`).

Safety: nothing is written when --out is --images or inside it, when an output would replace an input
file (real paths are compared, so symlinks count), or when an output file already exists in OUT without
having been written by an earlier predict (OUT/grain_sizes.json lists what predict wrote). Every file is
written atomically with the umask's permissions. A corrupt or unreadable image is listed under `failed`
and the others are still written.

Exit status: 0 every image written; 1 some images failed (the rest written, see `failed`); 2 nothing
done (a bad flag, an unsafe --out, or a model that cannot be loaded; the message names the flag/file).

Inference is a tiled sliding window with overlap (`--overlap`, default tile/4) and optional flip
test-time augmentation (`--flips`). Post-processing (threshold, `--close_radius`, `--min_fragment_px`,
`--min_grain_area`, `--line_width`) defaults to the settings chosen on validation tiles for the method
(<workdir>/postprocess/<method>.json, see metrics/postprocess_select.py), else built-in defaults; a
flag given on the command line overrides that one setting.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags
from PIL import Image

from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax import metrics as metrics_lib
from fedtransfer_jax.data import folder
from fedtransfer_jax.metrics import postprocess_select as pps

MANIFEST = "grain_sizes.json"
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
SETTING_FLAGS = pps.SETTING_KEYS  # The post-processing flags are named like the settings.


# Errors a user fixes (the message names the flag or file): reported in one line, exit status 2.
USER_ERRORS = (ValueError, OSError, getattr(inference, "IncompleteModelError", ValueError))


def load_model(workdir: str, method: str, client: str | None, allow_incomplete: bool = False):
    """``inference.load_model``; ``--allow_incomplete`` is passed on only when set."""
    extra = {"allow_incomplete": True} if allow_incomplete else {}
    return inference.load_model(workdir, method, client, **extra)


class UnsafeOutputError(ValueError):
    """Writing the outputs would replace or mix with files the user owns."""


def define_flags() -> None:
    """Command-line flags, defined only when run as a program (so evaluate and predict can be
    imported together, e.g. by scripts and tests)."""
    global _WORKDIR, _METHOD, _CLIENT, _ALLOW_INCOMPLETE, _IMAGES, _OUT
    global _OVERLAP, _FLIPS, _PIXEL_SIZE, _EXCLUDE_BORDER, _SETTINGS
    _WORKDIR = flags.DEFINE_string("workdir", None, "Workdir written by launch.py.", required=True)
    _METHOD = flags.DEFINE_string("method", None, "Method whose model to use (default: best available).")
    _CLIENT = flags.DEFINE_string(
        "client",
        None,
        "Whose model (local methods) and whose post-processing: the settings chosen on that client's own "
        "validation tiles (default: the federation's choice).",
    )
    _ALLOW_INCOMPLETE = flags.DEFINE_bool(
        "allow_incomplete", False, "Use a method whose training was interrupted (its latest checkpoint)."
    )
    _IMAGES = flags.DEFINE_string("images", None, "Image file or folder of images.", required=True)
    _OUT = flags.DEFINE_string("out", None, "Output folder (not inside --images).", required=True)
    _OVERLAP = flags.DEFINE_integer("overlap", None, "Tile overlap in px (default: tile/4).")
    _FLIPS = flags.DEFINE_bool("flips", False, "Test-time augmentation: average over the 4 flips.")
    _PIXEL_SIZE = flags.DEFINE_float("pixel_size_um", 0.0, "Pixel size in micrometres (0 = unknown).")
    _EXCLUDE_BORDER = flags.DEFINE_bool(
        "exclude_border_grains", False, "Leave grains touching the image edge out of the grain table."
    )
    _SETTINGS = define_postprocess_flags()


def define_postprocess_flags() -> dict[str, Any]:
    """The post-processing flags (shared with evaluate); None = the method's chosen setting."""
    default = "default: the method's choice in <workdir>/postprocess/, else built-in"
    b = pps.BUILTIN_DEFAULTS
    return {
        "threshold": flags.DEFINE_float(
            "threshold",
            None,
            f"Boundary probability threshold in [0, 1] ({default}: config's eval.threshold).",
        ),
        "close_radius": flags.DEFINE_integer(
            "close_radius", None, f"Closing radius that bridges gaps, 0 = off ({default} {b.close_radius})."
        ),
        "min_fragment_px": flags.DEFINE_integer(
            "min_fragment_px",
            None,
            f"Remove isolated boundary fragments smaller than this, 0 = off ({default} {b.min_fragment_px}).",
        ),
        "min_grain_area": flags.DEFINE_integer(
            "min_grain_area",
            None,
            f"Merge grains smaller than this many px, 0 = off ({default} {b.min_grain_area}).",
        ),
        "line_width": flags.DEFINE_integer(
            "line_width",
            None,
            "Thin boundaries to 1 px then dilate to this width, 0 = keep the predicted width "
            f"({default} {b.line_width}).",
        ),
    }


def check_pixel_size(pixel_size_um: float) -> float | None:
    """``--pixel_size_um`` as the metrics want it: None when unknown (0)."""
    if not (math.isfinite(pixel_size_um) and pixel_size_um >= 0):
        raise ValueError(f"--pixel_size_um must be >= 0 (0 = unknown), got {pixel_size_um}")
    return pixel_size_um or None


def segment(
    model: inference.LoadedModel,
    image: np.ndarray,
    *,
    settings: pps.PostprocessSettings | None = None,
    overlap: int | None = None,
    flips: bool = False,
    **postprocess_kw: Any,
) -> np.ndarray:
    """Boolean boundary map [H, W] for an image [H, W, 3].

    ``settings`` (or, without it, ``threshold=``/``close_radius=``... over the built-in defaults with
    the config's threshold) says how the probabilities become a map; ``evaluate`` uses the same path.
    """
    if settings is None:
        settings, _ = pps.resolve_settings(None, None, postprocess_kw, model.config.eval.threshold)
    return settings.apply(model.predict_prob(image, overlap=overlap, flips=flips))


# ----------------------------------------------------------------------------------------------
# Output plan: names and safety checks, before anything is written.
# ----------------------------------------------------------------------------------------------


def output_names(paths: Sequence[str]) -> dict[str, str]:
    """Input path -> output name (no suffix): the stem, or stem_suffix where stems collide.

    Collisions are found case-insensitively (so outputs stay apart on macOS/Windows file systems too);
    anything still colliding after adding the suffix gets _2, _3... in input order.
    """
    stems = {p: os.path.splitext(os.path.basename(p))[0] for p in paths}
    count: dict[str, int] = {}
    for stem in stems.values():
        count[stem.casefold()] = count.get(stem.casefold(), 0) + 1
    names, used = {}, set()
    for p in paths:
        stem, suffix = stems[p], os.path.splitext(p)[1].lstrip(".")
        name = stem if count[stem.casefold()] == 1 else f"{stem}_{suffix}"
        base, i = name, 2
        while name.casefold() in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name.casefold())
        names[p] = name
    return names


def output_files(name: str) -> tuple[str, str]:
    """The files one image produces, relative to OUT."""
    return name + ".png", name + "_grains.csv"


def previous_outputs(out: str) -> set[str]:
    """Files an earlier predict wrote into ``out`` (listed in its manifest); empty if none.

    Raises:
      UnsafeOutputError: OUT/grain_sizes.json exists but is not a predict manifest (someone else's).
    """
    path = os.path.join(out, MANIFEST)
    if not os.path.lexists(path):
        return set()
    try:
        with open(path) as f:
            manifest = json.load(f)
        return set(manifest["outputs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnsafeOutputError(
            f"--out {out}: {path} exists and is not a manifest written by predict ({type(e).__name__}); "
            "choose another --out"
        ) from e


def plan_outputs(images: str, out: str) -> tuple[dict[str, str], list[dict[str, str]], set[str]]:
    """Checks that predicting ``images`` into ``out`` is safe; writes nothing.

    Returns:
      ``(names, skipped, previous)``: input path -> output name, the entries of the folder that are
      not images, and the outputs of an earlier predict in ``out``.

    Raises:
      UnsafeOutputError: --out is --images or inside it, an output would replace an input file, or an
        output exists that predict did not write (each names the files and flags).
      FileNotFoundError / ValueError: --images missing or without images.
    """
    inputs, skipped = inference.scan_images(images)
    real_out = os.path.realpath(out)
    if os.path.isdir(images):
        real_in = os.path.realpath(images)
        if real_out == real_in or real_out.startswith(real_in.rstrip(os.sep) + os.sep):
            raise UnsafeOutputError(
                f"--out {out} is the --images folder {images} or inside it: outputs would mix with (and "
                "could replace) the input micrographs and be read as inputs next time; choose another --out"
            )
    if os.path.exists(out) and not os.path.isdir(out):
        raise UnsafeOutputError(f"--out {out} exists and is not a folder")
    names = output_names(inputs)
    input_files = {os.path.realpath(p): p for p in inputs}
    previous = previous_outputs(out)
    planned = [f for n in names.values() for f in output_files(n)] + [MANIFEST]
    for rel in planned:
        target = os.path.join(out, rel)
        if os.path.realpath(target) in input_files:
            raise UnsafeOutputError(
                f"output {target} would overwrite the input image {input_files[os.path.realpath(target)]}; "
                "choose another --out"
            )
        if rel == MANIFEST or not os.path.lexists(target):
            continue
        if not os.path.isfile(target) or os.path.islink(target):
            raise UnsafeOutputError(f"output {target} exists and is not a regular file; choose another --out")
        if rel not in previous:
            raise UnsafeOutputError(
                f"output {target} exists and was not written by predict (not listed in "
                f"{os.path.join(out, MANIFEST)}); move it away or choose another --out"
            )
    return names, skipped, previous


# ----------------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------------


def _write_png_atomic(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    io_utils.write_bytes_atomic(path, buf.getvalue())


def _measure_one(model, path: str, pixel: float | None, exclude_border: bool, settings, overlap, flips):
    """(boundary map, grain rows, summary) of one image; raises ValueError/OSError for a bad file."""
    image = folder.read_image(path)
    boundary = segment(model, image, settings=settings, overlap=overlap, flips=flips)
    grains = metrics_lib.grains_from_boundary(boundary)
    rows = metrics_lib.grain_table(grains, pixel_size_um=pixel, exclude_border=exclude_border)
    summary = {
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        # `warnings`/`size_withheld`: a map that cannot give a plausible grain size (metrics/grains.py
        # grain_size_plausibility) gets null means and G, with the reason, instead of a number.
        **metrics_lib.grain_size_summary(grains, pixel_size_um=pixel, boundary=boundary),
    }
    return boundary, rows, summary


def _write_one(out: str, name: str, boundary: np.ndarray, rows: list) -> None:
    """Both files of one image, or neither (a failed second write removes the first)."""
    png, csv = (os.path.join(out, f) for f in output_files(name))
    _write_png_atomic(png, boundary.astype(np.uint8) * 255)
    try:
        metrics_lib.write_grain_table_csv(rows, csv)
    except BaseException:
        os.unlink(png)
        raise


def predict_folder(
    model: inference.LoadedModel,
    images: str,
    out: str,
    *,
    pixel_size_um: float = 0.0,
    exclude_border: bool = False,
    settings: pps.PostprocessSettings | None = None,
    provenance: Mapping[str, Any] | None = None,
    overlap: int | None = None,
    flips: bool = False,
    log=None,
    **postprocess_kw: Any,
) -> dict:
    """Predicts every image of ``images`` into ``out``; returns the manifest (OUT/grain_sizes.json).

    ``settings``/``provenance`` come from ``postprocess_select.resolve_settings``; without them
    ``postprocess_kw`` (``threshold=``, ``close_radius=``...) apply over the built-in defaults. Bad images
    are listed in ``manifest['failed']`` (and reported through ``log``), the others are written.

    Raises:
      UnsafeOutputError, FileNotFoundError, ValueError: before anything is written (see ``plan_outputs``).
    """
    pixel = check_pixel_size(pixel_size_um)
    if settings is None:
        settings, provenance = pps.resolve_settings(None, None, postprocess_kw, model.config.eval.threshold)
    names, skipped, previous = plan_outputs(images, out)
    manifest_path = os.path.join(out, MANIFEST)
    still_there = {f for f in previous if os.path.exists(os.path.join(out, f))}
    planned = {f for n in names.values() for f in output_files(n)}
    manifest: dict[str, Any] = {
        "status": "running",
        "model": model.tag,
        "postprocess": dict(provenance or {"settings": settings.to_dict()}),
        "pixel_size_um": pixel,
        "images": {},
        "failed": [],
        "skipped": skipped,
        # Written first, so a crashed run can be repeated into the same OUT.
        "outputs": sorted(still_there | planned),
    }
    io_utils.write_json_atomic(manifest_path, manifest)
    for entry in skipped:
        if log and "not a regular file" in entry["reason"]:
            log(f"predict: warning: skipped {entry['file']}: {entry['reason']}")
    for path, name in names.items():
        try:
            boundary, rows, summary = _measure_one(
                model, path, pixel, exclude_border, settings, overlap, flips
            )
            _write_one(out, name, boundary, rows)
        except (ValueError, OSError) as e:
            manifest["failed"].append({"file": path, "reason": str(e)})
            if log:
                log(f"predict: skipped {path}: {e}")
            for stale in set(output_files(name)) & still_there:  # An earlier run's map of this image
                os.unlink(os.path.join(out, stale))  # would otherwise pass for this run's.
                still_there.discard(stale)
            continue
        png, csv = output_files(name)
        manifest["images"][name] = {"file": path, "boundary_map": png, "grain_table": csv, **summary}
        if log and summary.get("warnings"):
            log(f"predict: warning: {path}: {'; '.join(summary['warnings'])}")
    written = {
        f for entry in manifest["images"].values() for f in (entry["boundary_map"], entry["grain_table"])
    }
    manifest["outputs"] = sorted(still_there | written)
    manifest["status"] = "complete"
    io_utils.write_json_atomic(manifest_path, manifest)
    return manifest


def model_and_settings(f: Mapping[str, Any], overrides: Mapping[str, Any]):
    """What predict and evaluate share after their own input checks: the model (`--method`, default the
    workdir's best; `--client`; `--allow_incomplete`), a valid `--overlap`, and the post-processing
    settings with their provenance (stored choice, `--client`'s own, flags, built-in defaults)."""
    method = f["method"] or inference.default_method(f["workdir"])
    model = load_model(f["workdir"], method, f["client"], f.get("allow_incomplete", False))
    if f["overlap"] is not None and not 0 <= f["overlap"] < model.tile:
        raise ValueError(f"--overlap must be in [0, {model.tile}) (the model's tile size), got {f['overlap']}")
    settings, provenance = pps.resolve_settings(
        f["workdir"], pps.settings_tag(model.tag, f["client"]), overrides, model.config.eval.threshold
    )
    return model, settings, provenance


def _flag_values(settings_flags: Mapping[str, Any]) -> dict[str, Any]:
    return {k: f.value for k, f in settings_flags.items()}


def run(argv_flags: Mapping[str, Any]) -> int:
    """The CLI's work, given the flag values; returns the exit status (raises on usage errors)."""
    f = argv_flags
    check_pixel_size(f["pixel_size_um"])
    overrides = {k: v for k, v in f["settings"].items() if v is not None}
    pps.PostprocessSettings.from_dict({**pps.BUILTIN_DEFAULTS.to_dict(), **overrides})  # Flags valid?
    plan_outputs(f["images"], f["out"])  # Fail on an unsafe --out before the (slow) model load.
    model, settings, provenance = model_and_settings(f, overrides)
    manifest = predict_folder(
        model,
        f["images"],
        f["out"],
        pixel_size_um=f["pixel_size_um"],
        exclude_border=f["exclude_border"],
        settings=settings,
        provenance=provenance,
        overlap=f["overlap"],
        flips=f["flips"],
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print(
        json.dumps(
            {
                "model": model.tag,
                "out": os.path.abspath(f["out"]),
                "postprocess": provenance,
                "images": manifest["images"],
                "failed": manifest["failed"],
            }
        )
    )
    return EXIT_SOME_FAILED if manifest["failed"] else EXIT_OK


def flags_parser(prog: str):
    """absl's flag parser, but a malformed flag (`--pixel_size_um=abc`, a missing required flag) prints
    one line naming it and exits with EXIT_USAGE (2), not absl's status 1 (which here means "some images
    failed")."""

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            sys.exit(EXIT_USAGE)

    return parse


def main(argv):
    del argv
    values = {
        "workdir": _WORKDIR.value,
        "method": _METHOD.value,
        "client": _CLIENT.value,
        "allow_incomplete": _ALLOW_INCOMPLETE.value,
        "images": _IMAGES.value,
        "out": _OUT.value,
        "overlap": _OVERLAP.value,
        "flips": _FLIPS.value,
        "pixel_size_um": _PIXEL_SIZE.value,
        "exclude_border": _EXCLUDE_BORDER.value,
        "settings": _flag_values(_SETTINGS),
    }
    try:
        return run(values)
    except USER_ERRORS as e:  # User-fixable: the message names the flag or file.
        print(f"predict: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=flags_parser("predict"))
