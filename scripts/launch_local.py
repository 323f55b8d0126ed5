r"""Runs launch.py as N processes on this machine, joined by jax.distributed (multi-controller JAX on CPUs).

  python scripts/launch_local.py --num_processes 2 --devices_per_process 2 -- \
      --config experiments/grains.py:smoke --workdir /tmp/mp

Everything after `--` goes to every process's launch.py unchanged; each process also gets
`--coordinator_address=127.0.0.1:<free port> --num_processes=N --process_id=i` and, in its environment,
`--xla_force_host_platform_device_count=<devices_per_process>` (appended to XLA_FLAGS) and
`JAX_PLATFORMS=cpu`, so the run's mesh has N x devices_per_process CPU devices. The numbers equal a
one-process run on as many devices (tests/test_multiprocess.py).

Process 0's output is passed through as it is; the others' lines are prefixed with `[p<i>]`. When one
process fails, the others are stopped (a process left waiting at a collective would otherwise wait for
the distributed runtime's heartbeat timeout), and the exit status is the first failure's (-9 for a
SIGKILL). Ctrl-C stops them all. Only the standard library is used, so the launcher itself starts at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence, TextIO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch.py")
_NOISE = ("[Gloo] Rank ",)  # one line per collective group from the CPU collectives: no news for anyone


def free_port() -> int:
    """A TCP port nobody listens on now (the coordinator binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(devices_per_process: int, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    flag = f"--xla_force_host_platform_device_count={devices_per_process}"
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), flag) if f)  # the last one wins
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    return env


def process_command(args: Sequence[str], coordinator: str, num_processes: int, process_id: int) -> list[str]:
    return [
        sys.executable,
        LAUNCH,
        *args,
        f"--coordinator_address={coordinator}",
        f"--num_processes={num_processes}",
        f"--process_id={process_id}",
    ]


def _pump(stream, out: TextIO, prefix: str, lines: list) -> None:
    """Copies a child's output line by line (prefixed), keeping a copy for the caller."""
    for line in iter(stream.readline, ""):
        lines.append(line)
        if not line.startswith(_NOISE):
            out.write(prefix + line)
            out.flush()
    stream.close()


def _stop(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM to every process group still running, SIGKILL after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.time() + grace
        while any(p.poll() is None for p in alive) and time.time() < deadline:
            time.sleep(0.05)


def run(
    args: Sequence[str],
    *,
    num_processes: int,
    devices_per_process: int = 1,
    env: dict | None = None,
    timeout: float | None = None,
    port: int | None = None,
    out: TextIO | None = None,
) -> tuple[int, list[str]]:
    """Runs launch.py `args` as `num_processes` local processes; returns (exit status, every process's
    output lines). Every process is stopped before this returns, whatever happens (failure, timeout,
    KeyboardInterrupt). Exit status: 0, the first failure's status, or 124 on timeout."""
    out = out or sys.stdout
    coordinator = f"127.0.0.1:{port or free_port()}"
    child_env = process_env(devices_per_process, env)
    procs: list[subprocess.Popen] = []
    outputs: list[list[str]] = []
    pumps: list[threading.Thread] = []
    status = 0
    try:
        for i in range(num_processes):
            p = subprocess.Popen(
                process_command(args, coordinator, num_processes, i),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=child_env,
                cwd=REPO,
                start_new_session=True,  # its own process group: stopped with everything it started
            )
            procs.append(p)
            outputs.append([])
            t = threading.Thread(target=_pump, args=(p.stdout, out, "" if i == 0 else f"[p{i}] ", outputs[i]))
            t.daemon = True
            t.start()
            pumps.append(t)
        deadline = None if timeout is None else time.time() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                status = failed[0]
                break
            if all(c == 0 for c in codes):
                break
            if deadline is not None and time.time() > deadline:
                status = 124
                out.write(f"launch_local: timed out after {timeout:.0f} s; stopping every process\n")
                break
            time.sleep(0.1)
    finally:
        _stop(procs)
        for t in pumps:
            t.join(timeout=5)
    return status, [line for lines in outputs for line in lines]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        ours, theirs = argv[:split], argv[split + 1 :]
    else:
        ours, theirs = argv, []
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before every process is stopped")
    opts = parser.parse_args(ours)
    if opts.num_processes < 1 or opts.devices_per_process < 1:
        parser.error("--num_processes and --devices_per_process must be >= 1")
    if not theirs:
        parser.error("give launch.py's arguments after '--', e.g. -- --config experiments/grains.py:smoke")
    status, _ = run(
        theirs,
        num_processes=opts.num_processes,
        devices_per_process=opts.devices_per_process,
        timeout=opts.timeout,
        port=opts.port,
    )
    return 0 if status == 0 else (status if status > 0 else 128 - status)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run's finally stops the children
    sys.exit(main())
