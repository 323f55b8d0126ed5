"""A workdir that can be trusted across restarts: one run at a time (a lock), no stale temporary files, and
a resume that refuses a config whose trained models would no longer match it.

  with open_workdir(path, config, fresh_start=False) as wd:   # lock, clean, compare, record config.json
      ...

Resume compares the new config with the stored `config.json` key by key. Keys that do not change what
was trained (progress display, figures, strategy, evaluation settings, the list of methods to run, specs
of methods not yet trained) may differ; any other difference is refused with the list of differing keys,
because the checkpoints in the workdir were trained with the old values. `fresh_start=True` moves the
previous outputs into `archive/<timestamp>/` (nothing is deleted) and starts over in the same workdir.

Several processes share one workdir (on a filesystem every host sees): process 0 alone takes the lock,
cleans, compares and records the config, while the others wait for it and fail with its message if it
fails (`distributed.on_primary`); it holds the lock for the whole run on behalf of all of them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import tempfile
import time
from typing import Any, Iterator

from fedtransfer_jax.runtime import distributed, io_utils

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
# Keys (prefixes) that may change between a run and its resume: they do not change any trained model.
COMPATIBLE_PREFIXES = (
    "name",
    "quiet",
    "figures",
    "distributed",
    "checkpoint_every",
    "methods",
    "eval.",
    "data.tfds_dir",
    "fl.strategy",
    "fl.chunk_size",
    "fl.shard_clients",
    "fl.unroll_local_steps",
    "privacy_experiment.",
    "study_references",  # how a multi-seed study is summarised, not what it trains
    # The population runner (runs/population_training.py): how tiles are rendered never changes them, and a
    # grid cell's result depends only on its own (N, K, z, seed), so a grid may grow and finished cells stay.
    "prefetch",
    "population.render_workers",
    "grid.",
)
# Keys added after workdirs were written: absent in a stored config means this value (the old behaviour).
DEFAULT_OF_NEW_KEYS = {
    "fl.lr_schedule": "constant",
    "fl.lr_warmup_rounds": 0,
    "fl.lr_final_fraction": 0.0,
    "style.prior_styles": 256,  # only the random-style control reads it
    "data.grain_diameter_px": [],  # each lab's own grain sizes
    "data.boundary_width_max": 0,  # a fixed label line width
    "data.train_groups": 0,  # every training micrograph of a folder client
    "init_from": "",  # the seed's random init
    "init_from_method": "",
    "data.intensity": "raw",  # every image as it was read (data/intensity.py)
    "fl.allow_batch_repeats": False,
    "loss.cldice_weight": 0.0,  # no centreline-Dice term
}
# What a fresh start moves aside (everything the trainer writes).
OUTPUTS = (
    "summary.json",
    "summary.md",
    "metrics.jsonl",
    "config.json",
    "log.txt",
    "provenance.jsonl",
    "checkpoints",
    "best_val",
    "init_from.json",
    "convergence.png",
    "postprocess",
    "style_checks.json",
    "audit.json",
    "audit.md",
)

# The figures the trainer and the studies draw in the workdir; a user's own pictures there stay where they are.
FIGURE_PATTERNS = ("predictions.png", "ari_per_lab.png", "ari_vs_epsilon.png", "ari_vs_k.png", "style_grid_*.png")


class WorkdirError(RuntimeError):
    """A workdir problem the user can fix (locked, incompatible config)."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


# What a start of launch.py writes first (log.txt, the lock, config.json) or later: a folder holding one of
# them is a workdir (perhaps of a start that failed); a folder holding only other files is someone else's.
WORKDIR_ENTRIES = (CONFIG_NAME, LOCK_NAME, "log.txt", "provenance.jsonl", "checkpoints", "summary.json", "tfds")


def looks_like_workdir(path: str) -> bool:
    """Whether ``path`` (an existing folder) is a workdir or empty (hidden files such as .DS_Store aside)."""
    names = [n for n in os.listdir(path) if not n.startswith(".") or n == LOCK_NAME]
    return not names or any(n in WORKDIR_ENTRIES for n in names)


def ensure_workdir(path: str) -> None:
    """Creates `path` (and its parents) if missing and checks that this process can write in it, before
    anything is written there. Raises WorkdirError with one line naming `--workdir` (a file in the way,
    no permission, a read-only file system, a full disk); nothing is created when it fails."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {path} is a file, not a folder: pass a folder (it is created if missing)")
    existed = os.path.isdir(path)
    if existed and not looks_like_workdir(path):
        raise WorkdirError(
            f"--workdir {path} is a folder of other files, not a workdir (no {CONFIG_NAME} or log.txt): a run "
            "would write among them and clean up there; pass a new or empty folder"
        )
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        parent = os.path.dirname(os.path.abspath(path))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        raise WorkdirError(
            f"--workdir {path}: {parent} is a file, not a folder: pass a path inside a folder"
        ) from None
    except OSError as e:
        if not existed and os.path.isdir(path):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        if e.errno in NOT_WRITABLE_ERRNOS:
            raise WorkdirError(
                f"--workdir {path} is not writable ({e.strerror}): pass a folder you can write to, or fix "
                f"its permissions"
            ) from None
        if e.errno in DISK_FULL_ERRNOS:
            raise WorkdirError(f"--workdir {path}: disk full ({e.strerror}): free space and rerun") from None
        raise


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (normalised to lists)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
        return out
    out[prefix[:-1]] = list(d) if isinstance(d, tuple) else d
    return out


def incompatible_keys(old: dict, new: dict) -> list[str]:
    """Config keys whose change would make the workdir's trained models lie about their config."""
    old_f, new_f = flatten(old), flatten(new)
    trained = set(old.get("methods", []))
    diff = []
    for key in sorted(set(old_f) | set(new_f)):
        absent = DEFAULT_OF_NEW_KEYS.get(key, "<absent>")
        if old_f.get(key, absent) == new_f.get(key, absent):
            continue
        if any(key == p or (p.endswith(".") and key.startswith(p)) for p in COMPATIBLE_PREFIXES):
            continue
        if key.startswith("augment.") and not old_f.get("augment.enabled") and not new_f.get("augment.enabled"):
            continue  # augmentation off in both (a config from before `augment` existed: off): settings unused
        if key == "data.dir" and not {old_f.get("data.source"), new_f.get("data.source")} & {"folder", "mixed"}:
            continue  # a source that reads no folder: its data.dir never reached the data
        if key == "init_from_method" and not old_f.get("init_from") and not new_f.get("init_from"):
            continue  # a method of no init_from: never read
        if key == "fl.rounds" and int(new_f.get(key, 0)) >= int(old_f.get(key, 0)):
            continue  # training longer continues from the checkpoints; fewer rounds would misreport them
        if key.startswith("method_specs."):
            method = key.split(".")[1]
            if method not in trained:  # a spec of a method the workdir never trained
                continue
        diff.append(key)
    return diff


def describe_diff(old: dict, new: dict, keys: list[str], limit: int = 12) -> str:
    old_f, new_f = flatten(old), flatten(new)
    lines = [f"  {k}: {old_f.get(k, '<absent>')!r} -> {new_f.get(k, '<absent>')!r}" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"  ... and {len(keys) - limit} more")
    return "\n".join(lines)


@contextlib.contextmanager
def lock(path: str) -> Iterator[None]:
    """An exclusive advisory lock on `<path>/.lock` for the life of the run (released by the OS if the
    process dies, so a crash never leaves the workdir locked)."""
    os.makedirs(path, exist_ok=True)
    lock_path = os.path.join(path, LOCK_NAME)
    f = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise WorkdirError(
                    f"workdir {path} is in use by {holder}: wait for it to finish or use another --workdir"
                ) from None
            raise
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def clean_stale_files(path: str) -> list[str]:
    """Removes what an interrupted run leaves behind: our atomic writers' hidden `.tmp-*` files and tfds's
    `incomplete.*` build directories (nothing else: other names may be a user's). Only called while holding
    the lock, so nothing is in flight."""
    removed = []
    for pattern in (".tmp-*", "**/.tmp-*", "tfds/**/incomplete.*"):
        for p in glob.glob(os.path.join(path, pattern), recursive=True):
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.exists(p):
                os.unlink(p)
            removed.append(os.path.relpath(p, path))
    return removed


def archive_outputs(path: str) -> str | None:
    """Moves the previous run's outputs to `archive/<timestamp>/`; returns that folder (None if nothing)."""
    figures = tuple(os.path.basename(p) for pattern in FIGURE_PATTERNS for p in sorted(glob.glob(os.path.join(path, pattern))))
    present = [name for name in OUTPUTS + figures if os.path.exists(os.path.join(path, name))]
    if not present:
        return None
    dest = os.path.join(path, "archive", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(dest, exist_ok=False)
    for name in present:
        shutil.move(os.path.join(path, name), os.path.join(dest, name))
    return dest


@contextlib.contextmanager
def open_workdir(path: str, config_json: dict, *, fresh_start: bool = False, log=None) -> Iterator[dict]:
    """Lock `path`, clean stale files, check the stored config against `config_json`, record it.

    Yields an info dict: {'resumed': bool, 'archived': folder or None, 'cleaned': [files]}.
    Raises WorkdirError naming the differing keys when the stored config is incompatible.

    With several processes only process 0 does this (the others get an empty info dict once it is done,
    or `distributed.PrimaryError` when it failed), so nothing is cleaned while another process reads.
    """
    with contextlib.ExitStack() as stack:
        recorded = []  # process 0: this start wrote the workdir's first config.json

        def prepare() -> dict:
            stack.enter_context(lock(path))
            if not os.path.exists(os.path.join(path, CONFIG_NAME)):
                recorded.append(True)
            return _prepare(path, config_json, fresh_start=fresh_start)

        info = distributed.on_primary(prepare)
        try:
            yield info if info is not None else {"resumed": False, "archived": None, "cleaned": []}
        except BaseException:
            if recorded:
                forget_config_if_untrained(path)
            raise


def forget_config_if_untrained(path: str) -> bool:
    """Removes the `config.json` a failed first start recorded when nothing was trained or reported yet
    (no checkpoints/, no summary.json), so that the corrected command is not refused as "trained with a
    different config". Returns whether it removed it."""
    if any(os.path.exists(os.path.join(path, name)) for name in ("checkpoints", "summary.json")):
        return False
    with contextlib.suppress(FileNotFoundError):  # nothing of that start survives: nor does its record
        os.unlink(os.path.join(path, "provenance.jsonl"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(path, CONFIG_NAME))
        return True
    return False


def _prepare(path: str, config_json: dict, *, fresh_start: bool) -> dict:
    """Clean, compare with the stored config (or archive), record the new one. Called holding the lock."""
    info: dict = {"resumed": False, "archived": None, "cleaned": clean_stale_files(path)}
    stored = os.path.join(path, CONFIG_NAME)
    if os.path.exists(stored):
        with open(stored) as f:
            old = json.load(f)
        keys = incompatible_keys(old, config_json)
        if keys and not fresh_start:
            raise WorkdirError(
                f"workdir {path} was trained with a different config; resuming would mix models and "
                f"settings. Differing keys:\n{describe_diff(old, config_json, keys)}\n"
                f"Use another --workdir, undo the change, or pass --fresh_start to move the previous "
                f"outputs to {os.path.join(path, 'archive')}/ and start over."
            )
        if fresh_start:
            info["archived"] = archive_outputs(path)
        else:
            info["resumed"] = os.path.isdir(os.path.join(path, "checkpoints"))
    elif fresh_start:
        info["archived"] = archive_outputs(path)
    io_utils.write_json_atomic(stored, config_json)
    return info
