"""runtime/interrupts: a Ctrl-C whose KeyboardInterrupt a finaliser swallows is raised again by check()."""

from __future__ import annotations

import signal
import sys
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax.runs import federation
from fedtransfer_jax.runtime import interrupts


@pytest.fixture
def restore_sigint():
    """Python's own SIGINT handler for the test, whatever this process inherited: a suite started in the
    background by a non-interactive shell (`pytest &`) runs with SIGINT ignored, which install() respects."""
    before, hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
    sys.unraisablehook = hook
    interrupts._requested.clear()


class _Finaliser:
    """Receives Ctrl-C while Python runs its __del__: the interpreter reports the KeyboardInterrupt as
    unraisable and carries on, as it does in JAX's finalisers and weakref callbacks."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # this thread: the C handler runs before it returns
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
        signal.raise_signal(signal.SIGINT)  # this thread: the C handler runs before it returns
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


def test_a_swallowed_ctrl_c_prints_no_traceback(restore_sigint, capfd) -> None:
    """The interpreter would print "Exception ignored ... KeyboardInterrupt" for it; after install() it goes
    to the log, and only launch's one line reaches the console."""
    interrupts.install()
    obj = _Finaliser()
    del obj
    err = capfd.readouterr().err
    assert "KeyboardInterrupt" not in err and "Traceback" not in err
    assert interrupts.requested()


def test_other_unraisable_errors_still_reach_the_previous_hook(restore_sigint) -> None:
    seen = []
    sys.unraisablehook = lambda u: seen.append(u.exc_type)
    interrupts.install()

    class Broken:
        def __del__(self):
            raise RuntimeError("not an interrupt")

    obj = Broken()
    del obj
    assert seen == [RuntimeError] and not interrupts.requested()


class _State(NamedTuple):
    server: dict  # params as a tree (orbax saves trees, not a single array)


class _Log:
    def drop(self, keep) -> None:
        del keep

    def write(self, row) -> None:
        del row


def _federation(tmp_path, round_fn, rounds=3):
    return federation.run_federation(
        workdir=str(tmp_path), tag="fedavg", round_fn=round_fn, init_state=_State({"w": jnp.zeros(2)}), data=None,
        rounds=rounds, get_params=lambda server: server, client_names=["a"], log=_Log(), checkpoint_every=100,
    )


def _counting_round(calls, swallow_at=None):
    def round_fn(state, data):
        calls.append(1)
        if len(calls) == swallow_at:
            interrupts._requested.set()  # the handler ran; its KeyboardInterrupt was swallowed
        metrics = {"loss": 0.5, "client_ids": np.array([0]), "survived": np.array([True])}
        return _State({"w": state.server["w"] + 1}), metrics
    return round_fn


def test_the_round_loop_stops_at_the_next_round(restore_sigint, tmp_path) -> None:
    calls = []
    with pytest.raises(KeyboardInterrupt):
        _federation(tmp_path, _counting_round(calls, swallow_at=1))
    assert len(calls) == 1  # round 2 never started


def test_a_ctrl_c_swallowed_in_the_last_round_stops_before_scoring(restore_sigint, tmp_path) -> None:
    calls = []
    with pytest.raises(KeyboardInterrupt):
        _federation(tmp_path, _counting_round(calls, swallow_at=3))
    assert len(calls) == 3
    interrupts._requested.clear()
    calls.clear()
    result = _federation(tmp_path / "again", _counting_round(calls))  # no Ctrl-C: runs to the end
    assert len(calls) == 3 and result.rounds_run == 3
