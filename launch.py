r"""Runs an experiment config: trains every method, evaluates, writes the workdir contract.

  python launch.py --config experiments/grains.py:smoke --workdir /tmp/smoke
  python launch.py --config experiments/grains.py --config.fl.rounds=40 --workdir runs/grains

Overrides (`--config.x=y`) of keys that the config does not define are rejected by ml_collections.
Re-running with the same --workdir resumes every method from its latest checkpoint; a config whose change
would not match the trained models is refused (`--fresh_start` archives the old outputs and starts over).
The console shows progress and results; library logs go to `<workdir>/log.txt` (`--verbosity=0` shows
them too). Errors the user can fix (a config key, file or variant, a workdir that is a file or not
writable, a full disk, running out of memory) print one line naming what to change and exit with status
2 (the traceback is in log.txt); Ctrl-C prints where the run stopped and exits with 130 (rerun the same
command to resume); any other failure prints its first line and where its traceback went, status 1.
Fault injection for tests: FEDTRANSFER_CRASH_AT / FEDTRANSFER_FAIL_AT (fedtransfer_jax/runtime/faults.py).
Several processes (multi-controller JAX; README "Several processes"): each process runs this same command
with `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (CPU hosts, any cluster), or with
`--config.distributed=True` alone where jax.distributed.initialize() finds them in the environment (Cloud
TPU pods, SLURM, Open MPI). `python scripts/launch_local.py` starts N local processes.
"""

import difflib
import errno
import logging as std_logging
import os
import re
import signal
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path[:variant]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<config.name>).")
_FRESH = flags.DEFINE_bool(
    "fresh_start", False, "Move the workdir's previous outputs to <workdir>/archive/<time>/ and start over."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Several processes: HOST:PORT of process 0's coordinator (jax.distributed)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Several processes: how many in all.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Several processes: this one's id, 0 .. N-1.")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices",
    "auto",
    "One process on a CPU host: split it into this many XLA:CPU devices ('auto' = one per usable core, or "
    "$FEDTRANSFER_CPU_DEVICES), so the round runs the clients of each device side by side (fedtransfer_jax/"
    "host_devices.py). '1' = one device. Ignored with several processes or when XLA_FLAGS sets a count.",
)
flags.mark_flags_as_required(["config"])

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _clean_message(e: BaseException, argv) -> str:
    """ml_collections/absl wrap messages in quotes and reprs; keep the sentence a person needs (an unknown
    config key names the override in ``argv`` to correct)."""
    msg = str(e)
    m = re.match(r"flag --config=(\S+): Error whilst parsing config file", msg)
    if m:  # get_config raised (e.g. an unknown variant): its own message, the last line of the traceback
        last = [line for line in msg.splitlines() if line.strip()][-1]
        last = re.sub(r"^\w+(Error|Exception): ", "", last.strip())
        last = re.sub(r"^\S+\.py: ", "", last)  # the config file names itself; --config names it already
        return f"--config {m.group(1)}: {last}"
    m = re.search(r"'\\?'?(\w+)\\?'?'?\\nDid you mean \"(\w+)\" instead of \"(\w+)\"\?", msg)
    if m:
        return _unknown_key(argv, m.group(3)) + f": did you mean {m.group(2)!r}?"
    msg = msg.replace("\\n", " ").strip("'\" ")
    if re.fullmatch(r"\w+", msg):  # ml_collections' KeyError for a key with no close match: just the name
        return _unknown_key(argv, msg)
    return msg


def _unknown_key(argv, key: str) -> str:
    """"--config.a.b: unknown config key 'b'", naming the override in argv whose dotted path holds ``key``
    (the one to correct), or without it when none does."""
    for a in argv[1:]:
        m = re.match(r"--?(config(?:\.\w+)+)", a)
        if m and key in m.group(1).split(".")[1:]:
            return f"--{m.group(1)}: unknown config key {key!r}"
    return f"unknown config key {key!r}"


def _config_arg(argv) -> str | None:
    """The value of --config in argv (`--config X` or `--config=X`), or None."""
    for i, a in enumerate(argv[1:], 1):
        if a in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(("--config=", "-config=")):
            return a.split("=", 1)[1]
    return None


def check_config_file(value: str | None) -> str | None:
    """One line when the --config file does not exist (ml_collections would defer the error to a
    traceback at the first use of the config), naming the closest config file; None when it exists."""
    if not value:
        return None
    path = value.split(":", 1)[0]
    if os.path.isfile(path):
        return None
    folder = os.path.dirname(path) or "."
    there = (
        sorted(f for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
        if os.path.isdir(folder)
        else []
    )
    close = difflib.get_close_matches(os.path.basename(path), there, n=1)
    hint = f"did you mean {os.path.join(os.path.dirname(path), close[0])}? " if close else ""
    listed = f"config files in {folder}: {', '.join(there)}" if there else f"{folder} is not a folder"
    return f"--config {value}: no such file ({hint}{listed})"


def parse_flags(argv):
    """absl's parser, but a bad flag or config override prints one line instead of a traceback."""
    from fedtransfer_jax.runtime import console as console_lib  # noqa: PLC0415

    if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
        console_lib.quiet_library_logs()  # parsing the config imports jax, which logs its backend probing
    missing = check_config_file(_config_arg(argv))
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    try:
        rest = flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - every parse failure is the user's to fix
        msg = _clean_message(e, argv)
        print(f"error: {msg}", file=sys.stderr)
        if not msg.startswith("--config "):  # a config file's own error names what to change
            print(
                "(python launch.py --helpfull lists the flags; the config file lists its keys)", file=sys.stderr
            )
        sys.exit(EXIT_USER_ERROR)
    empty = console_lib.check_path_flags(flags.FLAGS)
    if empty:
        print(f"error: {empty}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if rest[1:]:  # absl would drop them silently: a typo'd override must not run the default config
        print(f"error: unexpected argument(s) {' '.join(rest[1:4])}: every setting is a flag "
              "(--config.<key>=value)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    return rest


def _causes(e: BaseException):
    """`e` and the exceptions it was raised from or during (each once)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def disk_full(e: BaseException, workdir: str) -> str | None:
    """The file being written when the disk (or quota) filled up, or None when `e` is something else.
    Our writers name the file (io_utils); checkpoint writers (tensorstore) only say it in words."""
    for c in _causes(e):
        if isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT):
            return str(c.filename) if c.filename else workdir
        if "No space left on device" in str(c) or "Disk quota exceeded" in str(c):
            return workdir
    return None


def out_of_memory(e: BaseException) -> str | None:
    """XLA's first line when `e` is running out of (device) memory, else None."""
    for c in _causes(e):
        text = str(c)
        if isinstance(c, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            return (text.strip().splitlines() or [type(c).__name__])[0][:160]
    return None


def init_distributed(config) -> bool:
    """Joins the other processes (jax.distributed) when flags name them or the config asks; with neither,
    the run is one process. Must come before any JAX computation (parsing the config computes nothing).
    Returns whether it joined."""
    given = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if not (any(v is not None for v in given) or config.get("distributed", False)):
        return False
    from fedtransfer_jax.runtime import distributed  # noqa: PLC0415

    distributed.initialize(*given)  # the values not given come from the cluster environment
    return True


def main(argv):
    del argv
    config = _CONFIG.value
    from fedtransfer_jax.runtime import host_devices  # noqa: PLC0415

    host_devices.patient_collectives()  # before JAX starts its backends (jax.distributed's too)
    joined = init_distributed(config)
    if not joined:
        try:
            host_devices.configure(_CPU_DEVICES.value)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
    from fedtransfer_jax.runtime import console as console_lib, distributed, interrupts
    from fedtransfer_jax.runs import engine, federation, inference, report, sweep, train
    from fedtransfer_jax.runtime import workdir as workdir_lib

    # `config.runner = "population"` (experiments/many_clients.py): host-sampled rounds over a simulated
    # population of many clients (runs/population_training.py) instead of the labs' trainer.
    population_runner = config.get("runner", "") == "population"
    if population_runner:
        from fedtransfer_jax.runs import population_training  # noqa: PLC0415
    workdir = _WORKDIR.value or os.path.join("runs", config.get("name", "experiment"))
    # The one process that writes the workdir and the console (asked only after joining: a single process
    # starts its backend later, after log.txt is set up, as before).
    primary = not joined or distributed.is_primary()
    try:
        # Before anything is written: a refused config or an unusable workdir leaves no folder behind.
        if population_runner:
            population_training.validate_config(config)
        else:
            engine.validate_config(config)
            engine.check_data_folder(config)
            inference.check_init_from(config)
        if joined:  # process 0 checks; the others hear its refusal instead of waiting for it
            distributed.on_primary(lambda: workdir_lib.ensure_workdir(workdir))
        else:  # (asking JAX how many processes there are would start its backend before log.txt)
            workdir_lib.ensure_workdir(workdir)
        verbose = flags.FLAGS["verbosity"].present
        log_path = console_lib.setup_logging(workdir, console_verbose=verbose, to_file=primary)
    except (ValueError, OSError, workdir_lib.WorkdirError, distributed.PrimaryError) as e:
        if isinstance(e, OSError) and not isinstance(e, workdir_lib.WorkdirError):
            e = f"--workdir {workdir}: cannot write {e.filename or workdir} ({e.strerror or e})"
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    interrupts.install()  # Ctrl-C: the round loops re-raise one a finaliser swallowed
    quiet = config.get("quiet", False)
    con = console_lib.Console(enabled=primary and not quiet)
    note = f"log: {log_path}" + (f", {distributed.process_count()} processes" if joined else "")
    con.line(f"fedtransfer_jax: {config.get('name', 'experiment')} -> {workdir}  ({note})")
    user_errors = (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
        FloatingPointError,
        workdir_lib.WorkdirError,
        distributed.PrimaryError,
    )
    try:
        if population_runner:
            study = population_training.run_study(config, workdir, console=con, fresh_start=_FRESH.value)
            con.line()
            con.line(population_training.markdown(study).rstrip())
            con.line(f"\nfull results: {os.path.join(workdir, 'summary.md')}")
            summary = None
        elif config.get("seeds", ()):
            study = sweep.run_study(config, workdir, console=con, fresh_start=_FRESH.value)
            con.line()
            con.line(sweep.markdown(study).rstrip())
            con.line(f"\nfull results: {os.path.join(workdir, 'summary.md')}")
            summary = None
        else:
            summary = train.train_and_evaluate(config, workdir, console=con, fresh_start=_FRESH.value)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting: no traceback either
        logging.info("interrupted:\n%s", traceback.format_exc())
        if primary:
            print(
                f"interrupted at {federation.position_text()}; rerun the same command to resume",
                file=sys.stderr,
            )
        # An interrupt that lands inside an asynchronous checkpoint save leaves orbax's coroutines unawaited,
        # and interpreter teardown then prints asyncio warnings and a traceback from an event loop's __del__
        # (seen under load). The one line above is the message; the interrupt's traceback is in the log.
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - every failure gets its one line; the traceback goes to the log
        where = f"details in {log_path}" if primary else f"process {distributed.process_index()}"
        full = disk_full(e, workdir)
        if full is not None:
            std_logging.raiseExceptions = False  # the log file may not take the traceback either: no noise
            logging.info("run failed:\n%s", traceback.format_exc())
            print(
                f"error: disk full while writing {full}; free space and rerun the same command to resume",
                file=sys.stderr,
            )
            sys.exit(EXIT_USER_ERROR)
        oom = out_of_memory(e)
        if oom is not None:
            logging.info("run failed:\n%s", traceback.format_exc())
            print(
                f"error: out of memory while training ({oom}): lower --config.fl.batch_size (now "
                f"{config.fl.batch_size}) or --config.fl.clients_per_round, or train one client at a time "
                f"with --config.fl.strategy=sequential (now {config.fl.strategy!r}); {where}",
                file=sys.stderr,
            )
            sys.exit(EXIT_USER_ERROR)
        if isinstance(e, user_errors):
            logging.info("run failed:\n%s", traceback.format_exc())  # the log file, not the console
            sep = "\n" if "\n" in str(e) else " "  # one line unless the message is a list (config diffs)
            print(f"error: {e}{sep}({where})", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        if not primary:
            raise
        logging.info("run failed (unexpected):\n%s", traceback.format_exc())  # INFO: the file only
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(
            f"error: {type(e).__name__}: {first}\n(an unexpected failure: the traceback is in {log_path})",
            file=sys.stderr,
        )
        sys.exit(1)
    if quiet and primary:  # quiet configs (`:tiny`): one line saying where the results are
        results = os.path.join(workdir, "summary.md")
        print(f"fedtransfer_jax: {config.get('name', 'experiment')} done; results in {results}", file=sys.stderr)
        return
    if summary is None:
        return
    con.line()
    con.line(report.summary_markdown(summary, per_client=False).rstrip())
    con.line(f"\nfull results: {os.path.join(workdir, 'summary.md')}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
