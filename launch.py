r"""Runs an experiment config: trains every method, evaluates, writes the workdir contract.

  python launch.py --config experiments/grains.py:smoke --workdir /tmp/smoke
  python launch.py --config experiments/grains.py --config.fl.rounds=40 --workdir runs/grains

Overrides (`--config.x=y`) of keys that the config does not define are rejected by ml_collections.
Re-running with the same --workdir resumes every method from its latest checkpoint; a config whose change
would not match the trained models is refused (`--fresh_start` archives the old outputs and starts over).
The console shows progress and results; library logs go to `<workdir>/log.txt` (`--verbosity=0` shows
them too). Errors the user can fix print one line and exit with status 2 (the traceback is in log.txt).
Several processes (multi-controller JAX; README "Several processes"): each process runs this same command
with `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (CPU hosts, any cluster), or with
`--config.distributed=True` alone where jax.distributed.initialize() finds them in the environment (Cloud
TPU pods, SLURM, Open MPI). `python scripts/launch_local.py` starts N local processes.
"""

import os
import re
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


def _clean_message(e: BaseException) -> str:
    """ml_collections/absl wrap messages in quotes and reprs; keep the sentence a person needs."""
    msg = str(e)
    m = re.search(r"'\\?'?(\w+)\\?'?'?\\nDid you mean \"(\w+)\" instead of \"(\w+)\"\?", msg)
    if m:
        return f"unknown config key {m.group(3)!r}: did you mean {m.group(2)!r}?"
    msg = msg.replace("\\n", " ").strip("'\" ")
    return msg


def parse_flags(argv):
    """absl's parser, but a bad flag or config override prints one line instead of a traceback."""
    if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
        from fedtransfer_jax.runtime import console as console_lib  # noqa: PLC0415

        console_lib.quiet_library_logs()  # parsing the config imports jax, which logs its backend probing
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - every parse failure is the user's to fix
        print(f"error: {_clean_message(e)}", file=sys.stderr)
        print("(python launch.py --helpfull lists the flags; the config file lists its keys)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


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
    joined = init_distributed(config)
    if not joined:
        from fedtransfer_jax.runtime import host_devices  # noqa: PLC0415

        try:
            host_devices.configure(_CPU_DEVICES.value)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
    from fedtransfer_jax.runtime import console as console_lib, distributed
    from fedtransfer_jax.runs import report, sweep, train
    from fedtransfer_jax.runtime import workdir as workdir_lib

    workdir = _WORKDIR.value or os.path.join("runs", config.get("name", "experiment"))
    # The one process that writes the workdir and the console (asked only after joining: a single process
    # starts its backend later, after log.txt is set up, as before).
    primary = not joined or distributed.is_primary()
    verbose = flags.FLAGS["verbosity"].present
    log_path = console_lib.setup_logging(workdir, console_verbose=verbose, to_file=primary)
    con = console_lib.Console(enabled=primary and not config.get("quiet", False))
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
        if config.get("seeds", ()):
            study = sweep.run_study(config, workdir, console=con, fresh_start=_FRESH.value)
            con.line()
            con.line(sweep.markdown(study).rstrip())
            con.line(f"\nfull results: {os.path.join(workdir, 'summary.md')}")
            return
        summary = train.train_and_evaluate(config, workdir, console=con, fresh_start=_FRESH.value)
    except user_errors as e:
        logging.info("run failed:\n%s", traceback.format_exc())  # the log file, not the console
        where = f"details in {log_path}" if primary else f"process {distributed.process_index()}"
        print(f"error: {e}\n({where})", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    con.line()
    con.line(report.summary_markdown(summary, per_client=False).rstrip())
    con.line(f"\nfull results: {os.path.join(workdir, 'summary.md')}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
