"""What a person sees while a run goes: one progress display per federation (round, loss, ETA), a one-line
result per method and the final table. Library logs (orbax, tfds, absl INFO) go to `<workdir>/log.txt`
(`setup_logging`); `--verbosity=0` (or higher) shows them on the console too.
"""

from __future__ import annotations

import contextlib
import io
import logging as std_logging
import os
import sys
import time
from typing import Any, TextIO

from absl import logging

_FILE_HANDLER_NAME = "fedtransfer_jax.log_file"


def setup_logging(workdir: str, *, console_verbose: bool, to_file: bool = True) -> str | None:
    """Sends every library log record (INFO and up) to `<workdir>/log.txt`; the console keeps only
    warnings and errors unless `console_verbose`. Returns the log file's path (None when `to_file` is
    False: the processes other than 0 of a multi-process run, which would write the same lines)."""
    root = std_logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "name", "") == _FILE_HANDLER_NAME:
            root.removeHandler(h)
    path = None
    if to_file:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "log.txt")
        handler = std_logging.FileHandler(path, mode="a")
        handler.set_name(_FILE_HANDLER_NAME)
        handler.setLevel(std_logging.INFO)
        handler.setFormatter(
            std_logging.Formatter("%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d: %(message)s")
        )
        root.addHandler(handler)
    root.setLevel(std_logging.INFO)
    logging.set_verbosity(logging.INFO)  # records reach the file handler ...
    absl_handler = logging.get_absl_handler()
    for f in list(absl_handler.filters):
        if isinstance(f, _ConsoleFilter):
            absl_handler.removeFilter(f)
    if not console_verbose:  # ... and the console only what a person must see, as a sentence
        absl_handler.addFilter(_ConsoleFilter())
        absl_handler.setFormatter(_ConsoleFormatter())
    else:  # absl's own prefix (time, thread, file:line) for whoever asked for the details
        absl_handler.setFormatter(logging.PythonFormatter())
    for name in ("absl", "orbax", "jax", "tensorflow_datasets"):
        std_logging.getLogger(name).setLevel(std_logging.INFO)
    return path


class _ConsoleFilter(std_logging.Filter):
    """Console: our own warnings and everyone's errors; library INFO/WARNING chatter (tfds's 'Using custom
    data configuration', orbax's per-checkpoint lines, jax's backend probing) stays in log.txt."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.ERROR:
            return True
        return record.levelno >= std_logging.WARNING and f"{os.sep}fedtransfer_jax{os.sep}" in record.pathname


class _ConsoleFormatter(std_logging.Formatter):
    """'warning: <message>' on the console; the time and source line are in log.txt (and on the console
    with --verbosity, absl's full prefix)."""

    def format(self, record: std_logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:  # a library's error with its traceback keeps it
            text += "\n" + self.formatException(record.exc_info)
        return text


class LogStream(io.TextIOBase):
    """A text stream that forwards lines to the log (for libraries that print, e.g. tfds's
    'Downloading and preparing dataset ...')."""

    def write(self, s: str) -> int:
        for line in s.splitlines():
            if line.strip():
                logging.info("%s", line.rstrip())
        return len(s)


@contextlib.contextmanager
def prints_to_log():
    with contextlib.redirect_stdout(LogStream()):
        yield


class Progress:
    """One line that updates in place on a terminal; nothing per round when the output is a file/pipe."""

    def __init__(self, stream: TextIO, tag: str, total: int, live: bool):
        self.stream, self.tag, self.total, self.live = stream, tag, total, live
        self.t0 = time.time()
        self.first = None
        self.done = 0

    def update(self, r: int, total: int, loss: float) -> None:
        if self.first is None:
            self.first = r - 1  # rounds restored from a checkpoint are not timed
        self.done = r
        if not self.live:
            return
        elapsed = time.time() - self.t0
        ran = r - self.first
        eta = elapsed / ran * (total - r) if ran else 0.0
        self.stream.write(f"\r  {self.tag}: round {r}/{total}  loss {loss:.4f}  ETA {eta:4.0f}s   ")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self.done:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def _resumed_note(resumed) -> str:
    """', resumed at round r' (for `local`: the clients' rounds) or '' for a fresh start."""
    if isinstance(resumed, dict):
        rounds = sorted({int(v) for v in resumed.values() if v})
        return f", resumed at round {'/'.join(map(str, rounds))}" if rounds else ""
    return f", resumed at round {resumed}" if resumed else ""


def tolerant_streams() -> None:
    """stdout/stderr print what they cannot encode (a non-UTF-8 file name) as escapes instead of raising
    UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # not a TextIOWrapper (pytest capture...)
            stream.reconfigure(errors="backslashreplace")


def quiet_library_logs() -> None:
    """Before anything logs (config parsing imports jax/optax): library INFO stays off the console."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _ConsoleFilter) for f in handler.filters):
        handler.addFilter(_ConsoleFilter())


def quiet_inference_logs() -> None:
    """For the inference CLIs (predict, evaluate, calibrate), whose own messages name every bad file: a
    damaged checkpoint makes orbax's background reads end in unretrieved asyncio task errors (hundreds of
    lines of TensorStore specs after the one clear message), and tifffile warns about every broken TIFF
    it is asked to read. Both stay off the console."""
    import logging as std_logging  # noqa: PLC0415

    std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
    std_logging.getLogger("tifffile").setLevel(std_logging.ERROR)


class Console:
    """The run's console. `enabled=False` prints nothing (tests, library use)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and (self.stream.isatty() if live is None else live)

    def line(self, text: str = "") -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def progress(self, tag: str, total: int) -> Progress:
        return Progress(self.stream, tag, total, self.live)

    def method_done(self, name: str, result: dict[str, Any]) -> None:
        m = result["mean"]
        unseen = result.get("unseen", {}).get("mean")
        text = (
            f"{name:>20}: F1 {m['boundary_f1']:.3f}  ARI {m['ari']:.3f}  VI {m['vi']:.2f}"
            + (f"  | unseen ARI {unseen['ari']:.3f}" if unseen else "")
            + f"  ({result['wall_seconds']:.0f} s"
            + _resumed_note(result.get("resumed_from_round"))
            + ")"
        )
        self.line(text)


# Flags that name a file or folder, in every CLI of the package (predict, evaluate, calibrate, export_model,
# launch.py).
PATH_FLAGS = ("images", "out", "workdir", "dest", "data_dir")


def check_path_flags(flag_values) -> str | None:
    """After parsing: a message naming the first path flag given empty (``--out=``: the current folder would
    silently take every output), else None. A leading ``~`` is expanded as a shell would have: in
    ``--out=~/x`` no shell does, and a folder literally named ``~`` would be made."""
    for name in PATH_FLAGS:
        if name not in flag_values or not flag_values[name].present:
            continue
        value = flag_values[name].value
        if value is None:
            continue
        if not str(value).strip():
            wants = (flag_values[name].help or "").strip().rstrip(".")
            wants = "" if wants == "(no help available)" else wants  # absl's stand-in for no help
            if not wants:
                return f"--{name} is empty: give a file or folder path"
            has_default = flag_values[name].default or "default" in wants.lower()  # launch's --workdir: help only
            default = "; leave the flag out for the default" if has_default else ""
            return f"--{name} is empty; it takes: {wants}{default}"
        if str(value).startswith("~"):
            flag_values[name].value = os.path.expanduser(value)
    return None
