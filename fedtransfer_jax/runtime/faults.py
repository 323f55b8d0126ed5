"""Fault injection for crash-recovery tests: `crash_point(name)` kills the process with SIGKILL (no cleanup,
no finally blocks, like an OOM kill or a pulled plug) when the environment variable FEDTRANSFER_CRASH_AT
equals `name`. Unset in normal runs, where it costs one dict lookup.

Points: `checkpoint:<federation tag>:<round>` (right after that checkpoint is saved),
`method_done:<method>` (after its summary was written), `atomic_write:<file name>` (inside an atomic
write, after the temporary file is complete and before it replaces the target).
"""

from __future__ import annotations

import os
import signal

ENV = "FEDTRANSFER_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> bool:
    """True when a crash point is set (callers may then flush async work so the crash is well defined)."""
    return bool(os.environ.get(ENV))
