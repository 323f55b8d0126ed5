"""One XLA:CPU device per core: how a federated round keeps every core of a CPU host busy.

XLA:CPU parallelises inside an op. A U-Net client's small convolutions, GroupNorm reductions and transposes
leave the second of two cores idle much of the time (1.5 of 2 cores busy, docs/PERFORMANCE.md), where
PyTorch's OpenMP keeps both busy. With one JAX device per core the engine gets a `clients` mesh
(`run_context.make_mesh`) and the round runs each device's share of the clients side by side
(`fl/federated_round.py`, shard_map), the same data-parallel map over clients that a GPU cluster gets.

`configure()` must run before JAX initialises its backends (JAX reads `jax_num_cpu_devices` once). It leaves
JAX alone when XLA_FLAGS already sets a host device count (scripts/launch_local.py, tests/test_sharding.py)
or when JAX has already started. On a machine with an accelerator the extra CPU devices are idle: the
default backend, and so the mesh, is the accelerator's.
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "FEDTRANSFER_CPU_DEVICES"
XLA_FLAG = "xla_force_host_platform_device_count"
# XLA:CPU aborts the whole process (SIGABRT, "Termination timeout ... exceeded") when one device waits more
# than 20 + 40 s for another at a collective (it warns after the first, aborts after both). The round's
# all-reduce over the `clients` mesh is one, and on a loaded host (another job beside the run) a device's
# thread can be starved that long: a 70-minute run died this way at round 10. A run waits up to this long instead; a real deadlock still ends, later.
COLLECTIVE_FLAG = "xla_cpu_collective_call_terminate_timeout_seconds"
COLLECTIVE_WARN_FLAG = "xla_cpu_collective_call_warn_stuck_timeout_seconds"
COLLECTIVE_WAIT_S = 1800
COLLECTIVE_WARN_S = 60


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # noqa: PLC0415 - the only way to ask without starting a backend

    return xla_bridge.backends_are_initialized()


def patient_collectives(seconds: int = COLLECTIVE_WAIT_S, warn_seconds: int = COLLECTIVE_WARN_S) -> bool:
    """Lets XLA:CPU collectives wait for a slow device (a warning in the log after `warn_seconds`, an abort
    `seconds` later) instead of aborting after 60 s, through XLA_FLAGS, which XLA reads when JAX starts its
    backends (`configure` calls this). False (nothing changed) when the backends have started or XLA_FLAGS
    already sets either timeout (the user's settings win)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _backends_started() or COLLECTIVE_FLAG in flags or COLLECTIVE_WARN_FLAG in flags:
        return False
    ours = f"--{COLLECTIVE_WARN_FLAG}={int(warn_seconds)} --{COLLECTIVE_FLAG}={int(seconds)}"
    os.environ["XLA_FLAGS"] = f"{flags} {ours}".strip()
    return True


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; containers and `taskset` narrow it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def requested_count(requested: int | str | None = None) -> int:
    """`requested` (an int or 'auto'), else $FEDTRANSFER_CPU_DEVICES, else 'auto' = the usable cores."""
    value = requested if requested not in (None, "", 0, "0") else os.environ.get(ENV_VAR, "auto")
    if str(value).strip().lower() == "auto":
        return usable_cores()
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"CPU devices (--cpu_devices / ${ENV_VAR}) must be 'auto' or an integer >= 1, got {value!r}")
    return n


def configure(requested: int | str | None = None) -> int | None:
    """Splits the host into `requested_count(requested)` XLA:CPU devices before JAX starts.

    Returns the count it set, or None when it left JAX as it was (XLA_FLAGS names a count, or JAX's
    backends are already initialised: then the device count is whatever they were started with)."""
    n = requested_count(requested)
    if _backends_started():
        return None
    patient_collectives()  # several devices meet at collectives; so may one device beside other processes
    if XLA_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    import jax  # noqa: PLC0415

    jax.config.update("jax_num_cpu_devices", n)
    return n
