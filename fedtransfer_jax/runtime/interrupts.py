"""Ctrl-C that cannot be lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be executing
Python code. When that is a finaliser (`__del__`, a weakref callback: JAX's caches and arrays run many),
the interpreter reports the exception as "ignored" and carries on, and training would run on after Ctrl-C
(tests/test_interrupts.py shows it with Python's own handler). `install()` keeps Python's behaviour and
also remembers the request, and the training loops call `check()` once per round (and after each method),
which raises the KeyboardInterrupt again if the first one was swallowed. The swallowed one goes to the log,
not to the console as an "Exception ignored" traceback (`sys.unraisablehook`). A second Ctrl-C still
interrupts at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

_requested = threading.Event()
_previous_hook = None  # the unraisable hook install() replaced


def _unraisable(unraisable) -> None:
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        _requested.set()
        logging.getLogger(__name__).info(
            "Ctrl-C arrived inside %r, which swallowed it; the run stops at its next check", unraisable.object
        )
        return
    (_previous_hook or sys.__unraisablehook__)(unraisable)


def _on_sigint(signum, frame) -> None:
    del signum, frame
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Routes SIGINT through the remembering handler (main thread only, as `signal.signal` requires).
    Leaves an inherited SIG_IGN alone, as Python does: a non-interactive shell starts background jobs
    (`cmd &`) with SIGINT ignored, so that a Ctrl-C in the terminal does not reach them."""
    global _previous_hook
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return
    signal.signal(signal.SIGINT, _on_sigint)
    if sys.unraisablehook is not _unraisable:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _unraisable


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Raises KeyboardInterrupt if Ctrl-C was pressed since `install()` (its first raise may have been lost)."""
    if _requested.is_set():
        raise KeyboardInterrupt
