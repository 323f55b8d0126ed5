"""Fault injection for crash-recovery and error-message tests. Unset in normal runs, where each point
costs one or two dict lookups.

`crash_point(name)` kills the process with SIGKILL (no cleanup, no finally blocks, like an OOM kill or a
pulled plug) when the environment variable FEDTRANSFER_CRASH_AT equals `name`.

`FEDTRANSFER_FAIL_AT=<name>=<error>` makes the same point raise instead, as the real failure would:
`<error>` is an errno name (`ENOSPC`, `EDQUOT`, `EACCES`, `EROFS`: an OSError naming the file being
written) or `RESOURCE_EXHAUSTED` (the JaxRuntimeError XLA raises when device memory runs out).

Points: `checkpoint:<federation tag>:<round>` (right after that checkpoint is saved),
`method_done:<method>` (after its summary was written), `atomic_write:<file name>` (inside an atomic
write, after the temporary file is complete and before it replaces the target).
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "FEDTRANSFER_CRASH_AT"
FAIL_ENV = "FEDTRANSFER_FAIL_AT"


def crash_point(name: str, filename: str | None = None) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    fail_point(name, filename)


def fail_point(name: str, filename: str | None = None) -> None:
    """Raises the error FEDTRANSFER_FAIL_AT names for point `name` (`filename`: the file being written)."""
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return
    point, _, error = spec.rpartition("=")
    if point != name:
        return
    if error == "RESOURCE_EXHAUSTED":
        import jax  # noqa: PLC0415 (only when injecting)

        raise jax.errors.JaxRuntimeError(
            f"RESOURCE_EXHAUSTED: Out of memory while trying to allocate 68719476736 bytes (injected at {name})"
        )
    code = getattr(errno, error)
    raise OSError(code, os.strerror(code), filename)


def armed() -> bool:
    """True when a crash or fail point is set (callers may then flush async work so the fault is well
    defined)."""
    return bool(os.environ.get(ENV) or os.environ.get(FAIL_ENV))
