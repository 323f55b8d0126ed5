"""predict_folder: every image of a folder into OUT, one run at a time, results never lost.

* OUT is locked for the run (``outputs.lock``); a second run into it fails at once.
* The manifest (OUT/grain_sizes.json) is merged: earlier runs' images keep their entries, an image
  predicted again replaces its own. It is rewritten after every image, so it always lists exactly the
  results on disk, whatever stops the run.
* A write that fails (a full disk: ENOSPC/EDQUOT, or any other OSError in OUT) stops the run at once with
  ``OutputWriteError`` naming the file; the manifest says ``failed`` and lists what was written.
* Ctrl-C (KeyboardInterrupt) leaves the manifest ``interrupted``, with the tables and report of what
  was done, and is raised again for the caller.
* After the images: grain_sizes.csv, grain_sizes_summary.csv, then report.html (analysis/report.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedtransfer_jax import metrics as metrics_lib
from fedtransfer_jax.analysis import measure, outputs, report
from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.data import databar as databar_lib
from fedtransfer_jax.data import overlays as overlays_lib
from fedtransfer_jax.data import image_files
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import inference, postprocess_choice
from fedtransfer_jax.runtime import io_utils

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutputWriteError(OSError):
    """Writing into OUT failed (disk full, quota, permissions): the run stopped; the message says which
    file, what was kept and what to do."""


# Images predict does not read from a folder, which a user may well have meant: other image formats and
# microscope files (convert them to TIFF), images in sub-folders, hidden image files.
_OTHER_IMAGES = (
    ".webp", ".gif", ".jp2", ".j2k", ".jxl", ".heic", ".heif", ".avif", ".dm3", ".dm4", ".emd", ".ser",
    ".mrc", ".czi", ".nd2", ".lif", ".oib", ".oir", ".vsi", ".ims", ".sem", ".spm",
)


def _skipped_note(skipped) -> str:
    """One line on what in the folder may have been meant as a micrograph and was not read (other image or
    microscope formats, sub-folders, hidden images, an earlier predict's outputs); '' when nothing was."""
    parts, earlier = [], 0
    for e in skipped:
        name = os.path.basename(e["file"].rstrip(os.sep))
        low = name.lower()
        kind = e.get("kind")
        if kind == "earlier_output":
            earlier += 1
        elif kind == "folder":
            parts.append(f"{name}/ (sub-folders are not searched)")
        elif kind == "duplicate":
            parts.append(f"{name} ({e['reason']})")
        elif kind == "suffix" and e.get("content"):
            parts.append(f"{name} (a {e['content']} without an image suffix: add one to have it read)")
        elif kind == "suffix" and low.endswith(_OTHER_IMAGES):
            parts.append(f"{name} (format not read: convert it to TIFF or PNG)")
        elif kind == "hidden" and not low.startswith("._") and low.endswith(inference.IMAGE_SUFFIXES):
            parts.append(f"{name} (hidden file)")
    shown = parts[:4] + ([f"{len(parts) - 4} more"] if len(parts) > 4 else [])
    if earlier:
        shown.append(f"{earlier} file(s) an earlier predict wrote there")
    return "; ".join(shown)


# The progress bar moves once per image (its text counts the tiles of a large prediction): an image this large
# gets a line saying how long to expect. Seconds per megapixel of the default predict
# (benchmarks/predict_speed.py, 2-core CPU, --scale auto: 6.8 s per further 1500 x 1000 image). A fixed
# --scale predicts once instead of at five candidate scales plus the chosen one (1 + 0.44 + 0.25 + 0.11 +
# 0.06 of the pixels, and the choice again): ~0.6 of the time.
LARGE_IMAGE_PX = 16_000_000
TILES_WORTH_SHOWING = 2 * inference.PROGRESS_CHUNK
_SECONDS_PER_MPX_2CORE = 4.5


def _note_if_large(path: str, scale, say: Callable[[str], None]) -> None:
    try:
        h, w, _ = image_files.upright_shape(path)
    except (OSError, ValueError):
        return  # measuring it reports what is wrong
    if h * w < LARGE_IMAGE_PX or h * w > image_files.MAX_PIXELS:  # over the limit: reading it says so
        return
    if scale != scale_lib.AUTO:
        try:
            scale_lib.check_scaled_size((h, w), float(scale))
        except ValueError:
            return  # refused at that scale: measuring it says so, with no time estimate before
    mpx = h * w / 1e6
    minutes = mpx * _SECONDS_PER_MPX_2CORE * (1.0 if scale == scale_lib.AUTO else 0.6) / 60.0
    say(
        f"predict: note: {path} is {w} x {h} px ({mpx:.0f} Mpx): on a 2-core CPU about {max(1, round(minutes))} "
        "min (a crop, or --scale 0.5, is quicker)"
    )


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def write_failure(err: OSError, path: str, out: str, n_done: int) -> OutputWriteError:
    """The one message for a write that failed: the disk is full (or another OS error), which file."""
    what = "the disk is full" if err.errno in DISK_FULL else f"cannot write ({err.strerror or err})"
    if err.errno == errno.EDQUOT:
        what = "the disk quota is exceeded"
    fix = "free some space" if err.errno in DISK_FULL else "fix that"
    msg = (
        f"{what} while writing {path}: stopped after {n_done} image(s) of this run "
        f"(listed in {os.path.join(out, outputs.MANIFEST)}, status 'failed'); "
        f"{fix} and rerun the same command to finish"
    )
    e = OutputWriteError(err.errno, msg)
    e.path = path
    return e


def _write(path: str, data: bytes) -> None:
    io_utils.write_bytes_atomic(path, data)


def write_image_outputs(out: str, files: Mapping[str, str], m: measure.Measurement, title: str) -> tuple[int, ...]:
    """The four files of one image, or none of them (a failed write removes those written before it).
    Returns the overlay colour. Raises ``(OSError, path)`` as ``_ImageWriteError``."""
    # The measured grains' borders; the bar is boundary in the map, not in the picture: it is drawn as it is.
    ov, colour = report.overlay(m.image, report.grain_borders(m.boundary, m.databar_rows, m.left_out))
    jobs = (
        ("boundary_map", lambda: report.png_bytes(m.boundary.astype(np.uint8) * 255)),
        ("grain_table", None),
        ("overlay", lambda: report.png_bytes(ov)),
        ("histogram", lambda: report.histogram_png(m.rows, m.summary, title)),
    )
    written: list[str] = []
    path = ""
    try:
        for key, make in jobs:
            path = os.path.join(out, files[key])
            if make is None:
                metrics_lib.write_grain_table_csv(m.rows, path)
            else:
                _write(path, make())
            written.append(path)
    except OSError as e:
        _remove(written)
        raise _ImageWriteError(e, path) from e
    except BaseException:
        _remove(written)
        raise
    return colour


class _ImageWriteError(Exception):
    def __init__(self, err: OSError, path: str):
        super().__init__(str(err))
        self.err, self.path = err, path


def _remove(paths) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)


def predict_folder(
    model,
    images: str,
    out: str,
    *,
    pixel_size_um: float = 0.0,
    exclude_border: bool = False,
    settings: pps.PostprocessSettings | None = None,
    provenance: Mapping[str, Any] | None = None,
    overlap: int | None = None,
    flips: bool = False,
    scale: str | float = 1.0,
    databar: str | int = "auto",
    overlays: str = "auto",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    **postprocess_kw: Any,
) -> dict:
    """Predicts every image of ``images`` into ``out``; returns the manifest (OUT/grain_sizes.json).

    ``settings``/``provenance`` come from ``runs.postprocess_choice.resolve_settings``; without them
    ``postprocess_kw`` (``threshold=``, ``close_radius=``...) apply over the built-in defaults. Bad images
    are listed in ``manifest['failed']`` (and reported through ``log``), the others are written.
    ``progress``: a tqdm bar over the images on stderr (``log`` messages then go above it).
    ``manifest['runs'][-1]`` describes this run (``predicted``: its image names, ``failed``: its files).
    ``scale``: resample each image by this factor before the model, or 'auto' (analysis/scale.py; the
    command line's default); each image's entry records the scale used and why (``scale``).
    ``pixel_size_um`` 0: each image's own calibration from its file's metadata, where it has one
    (data/calibration.py); each entry records the pixel size used and its source. ``databar``: 'auto',
    'none' or a number of rows; ``overlays``: 'auto' or 'none' (``measure.measure_image``).

    Raises:
      UnsafeOutputError, FileNotFoundError, ValueError: before anything is written (see ``plan_outputs``);
        ``OutputLockedError`` when another predict writes into ``out``.
      OutputWriteError: a write into OUT failed (disk full...); the run stopped, the manifest says so.
      KeyboardInterrupt: after marking the manifest ``interrupted``.
    """
    pixel = measure.check_pixel_size(pixel_size_um)
    scale = scale_lib.parse_scale(scale)
    databar = databar_lib.parse_databar(databar)
    overlays = overlays_lib.parse_mode(overlays)
    if settings is None:
        settings, provenance = postprocess_choice.resolve_settings(None, None, postprocess_kw, model.config.eval.threshold)
    with outputs.lock(out):
        return _predict_locked(
            model, images, out, pixel, exclude_border, settings, provenance, overlap, flips, scale, databar,
            overlays, log, progress,
        )


def _predict_locked(
    model, images, out, pixel, exclude_border, settings, provenance, overlap, flips, scale, databar, overlays, log,
    progress,
):
    names, skipped, previous = outputs.plan_outputs(images, out)
    target = scale_lib.target_for(model) if scale == scale_lib.AUTO else None
    manifest_path = os.path.join(out, outputs.MANIFEST)
    previous = previous or {}
    still_there = {f for f in previous.get("outputs", []) if os.path.exists(os.path.join(out, f))}
    planned = {f for n in names.values() for f in outputs.output_files(n)}
    inputs = set(names)
    source = dict(getattr(model, "source", None) or {"method": model.tag.split("/")[0]})
    if getattr(model, "round", None) is not None:
        source.update(round=int(model.round), rounds=int(getattr(model, "rounds", model.round)))
        source["selection"] = str(getattr(model, "selection", "last"))
    run_info: dict[str, Any] = {
        "started": _now(),
        "images": images,
        "model": model.tag,
        "status": "running",
        "predicted": [],
        "failed": [],
    }
    manifest: dict[str, Any] = {
        "status": "running",
        "updated": _now(),
        "model": model.tag,
        "model_info": source,
        "postprocess": dict(provenance or {"settings": settings.to_dict()}),
        # --pixel_size_um (null: each image's own, from its file's metadata where it has one: see `images`).
        "pixel_size_um": pixel,
        "inference": {
            "overlap_px": overlap if overlap is not None else "tile/4",
            "flips": bool(flips),
            "exclude_border_grains": bool(exclude_border),
            "scale": scale,
            "databar": databar,
            "overlays": overlays,
            **({"trained_grain_px": round(target[0], 2), "trained_grain_source": target[1]} if target else {}),
        },
        # Earlier runs' results stay; an image of this run replaces its own entry when it is done.
        "images": outputs.kept_entries(previous, out),
        "failed": [f for f in previous.get("failed", []) if isinstance(f, dict) and f.get("file") not in inputs],
        "skipped": skipped,
        "runs": list(previous.get("runs", []))[-49:] + [run_info],
        # Written first, so a crashed run can be repeated into the same OUT.
        "outputs": sorted(still_there | planned),
    }
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(names), file=sys.stderr, unit="image", desc="predict", dynamic_ncols=True)

    def say(msg: str) -> None:
        if log is None:
            return
        if bar is not None:
            bar.clear()
            log(msg)
            bar.refresh()
        else:
            log(msg)

    def tiles_shown(name: str) -> Callable[[int, int], None]:
        """The bar's text follows a large prediction of one image tile by tile (the bar itself moves once
        per image); small predictions (the scale search's views, a small image) would only flicker."""

        def show(done: int, total: int) -> None:
            if bar is not None and total >= TILES_WORTH_SHOWING:
                bar.set_postfix_str(f"{name}: {done}/{total} tiles" if done < total else "", refresh=True)

        return show

    def save_manifest() -> None:
        manifest["updated"] = _now()
        ours = {f for e in manifest["images"].values() for k in outputs.FILE_KEYS if (f := e.get(k))}
        # plan_outputs checked that any shared file already in OUT is ours: every one there now is.
        shared = {f for f in outputs.SHARED_FILES if os.path.exists(os.path.join(out, f))}
        keep = set(manifest["outputs"]) if manifest["status"] == "running" else set()
        manifest["outputs"] = sorted(
            f for f in (keep | still_there | ours | shared) if os.path.exists(os.path.join(out, f)) or f in keep
        )
        try:
            io_utils.write_json_atomic(manifest_path, manifest)
        except OSError as e:
            raise write_failure(e, manifest_path, out, len(run_info["predicted"])) from e

    def finish(status: str, error: str | None = None, tables: bool = True) -> None:
        manifest["status"] = run_info["status"] = status
        run_info["finished"] = _now()
        if error:
            manifest["error"] = error
        else:
            manifest.pop("error", None)
        if tables:
            try:
                report.write_tables_and_report(out, manifest)
            except OSError as e:
                if status == "complete":
                    raise write_failure(e, getattr(e, "filename", None) or out, out, len(run_info["predicted"])) from e
        save_manifest()

    def skip(path: str, name: str, files: Mapping[str, str], e: Exception) -> None:
        """Lists an image that could not be measured or drawn under `failed`, and goes on."""
        reason = str(e) if isinstance(e, (ValueError, OSError)) else f"unexpected {type(e).__name__}: {e}"
        manifest["failed"].append({"file": path, "reason": reason})
        run_info["failed"].append(path)
        say(f"predict: could not measure {path}: {reason} (listed under 'failed')")
        manifest["images"].pop(name, None)
        drop_stale(files)
        save_manifest()
        if bar is not None:
            bar.update(1)

    def drop_stale(files: Mapping[str, str]) -> None:
        """Removes an earlier run's files of an image this run could not redo (they would pass for this
        run's); one that cannot be removed stays listed as ours, so the next run may replace it."""
        for stale in set(files.values()) & still_there:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(out, stale))
            if not os.path.exists(os.path.join(out, stale)):
                still_there.discard(stale)

    try:
        save_manifest()
        for entry in skipped:
            if entry.get("kind") == "special":
                say(f"predict: warning: skipped {entry['file']}: {entry['reason']}")
        note = _skipped_note(skipped)
        if note:
            say(f"predict: note: not read from {images}: {note} (listed under 'skipped' in {manifest_path})")
        for path, name in names.items():
            files = outputs.image_files(name)
            _note_if_large(path, scale, say)
            try:
                with inference.tile_progress(tiles_shown(name)):
                    m = measure.measure_image(
                        model, path, pixel_size_um=pixel, exclude_border=exclude_border,
                        settings=settings, overlap=overlap, flips=flips, scale=scale, target=target,
                        databar=databar, overlays=overlays,
                    )
            except Exception as e:  # noqa: BLE001 - one image's failure must not cost the others
                skip(path, name, files, e)
                continue
            old = manifest["images"].pop(name, None)  # Its files are about to be replaced.
            try:
                colour = write_image_outputs(out, files, m, name)
            except _ImageWriteError as e:
                drop_stale(files)
                raise write_failure(e.err, e.path, out, len(run_info["predicted"])) from e.err
            except Exception as e:  # noqa: BLE001 - not the disk (that is _ImageWriteError): this image only
                skip(path, name, files, e)
                continue
            if old and old.get("file") != path:
                say(f"predict: note: {name} ({path}) replaces the results of {old.get('file')} in {out}")
            entry = {
                "file": path,
                "real_file": os.path.realpath(path),  # whatever the folder it was run from: a rerun finds it
                **files,
                **m.summary,
                "overlay_colour": list(colour),
                "model": model.tag,
                "postprocess_settings": settings.to_dict(),
                "scale": m.scale,
            }
            manifest["images"][name] = entry
            run_info["predicted"].append(name)
            if m.summary.get("warnings"):
                say(f"predict: warning: {path}: {'; '.join(m.summary['warnings'])}")
            for note in m.summary.get("notes", []):
                say(f"predict: note: {path}: {note}")
            save_manifest()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
            bar = None
        finish("complete")
    except OutputWriteError as e:
        if bar is not None:
            bar.close()
        with contextlib.suppress(OSError):  # The disk may still be full: the last manifest stands.
            finish("failed", str(e), tables=False)
        raise
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        with contextlib.suppress(OSError, KeyboardInterrupt):
            finish("interrupted", "interrupted by the user (Ctrl-C); rerun the same command to finish")
        raise
    except BaseException as e:
        if bar is not None:
            bar.close()
        with contextlib.suppress(Exception):
            finish("failed", f"{type(e).__name__}: {e}", tables=False)
        raise
    return manifest
