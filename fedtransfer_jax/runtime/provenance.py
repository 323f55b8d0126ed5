"""What a run ran on, once per start: code, library versions, devices. Kept in `<workdir>/provenance.jsonl`.

Same config and seed give the same numbers only with the same code, the same numerical libraries and the
same device count (the round's float sums meet in another order on another mesh). A run that was
interrupted and resumed under a different one of these would silently mix two sets of numerics: each
start appends one line here, `summary.json` carries them all (`provenance`), and the differences between
starts are named (`provenance.differs`, and one console line), so such a run can be recognised later.

`code` is a SHA-256 over the package's own source files, taken when this module is imported (the code
that runs, even if the checkout is edited while data load; it works without git and sees uncommitted
edits); `git` is the checkout's commit when the package is tracked there. Recorded too: library versions,
the device kind and count, the CPU model, `XLA_FLAGS` and `JAX_*` variables, and the config keys that pick
how a round is mapped onto devices (allowed to change on resume, numerically equal only to ~1e-6).
Not recorded: a GPU strategy's plan resolved from free memory, and other processes' own code and packages
(process 0 records for all; they run one SPMD program). Config keys and starting weights have their own
checks (config.json, init_from.json).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

FILE = "provenance.jsonl"
PACKAGES = (
    "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax", "optax", "orbax-checkpoint", "numpy",
    "scipy", "scikit-image", "dp-accounting", "pillow", "tifffile", "imagecodecs",
)
# Fields that change the numbers when they change between starts (time and the git commit alone do not).
NUMERIC_FIELDS = ("code", "packages", "device", "device_kind", "cpu", "python", "xla_flags", "jax_env", "round_mapping")
# Config keys that may change on resume (runtime/workdir.py) but map the round onto devices differently.
ROUND_MAPPING_KEYS = ("strategy", "chunk_size", "shard_clients", "unroll_local_steps")
UNRECORDED = "an earlier start that was not recorded"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def code_hash(root: Path = _PACKAGE_DIR) -> str:
    """SHA-256 over every .py file under `root` (relative path and content, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode("utf-8", "surrogateescape") + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def git_commit(root: Path = _PACKAGE_DIR) -> str | None:
    """The commit checked out at `root` ('<sha>+dirty' with uncommitted changes), or None without git."""
    try:
        # --no-optional-locks: `git status` must not take the index lock of a checkout someone commits in.
        run = lambda *a: subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *a], capture_output=True, text=True, timeout=10
        )
        head = run("rev-parse", "HEAD")
        # An installed copy inside someone else's repository (a venv in a project) is not that repo's code.
        if head.returncode != 0 or run("ls-files", "--error-unmatch", "--", "__init__.py").returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".")
        return head.stdout.strip()[:12] + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


_CODE_AT_IMPORT = code_hash()
_GIT_AT_IMPORT = git_commit()


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def snapshot(device: str, device_kind: str = "", config: Any = None) -> dict[str, Any]:
    """This process's start: time, code, packages, `device` ('<backend>:<count>') and its kind, the CPU,
    python, XLA_FLAGS, JAX_* variables, and `config`'s round-mapping keys (fl.strategy, ...)."""
    fl = config.get("fl", {}) if config is not None and hasattr(config, "get") else {}
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code": _CODE_AT_IMPORT,
        "git": _GIT_AT_IMPORT,
        "packages": package_versions(),
        "device": device,
        "device_kind": device_kind,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("JAX_")},
        "round_mapping": {k: fl.get(k) for k in ROUND_MAPPING_KEYS if k in fl},
    }


def has_earlier_results(workdir: str) -> bool:
    """Whether an earlier start left trained state (checkpoints, a summary, finished population cells)."""
    cells = os.path.join(workdir, "cells")
    return (
        os.path.isdir(os.path.join(workdir, "checkpoints"))
        or os.path.exists(os.path.join(workdir, "summary.json"))
        or (os.path.isdir(cells) and bool(os.listdir(cells)))
    )


def read(workdir: str) -> list[dict]:
    """The starts recorded in `workdir` (a torn last line from a kill is skipped)."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return []
    starts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                starts.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return starts


def record_start(workdir: str, snap: dict, *, resumed: bool = False) -> list[dict]:
    """Appends `snap` to `<workdir>/provenance.jsonl` and returns every start recorded there. `resumed`
    (an earlier start left results) with no start on record (a workdir from before this file existed, or
    a lost one) first records {"unrecorded": true}: such a run is not known to be consistent."""
    earlier = read(workdir)
    new = ([{"unrecorded": True}] if resumed and not earlier else []) + [snap]
    lines = [json.dumps(entry, sort_keys=True) for entry in new]
    with open(os.path.join(workdir, FILE), "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():  # a line torn by a kill or a full disk is closed, so it does not swallow this one
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
            f.seek(0, os.SEEK_END)
            if torn:
                f.write(b"\n")
        f.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
    return earlier + [json.loads(line) for line in lines]  # as read() would return them


def record(workdir: str, device: str, device_kind: str = "", config: Any = None) -> dict:
    """This start recorded in `workdir` (noting an unrecorded earlier one): `summary.json`'s `provenance`."""
    snap = snapshot(device, device_kind, config)
    return summary_entry(record_start(workdir, snap, resumed=has_earlier_results(workdir)))


def _comparable(field: str, value: Any) -> str:
    if field == "xla_flags":  # the same flags in another order or spacing are the same flags
        value = sorted(str(value or "").split())
    return json.dumps(value, sort_keys=True)


def differences(starts: list[dict]) -> list[str]:
    """What is not the same in every start: numeric fields ('packages.jax', 'device', ...), and UNRECORDED
    when an earlier start left no record. A field missing from some start (recorded by an older version of
    this module) is not compared."""
    out = [UNRECORDED] if any(s.get("unrecorded") for s in starts) else []
    starts = [s for s in starts if not s.get("unrecorded")]
    for field in NUMERIC_FIELDS:
        if not starts or any(field not in s for s in starts):
            continue
        values = [s[field] for s in starts]
        if field == "packages":
            names = sorted({k for v in values if isinstance(v, dict) for k in v})
            out += [f"packages.{n}" for n in names if len({(v or {}).get(n) for v in values}) > 1]
        elif len({_comparable(field, v) for v in values}) > 1:
            out.append(field)
    return out


def summary_entry(starts: list[dict]) -> dict:
    """`summary.json`'s `provenance`: every start, and what differs between them."""
    return {"starts": starts, "differs": differences(starts)}


def describe(differs: list[str]) -> str:
    """One sentence for summary.md and the console ('' when every start agrees)."""
    if not differs:
        return ""
    other = [d for d in differs if d != UNRECORDED]
    why = " and ".join(
        ([f"on other {', '.join(other)} than an earlier start"] if other else [])
        + (["after an earlier start that was not recorded"] if UNRECORDED in differs else [])
    )
    return f"Resumed {why} ({FILE}): the numbers may differ from an uninterrupted run's."
