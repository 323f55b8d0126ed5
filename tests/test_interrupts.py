"""runtime/interrupts: a Ctrl-C whose KeyboardInterrupt a finaliser swallows is raised again by check()."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from fedtransfer_jax.runtime import interrupts


@pytest.fixture
def restore_sigint():
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)
    interrupts._requested.clear()


class _Finaliser:
    """Receives Ctrl-C while Python runs its __del__: the interpreter reports the KeyboardInterrupt as
    unraisable and carries on, as it does in JAX's finalisers and weakref callbacks."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):  # the handler runs (and raises) at one of these bytecode boundaries
            pass


def _swallow_interrupt_in_finaliser(monkeypatch) -> list:
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
    obj = _Finaliser()
    del obj  # no KeyboardInterrupt reaches this frame
    return seen


def test_default_handler_loses_ctrl_c_in_a_finaliser(restore_sigint, monkeypatch) -> None:
    """The failure mode itself, with Python's own handler: the interrupt is gone."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert _swallow_interrupt_in_finaliser(monkeypatch) == [KeyboardInterrupt]
    assert not interrupts.requested()
    interrupts.check()  # nothing remembered: no raise


def test_check_raises_the_swallowed_ctrl_c_again(restore_sigint, monkeypatch) -> None:
    interrupts.install()
    assert not interrupts.requested()
    assert _swallow_interrupt_in_finaliser(monkeypatch) == [KeyboardInterrupt]
    assert interrupts.requested()
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_ctrl_c_still_interrupts_at_once(restore_sigint) -> None:
    interrupts.install()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1_000_000):
            pass
    assert interrupts.requested()


def test_install_leaves_an_ignored_sigint_ignored(restore_sigint) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupts.install()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_install_forgets_an_earlier_request(restore_sigint) -> None:
    interrupts._requested.set()
    interrupts.install()
    interrupts.check()
