"""Workdir outputs, written so that a crash never leaves a half-written file (temp file + os.replace).

Files are created with the permissions any ordinary ``open()`` would give them (0o666 minus the umask),
so a group-shared workdir stays readable by the group: ``tempfile.mkstemp`` alone would make every
output private (0o600).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

from fedtransfer_jax.runtime import faults


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status).

    ``os.umask`` can only be read by setting it, which races with other threads creating files; the
    fallback sets and restores it immediately.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode of a new regular file under the current umask (what ``open(path, 'w')`` would create)."""
    return 0o666 & ~current_umask()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    Readers see the old file or the new one, never a mix; on any error the temp file is removed and
    ``path`` is untouched. An OSError that names no file (``write``/``fsync`` on a full disk) is raised
    again naming ``path``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0o600; outputs are meant to be shared.
        faults.crash_point(f"atomic_write:{os.path.basename(path)}", path)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # write()/fsync() errors (disk full) name no file: name the one being written.
            raise OSError(e.errno, e.strerror, path) from e
        raise


def save_figure_atomic(fig, path: str, **savefig_kw) -> None:
    """A matplotlib figure as a PNG at ``path``, written as ``write_bytes_atomic`` writes (a hidden ``.tmp-``
    file that a restart cleans up, never a half-written figure), then closed."""
    import io  # noqa: PLC0415

    import matplotlib.pyplot as plt  # noqa: PLC0415

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", **savefig_kw)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def write_text_atomic(path: str, text: str) -> None:
    # surrogateescape: a file name that is not UTF-8 (b"caf\xe9.png", unzipped from another system) comes
    # back out as the bytes it has on disk instead of failing the write.
    write_bytes_atomic(path, text.encode("utf-8", "surrogateescape"))


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a non-UTF-8 file name shown as U+FFFD (for figures and the
    terminal, which cannot carry raw bytes)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN/inf; readers see null.
    return x


def write_json_atomic(path: str, obj: Any) -> None:
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def config_to_json(config: Any) -> dict:
    """An ml_collections ConfigDict as plain JSON-able data."""
    return _jsonable(config.to_dict())
