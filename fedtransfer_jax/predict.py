r"""Segments micrographs (up to 64 Mpx each) and measures their grains.

  python -m fedtransfer_jax.predict --workdir /tmp/smoke --method fedavg --images IN --out OUT

For every image of IN (a folder, or a single file; grey or RGB, PNG/JPEG/TIFF incl. 16-bit, each read by its
content, not its suffix; one image per file: a TIFF stack is refused; at most 64 Mpx) it writes
  OUT/<name>.png          boundary map of the input's height and width (255 = boundary)
  OUT/<name>_grains.csv   grain table: grain_id, area_px, area_um2, equivalent diameters
  OUT/<name>_overlay.png  the micrograph with the measured grains' borders drawn in a contrasting colour
  OUT/<name>_hist.png     grain-size histogram
and for all images OUT/grain_sizes.csv (every grain, with its image), OUT/grain_sizes_summary.csv (one
row per image), OUT/report.html (open it in a browser: model, settings, scale, table, overlays,
histograms, warnings) and OUT/grain_sizes.json, keyed by <name>: each image's input file, output files,
grain count, mean grain size and ASTM E112 grain size number G (areas in um^2 and G need a pixel size:
`--pixel_size_um`, else each file's own calibration where its metadata has one), the
model and post-processing settings used and where they came from, and the lists `failed` (file, reason)
and `skipped` (entries of IN that are not images). <name> is the input's stem (`x.png` -> `x`); inputs
whose stems collide (`x.png` and `x.tif`) are named stem + '_' + suffix instead (`x_png`, `x_tif`).
A second run into the same OUT adds to it: earlier images keep their results, an image predicted again
replaces its own (under the name it had, even when a new file beside it now shares its stem). A folder's
file without an image suffix that is an image by its content, and a second name (a link) of an image
already listed, are not read, and the terminal says so. On the terminal: a progress bar (stderr), then a short table (stdout).

The model: `--method`, else the workdir's best method by validation (runs/inference.py
choose_default_method; predict says which and why). Without `--workdir`, the model shipped with the package
(fedtransfer_jax/pretrained/grains, docs/MODEL.md; exported by `python -m fedtransfer_jax.export_model`);
a copy that ships none says so and exits with status 2.

Safety: nothing is written when --out is --images or inside it, when an output would replace an input
file (real paths are compared, so symlinks count), or when an output file already exists in OUT without
having been written by an earlier predict (OUT/grain_sizes.json lists what predict wrote). One predict
at a time per OUT (a lock; a second one stops with a message). Every file is written atomically with the
umask's permissions. A corrupt or unreadable image is listed under `failed` and the others are still
written. A full disk stops the run at the first failed write, naming the file; the manifest then says
`failed` and lists what was written. Ctrl-C stops it with the manifest `interrupted`.

Exit status: 0 every image written; 1 some images failed (the rest written, see `failed`); 2 nothing
done or stopped (a bad flag, an unsafe or busy --out, a model that cannot be loaded, a full disk, or
every image failed, which leaves no new --out behind; the message names the flag/file); 130 interrupted
(Ctrl-C): rerun the same command to finish. Extra arguments (`--images *.tif` expanded by the shell)
are refused with status 2.

Inference is a tiled sliding window with overlap (`--overlap`, default tile/4) and optional flip
test-time augmentation (`--flips`). Post-processing (threshold, `--close_radius`, `--min_fragment_px`,
`--min_grain_area`, `--line_width`) defaults to the settings chosen on validation tiles for the method
(<workdir>/postprocess/<method>.json, see metrics/postprocess_select.py), else built-in defaults; a
flag given on the command line overrides that one setting.

Scale: `--scale auto` (default) resamples each image to the magnification the model was trained at: it
tries the scales 1, 1/1.5, 1/2, 1/3, 1/4 on a central view and keeps the one whose predicted mean grain
diameter comes closest to the trained grain size (recorded in the workdir, else from the training config;
the rule is in analysis/scale.py). `--scale X` resamples every image by X (0.5 halves it); `--scale 1` is
the image as it is. Either way the probabilities are mapped back to the image's own size before the
post-processing, so maps, grain tables and sizes are in the original pixels; each image's entry in
grain_sizes.json records the scale used and why (`scale`), the table and report.html show it.

The library behind this command is fedtransfer_jax/analysis/ (outputs, measure, report, batch, scale).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from absl import app, flags, logging

from fedtransfer_jax.analysis import outputs, report
from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.analysis.batch import OutputWriteError, predict_folder
from fedtransfer_jax.analysis.measure import check_pixel_size, load_model, model_and_settings, segment, with_workdir
from fedtransfer_jax.analysis.outputs import (
    MANIFEST,
    OutputLockedError,
    UnsafeOutputError,
    output_files,
    output_names,
    plan_outputs,
    previous_outputs,
)
from fedtransfer_jax.data import databar as databar_lib
from fedtransfer_jax.data import overlays as overlays_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import console

# Re-exported for evaluate.py, scripts and tests (the library lives in fedtransfer_jax/analysis/).
__all__ = [
    "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "MANIFEST", "OutputLockedError", "stop_on_sigterm",
    "OutputWriteError", "USER_ERRORS", "UnsafeOutputError", "check_pixel_size", "cli", "define_postprocess_flags",
    "define_scale_flag", "flags_parser", "load_model", "model_and_settings", "with_workdir", "output_files", "output_names", "plan_outputs",
    "predict_folder", "previous_outputs", "run", "segment",
]

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SETTING_FLAGS = pps.SETTING_KEYS  # The post-processing flags are named like the settings.


# Errors a user fixes (the message names the flag or file): reported in one line, exit status 2.
# (OSError includes OutputWriteError, a full disk; ValueError includes UnsafeOutputError and the lock.)
USER_ERRORS = (ValueError, OSError, getattr(inference, "IncompleteModelError", ValueError))


def define_flags() -> None:
    """Command-line flags, defined only when run as a program (so evaluate and predict can be
    imported together, e.g. by scripts and tests)."""
    global _WORKDIR, _METHOD, _CLIENT, _ALLOW_INCOMPLETE, _IMAGES, _OUT
    global _OVERLAP, _FLIPS, _PIXEL_SIZE, _EXCLUDE_BORDER, _SETTINGS, _SCALE, _DATABAR, _OVERLAYS
    _WORKDIR = flags.DEFINE_string(
        "workdir", None, "Workdir written by launch.py (default: the model shipped with the package, docs/MODEL.md)."
    )
    _METHOD = flags.DEFINE_string("method", None, "Method whose model to use (default: the workdir's best by validation; predict says which and why).")
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
    _PIXEL_SIZE = flags.DEFINE_float(
        "pixel_size_um",
        0.0,
        "Pixel size in micrometres for every image; 0 (default) = each image's own, read from its file's "
        "metadata (FEI/Thermo, Phenom, Zeiss, TESCAN SEM; Olympus SIS; ImageJ/Fiji; OME-TIFF) or a Hitachi/JEOL "
        "IMAGE.txt beside it, else unknown (sizes in px, no ASTM G).",
    )
    _DATABAR = flags.DEFINE_string(
        "databar",
        "auto",
        "The instrument data bar along the bottom of SEM images, left out of the grain sizes (boundary in the map): "
        "'auto' (default: as the file's metadata states it, else found in the pixels), 'none' (keep every "
        "row), or its height in rows.",
    )
    _OVERLAYS = flags.DEFINE_string(
        "overlays",
        "auto",
        "Burned-in annotations inside the image (a scale bar, a label box, a marker square: flat rectangles in a "
        "pure colour; also padding or a clipped strip): 'auto' (default) fills them in before the model and "
        "leaves them out of the grain sizes (boundary in the map); 'none' segments the image as it is.",
    )
    _EXCLUDE_BORDER = flags.DEFINE_bool(
        "exclude_border_grains",
        False,
        "Leave grains touching the image edge (or a left-out scale bar, --overlays) out of the grain table.",
    )
    _SETTINGS = define_postprocess_flags()
    _SCALE = define_scale_flag()


def define_scale_flag():
    """``--scale`` (shared with evaluate): 'auto' (default) or a number > 0; a bad value is one line naming
    the flag and exit status 2 (``flags_parser``)."""
    flag = flags.DEFINE_string("scale", scale_lib.AUTO, scale_lib.FLAG_HELP)

    def valid(value) -> bool:
        try:
            scale_lib.parse_scale(value)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator("scale", valid)
    return flag


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


def _flag_values(settings_flags: Mapping[str, Any]) -> dict[str, Any]:
    return {k: f.value for k, f in settings_flags.items()}


def run(argv_flags: Mapping[str, Any], progress: bool = False) -> int:
    """The CLI's work, given the flag values; returns the exit status (raises on usage errors, a busy
    --out, a full disk, and KeyboardInterrupt). Messages go to stderr, the results table to stdout."""
    f = argv_flags
    console.tolerant_streams()  # file names are printed: one in another encoding must not fail the run
    check_pixel_size(f["pixel_size_um"])
    f = with_workdir(f)  # no --workdir: the shipped model, or one line saying this copy has none
    scale = scale_lib.parse_scale(f.get("scale", scale_lib.AUTO))
    databar = databar_lib.parse_databar(f.get("databar", "auto"))
    overlays = overlays_lib.parse_mode(f.get("overlays", "auto"))
    overrides = {k: v for k, v in f["settings"].items() if v is not None}
    pps.PostprocessSettings.from_dict({**pps.BUILTIN_DEFAULTS.to_dict(), **overrides})  # Flags valid?
    plan_outputs(f["images"], f["out"])  # Fail on an unsafe --out before the (slow) model load.
    fresh = not os.path.exists(os.path.join(f["out"], MANIFEST))  # no earlier predict wrote into OUT
    with outputs.lock(f["out"]):  # ...and on a busy one.
        before = set(((None if fresh else outputs.read_manifest(f["out"])) or {}).get("images", {}))
        model, settings, provenance = model_and_settings(f, overrides)
        source = getattr(model, "source", None) or {}
        how = source.get("method_reason", "")
        print(f"predict: model {model.tag}" + (f" ({how})" if how else ""), file=sys.stderr)
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
            scale=scale,
            databar=databar,
            overlays=overlays,
            log=lambda msg: print(msg, file=sys.stderr),
            progress=progress,
        )
        this_run = manifest["runs"][-1]
        done = {n: manifest["images"][n] for n in this_run["predicted"]}
        nothing = fresh and not done  # nothing measured, and no earlier run's results to keep
        if nothing:
            outputs.remove_run_outputs(f["out"], manifest)
    if done:
        print(report.text_table(done))
    failed = this_run["failed"]
    if failed and not done:  # every image failed: nothing done, as for a bad flag (the reasons are above, one per file)
        kept = "" if nothing else f"; {os.path.join(f['out'], MANIFEST)} lists them beside the earlier results"
        print(f"predict: error: none of the {len(failed)} image(s) could be measured{kept}", file=sys.stderr)
        return EXIT_USAGE
    earlier = len(manifest["images"]) - len(done)
    replaced = len(before & set(done))
    print(
        f"{len(done)} image(s) measured"
        + (f" ({replaced} replacing an earlier run's results in {f['out']})" if replaced else "")
        + (f", {len(failed)} failed (see {os.path.join(f['out'], MANIFEST)})" if failed else "")
        + (f"; {earlier} from earlier runs kept" if earlier > 0 else "")
        + f"; model {model.tag}; settings: {provenance.get('source', 'built-in') if provenance else 'built-in'}"
    )
    no_pixel = sum(1 for e in done.values() if not e.get("pixel_size_um"))
    if no_pixel:  # the table's ASTM G column says '-' for them: say why once
        print(f"note: {no_pixel} image(s) without a pixel size (no --pixel_size_um, none usable in the file's "
              "metadata): sizes in px and no ASTM G for them")
    if f["exclude_border"] and done:
        print(f"note: {report.EXCLUDED_BORDER_NOTE}")
    mixed = scale_lib.mixed_scales_note(done.values())
    if mixed:
        print(f"note: {mixed}")
    print(f"report: {os.path.join(os.path.abspath(f['out']), outputs.REPORT)}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def flags_parser(prog: str):
    """absl's flag parser, but a malformed flag (`--pixel_size_um=abc`, a missing required flag) prints
    one line naming it and exits with EXIT_USAGE (2), not absl's status 1 (which here means "some images
    failed")."""

    def parse(argv):
        console.tolerant_streams()  # for evaluate and export_model too: they print file names
        console.quiet_inference_logs()
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        empty = console.check_path_flags(flags.FLAGS)
        if empty:
            print(f"{prog}: error: {empty}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        stray = rest[1:]
        if stray:  # `--images *.tif`: the shell expands it and all but the first name would be dropped
            shown = " ".join(stray[:3]) + (f" ... ({len(stray)} in all)" if len(stray) > 3 else "")
            print(
                f"{prog}: error: unexpected argument(s) {shown}: every input is a flag (--name=value); "
                "--images takes one file or one folder (give the folder, not a shell pattern like *.tif)",
                file=sys.stderr,
            )
            sys.exit(EXIT_USAGE)
        return rest

    return parse


def stop_on_sigterm() -> None:
    """`timeout`, a batch scheduler or `kill` stop predict as Ctrl-C does: the manifest says 'interrupted',
    the lock is released, and a rerun finishes the job."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv):
    del argv
    stop_on_sigterm()
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO: keep the terminal readable
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
        "scale": _SCALE.value,
        "databar": _DATABAR.value,
        "overlays": _OVERLAYS.value,
    }
    return cli(values)


def cli(values: Mapping[str, Any], progress: bool = True) -> int:
    """``run`` with the command line's error handling: one line on stderr and an exit status, never a
    traceback, for what a user fixes (2), a full disk (2) and Ctrl-C (130)."""
    try:
        return run(values, progress=progress)
    except KeyboardInterrupt:
        print("predict: interrupted; rerun the same command to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as e:  # User-fixable: the message names the flag or file (or the full disk).
        print(f"predict: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=flags_parser("predict"))
