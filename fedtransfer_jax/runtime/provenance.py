"""What a run ran on, once per start: code, library versions, devices. Kept in `<workdir>/provenance.jsonl`.

Same config and seed give the same numbers only with the same code, the same numerical libraries and the
same device count (the round's float sums meet in another order on another mesh). A run that was
interrupted and resumed under a different one of these would silently mix two sets of numerics: each
start appends one line here, `summary.json` carries them all (`provenance`), and the differences between
starts are named (`provenance.differs`, and one console line), so such a run can be recognised later.

`code` is a SHA-256 over the package's own source files (works without git and sees uncommitted edits);
`git` is the checkout's commit when there is one.
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
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "scikit-image")
# Fields that change the numbers when they change between starts (time and process id do not).
NUMERIC_FIELDS = ("code", "packages", "device", "python", "xla_flags")
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
        run = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10)
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


def snapshot(device: str) -> dict[str, Any]:
    """This process's start: time, code, packages, `device` ('<backend>:<count>'), python, XLA_FLAGS."""
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code": code_hash(),
        "git": git_commit(),
        "packages": package_versions(),
        "device": device,
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


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


def record_start(workdir: str, snap: dict) -> list[dict]:
    """Appends `snap` to `<workdir>/provenance.jsonl` and returns every start recorded there."""
    with open(os.path.join(workdir, FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(snap, sort_keys=True) + "\n")
    return read(workdir)


def differences(starts: list[dict]) -> list[str]:
    """The numeric fields that are not the same in every start ('packages.jax', 'device', ...)."""
    out = []
    for field in NUMERIC_FIELDS:
        values = [s.get(field) for s in starts]
        if field == "packages":
            names = sorted({k for v in values if isinstance(v, dict) for k in v})
            out += [f"packages.{n}" for n in names if len({(v or {}).get(n) for v in values}) > 1]
        elif len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            out.append(field)
    return out


def summary_entry(starts: list[dict]) -> dict:
    """`summary.json`'s `provenance`: every start, and what differs between them."""
    return {"starts": starts, "differs": differences(starts)}
