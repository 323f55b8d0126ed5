"""What predict writes into OUT, checked before anything is written, and the lock that keeps one run per OUT.

Per image <name> (the input's stem; colliding stems get stem_suffix, see ``output_names``):
  <name>.png           boundary map (255 = boundary)
  <name>_grains.csv    grain table
  <name>_overlay.png   the micrograph with the measured grains' borders drawn on it
  <name>_hist.png      grain-size histogram
For the whole OUT: grain_sizes.json (the manifest), grain_sizes.csv (every image's grains),
grain_sizes_summary.csv (one row per image) and report.html.

The manifest lists every file predict wrote (``outputs``); a file in OUT named like an output but not
listed there is the user's and is never replaced. Runs into the same OUT are merged: an image predicted
earlier keeps its entry, an image predicted again replaces its own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fedtransfer_jax.runs import inference

MANIFEST = "grain_sizes.json"
COMBINED_CSV = "grain_sizes.csv"
SUMMARY_CSV = "grain_sizes_summary.csv"
REPORT = "report.html"
SHARED_FILES = (COMBINED_CSV, SUMMARY_CSV, REPORT)  # Rewritten by every run (the manifest aside).
LOCK_NAME = ".predict.lock"
# Per-image files, in the manifest entry's keys.
FILE_KEYS = ("boundary_map", "grain_table", "overlay", "histogram")


class UnsafeOutputError(ValueError):
    """Writing the outputs would replace or mix with files the user owns."""


class OutputLockedError(UnsafeOutputError):
    """Another predict is writing into the same OUT."""


# File names are at most 255 bytes on common file systems; an output adds up to 12 ("_overlay.png") and
# its atomic write's temporary file 13 more (runtime/io_utils.py), so longer stems are shortened.
MAX_NAME_BYTES = 200


def _fits(stem: str) -> str:
    """``stem``, or, when its outputs' names would be too long to create, its first ~180 bytes + '~' + a
    hash of the whole stem (names stay distinct; the manifest keeps the input's full path)."""
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) <= MAX_NAME_BYTES:
        return stem
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha1(encoded).hexdigest()[:8]
    head = encoded[: MAX_NAME_BYTES - 20].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def output_names(
    paths: Sequence[str],
    earlier: Mapping[str, Sequence[str]] | None = None,
    earlier_inputs: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Input path -> output name (no suffix): the stem, or stem_suffix where stems collide.

    A stem too long for its outputs' file names is shortened (``_fits``). Collisions are found
    case-insensitively (so outputs stay apart on macOS/Windows file systems too);
    a name whose files would be another image's (`a_overlay.png` is both the overlay of `a.png` and the
    map of `a_overlay.png`), here or in ``earlier`` (name -> files of the images an earlier run wrote
    into OUT; an image of the same name replaces its own), gets _2, _3... in input order.
    An input an earlier run measured (``earlier_inputs``: its real path -> the name it got) keeps that
    name, so its results are replaced rather than counted twice when a new file beside it changes the
    naming (`x.png` was `x`; with `x.tif` added it stays `x`, and `x.tif` becomes `x_tif`).
    """
    own = {p: (earlier_inputs or {}).get(os.path.realpath(p)) for p in paths}
    reserved = {n.casefold() for n in own.values() if n}
    stems = {p: _fits(os.path.splitext(os.path.basename(p))[0]) for p in paths}
    count: dict[str, int] = {}
    for stem in stems.values():
        count[stem.casefold()] = count.get(stem.casefold(), 0) + 1
    earlier_files = {
        f.casefold(): n.casefold() for n, files in (earlier or {}).items() for f in files
    }
    names, used_names, used_files = {}, set(), set()

    def clashes(name: str) -> bool:
        files = {f.casefold() for f in output_files(name)}
        return (
            name.casefold() in used_names
            or name.casefold() in reserved
            or bool(files & used_files)
            or any(earlier_files.get(f, name.casefold()) != name.casefold() for f in files)
        )

    for p in paths:
        stem, suffix = stems[p], os.path.splitext(p)[1].lstrip(".")
        if own[p] and own[p].casefold() not in used_names:
            name = own[p]
        else:
            name = stem if count[stem.casefold()] == 1 else f"{stem}_{suffix}"
            base, i = name, 2
            while clashes(name):
                name, i = f"{base}_{i}", i + 1
        used_names.add(name.casefold())
        used_files.update(f.casefold() for f in output_files(name))
        names[p] = name
    return names


def image_files(name: str) -> dict[str, str]:
    """The files one image produces (manifest key -> path relative to OUT)."""
    return {
        "boundary_map": name + ".png",
        "grain_table": name + "_grains.csv",
        "overlay": name + "_overlay.png",
        "histogram": name + "_hist.png",
    }


def output_files(name: str) -> tuple[str, ...]:
    """The files one image produces, relative to OUT."""
    return tuple(image_files(name).values())


def read_manifest(out: str) -> dict | None:
    """OUT's manifest written by an earlier predict, or None when there is none.

    Raises:
      UnsafeOutputError: OUT/grain_sizes.json exists but is not a predict manifest (someone else's).
    """
    path = os.path.join(out, MANIFEST)
    if not os.path.lexists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
        if not isinstance(manifest, dict) or not isinstance(manifest["images"], dict):
            raise TypeError("not a manifest")
        set(manifest["outputs"])
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnsafeOutputError(
            f"--out {out}: {path} exists and is not a manifest written by predict ({type(e).__name__}); "
            "choose another --out"
        ) from e


def previous_outputs(out: str) -> set[str]:
    """Files an earlier predict wrote into ``out`` (listed in its manifest); empty if none."""
    manifest = read_manifest(out)
    return set(manifest["outputs"]) if manifest else set()


def _without_earlier_outputs(images: str, inputs: list[str], skipped: list[dict[str, str]]):
    """An earlier predict's OUT given as --images: its boundary maps, overlays and histograms are not
    micrographs (measured, they give confident nonsense). Files its manifest lists are skipped; a folder of
    nothing else is refused."""
    if not os.path.isdir(images):
        return inputs, skipped
    try:
        manifest = read_manifest(images)
    except UnsafeOutputError:  # a grain_sizes.json of the user's own: not ours to interpret
        return inputs, skipped
    written = set(manifest["outputs"]) if manifest else set()
    if not written:
        return inputs, skipped
    ours = [p for p in inputs if os.path.basename(p) in written]
    if ours and len(ours) == len(inputs):
        raise ValueError(
            f"--images {images} is the output folder of an earlier predict (its {MANIFEST} lists every image "
            "in it): boundary maps and overlays, not micrographs; give the folder of the micrographs"
        )
    reason = f"written by an earlier predict (listed in {os.path.join(images, MANIFEST)}), not a micrograph"
    earlier = [{"file": p, "reason": reason, "kind": "earlier_output"} for p in ours]
    return [p for p in inputs if p not in ours], skipped + earlier


def plan_outputs(images: str, out: str) -> tuple[dict[str, str], list[dict[str, str]], dict | None]:
    """Checks that predicting ``images`` into ``out`` is safe; writes nothing.

    Returns:
      ``(names, skipped, previous)``: input path -> output name, the entries of the folder that are
      not images, and the manifest of an earlier predict in ``out`` (None if none).

    Raises:
      UnsafeOutputError: --out is --images or inside it, an output would replace an input file, or an
        output exists that predict did not write (each names the files and flags).
      FileNotFoundError / ValueError: --images missing or without images.
    """
    inputs, skipped = inference.scan_images(images)
    inputs, skipped = _without_earlier_outputs(images, inputs, skipped)
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
    manifest = read_manifest(out)
    earlier = {
        n: [e[k] for k in FILE_KEYS if isinstance(e, dict) and e.get(k)]
        for n, e in (manifest["images"] if manifest else {}).items()
    }
    names = output_names(inputs, earlier, _measured_inputs(manifest))
    input_files = {os.path.realpath(p): p for p in inputs}
    previous = set(manifest["outputs"]) if manifest else set()
    planned = [f for n in names.values() for f in output_files(n)] + list(SHARED_FILES) + [MANIFEST]
    foreign = []  # files in OUT that predict would replace but did not write: all of them named at once
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
            foreign.append(target)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UnsafeOutputError(
            f"output {shown} exist{'s' if len(foreign) == 1 else ''} and {'was' if len(foreign) == 1 else 'were'} "
            f"not written by predict (not listed in {os.path.join(out, MANIFEST)}); move "
            f"{'it' if len(foreign) == 1 else 'them'} away or choose another --out"
        )
    return names, skipped, manifest


def _measured_inputs(manifest: dict | None) -> dict[str, str]:
    """The real path of each input an earlier run measured -> its name there. ``real_file`` where the entry
    has one (a relative ``file`` depends on the folder that run started in), else an absolute ``file``; of
    two entries for one file (a link and its target, measured before links were), the target's."""
    found: dict[str, tuple[bool, str]] = {}
    for name, e in (manifest["images"] if manifest else {}).items():
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            continue
        real = e.get("real_file") if isinstance(e.get("real_file"), str) else None
        if real is None and os.path.isabs(e["file"]):
            real = os.path.realpath(e["file"])
        if real is None:
            continue
        is_target = os.path.abspath(e["file"]) == real
        if real not in found or (is_target and not found[real][0]):
            found[real] = (is_target, name)
    return {real: name for real, (_, name) in found.items()}


def kept_entries(manifest: dict | None, out: str) -> dict[str, dict]:
    """The image entries of an earlier run whose files are all still in OUT (the results to keep)."""
    if not manifest:
        return {}
    kept = {}
    for name, entry in manifest["images"].items():
        if not isinstance(entry, dict):
            continue
        files = [entry[k] for k in FILE_KEYS if isinstance(entry.get(k), str)]
        if files and all(os.path.isfile(os.path.join(out, f)) for f in files):
            kept[name] = entry
    return kept


# ----------------------------------------------------------------------------------------------
# One run at a time per OUT.
# ----------------------------------------------------------------------------------------------

_held = threading.local()  # realpath -> depth, per thread: predict_folder inside run() re-enters.


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _make_folders(out: str) -> list[str]:
    """Creates OUT and its missing parents; returns the folders this call created, deepest first (a
    folder another process created meanwhile is not ours to remove)."""
    levels, path = [], os.path.abspath(out)
    while os.path.dirname(path) != path:
        levels.append(path)
        path = os.path.dirname(path)
    for _attempt in range(5):
        created = []
        try:
            for level in reversed(levels):
                try:
                    os.mkdir(level)
                    created.append(level)
                except FileExistsError:
                    if not os.path.isdir(level):
                        _remove_empty(created[::-1])
                        msg = f"--out {out}: cannot create it, {level} is a file, not a folder"
                        raise _out_error(NotADirectoryError, errno.ENOTDIR, msg) from None
                except FileNotFoundError:
                    raise
                except OSError as e:
                    _remove_empty(created[::-1])
                    msg = f"--out {out}: cannot create the folder {level} ({e.strerror})"
                    raise _out_error(type(e), e.errno, msg) from None
            return created[::-1]
        except FileNotFoundError:  # a parent vanished under us (another run removed it): again
            _remove_empty(created[::-1])
    try:
        os.makedirs(out, exist_ok=True)  # raises what is wrong
    except OSError as e:
        raise _out_error(type(e), e.errno, f"--out {out}: cannot create it ({e.strerror})") from None
    return []


def _out_error(kind: type[OSError], code: int | None, message: str) -> OSError:
    """An OSError of ``kind`` with its errno whose text is ``message`` alone (no "[Errno 20]" in front)."""
    err = kind(message)
    err.errno = code
    return err


def _remove_empty(folders: Sequence[str]) -> None:
    """Removes the folders a run created, deepest first, as long as they are empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


def remove_run_outputs(out: str, manifest: Mapping[str, Any]) -> None:
    """Removes what a run that measured nothing wrote into a fresh OUT (its manifest, empty tables and
    report), so that `lock` removes OUT too: a run with nothing to show leaves nothing behind."""
    for name in [*manifest.get("outputs", []), *SHARED_FILES, MANIFEST]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))


@contextlib.contextmanager
def lock(out: str) -> Iterator[None]:
    """An exclusive lock on OUT (``OUT/.predict.lock``) for the duration of a run.

    A second run into the same OUT fails at once with ``OutputLockedError`` naming OUT and the holder's
    pid. The lock is an ``flock`` on the file, so the OS drops it when its process dies: a lock left by a
    killed process (its pid no longer alive) is simply taken over. The file is removed on release (and
    a run that locked a file someone just removed retries on the new one), and so are OUT and the parent
    folders the lock created when nothing was written into them (a run that failed early leaves no
    trace). Re-entrant within a thread.
    """
    key = os.path.realpath(out)
    depth = getattr(_held, "locks", None)
    if depth is None:
        depth = _held.locks = {}
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    created = _make_folders(out)  # OUT and any missing parents, removed again if left empty
    path = os.path.join(os.path.abspath(out), LOCK_NAME)  # the folder made: `in/x/..` is `in`
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:  # a read-only or immutable folder: say which flag, not only the errno
            _remove_empty(created)
            msg = f"--out {out}: cannot write into it ({e.strerror}): choose a folder you can write to"
            raise _out_error(type(e), e.errno, msg) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            _remove_empty(created)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _holder(path) or "another process"
            raise OutputLockedError(
                f"--out {out} is in use by another predict ({holder}): wait for it to finish, or use "
                "another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # The holder removed the file as we opened it: lock the new one.
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    depth[key] = 1
    try:
        yield
    finally:
        depth.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # Closing drops the flock.
        _remove_empty(created)
