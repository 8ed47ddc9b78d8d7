"""Stop signals on a one-process group: a signal is only noted where it arrives, and the ranks
learn of it together at the next check step (every ``SIGNAL_CHECK_EVERY`` steps); before a
rank's first step, one ends its start-up at once."""

from __future__ import annotations

import re
import signal

import pytest

from cohort.dist.stopping import (
    SIGNAL_CHECK_EVERY,
    STOP_SIGNALS,
    Startup,
    StoppedAtStartup,
    StopSignals,
    ignore_stop_signals,
    stopped,
)
from tests.conftest import one_rank


def test_a_signal_is_agreed_on_at_the_next_check_step_and_the_first_one_wins():
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        with one_rank() as mesh:
            stops = StopSignals(mesh)
            stops.install()
            assert all(signal.getsignal(s) == stops.request for s in STOP_SIGNALS)
            assert stops.agreed(SIGNAL_CHECK_EVERY) == 0  # nothing received
            signal.raise_signal(signal.SIGUSR1)
            signal.raise_signal(signal.SIGTERM)  # a later one does not replace the first
            assert stops.received == signal.SIGUSR1
            assert [stops.agreed(step) for step in range(1, SIGNAL_CHECK_EVERY)] == [0] * (SIGNAL_CHECK_EVERY - 1)
            assert stops.agreed(2 * SIGNAL_CHECK_EVERY) == signal.SIGUSR1
            ignore_stop_signals()
            assert all(signal.getsignal(s) == signal.SIG_IGN for s in STOP_SIGNALS)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def test_the_stop_names_the_signal_the_step_and_the_checkpoint():
    stop = stopped(signal.SIGUSR2, 16, "runs/x/checkpoints/step-000000016")
    assert stop.signum == signal.SIGUSR2
    assert str(stop) == (
        "stopped by SIGUSR2 at step 16 after saving runs/x/checkpoints/step-000000016; continue with resume=auto"
    )


def test_a_signal_during_the_start_up_ends_it_at_once_and_the_first_step_hands_over(capsys):
    """``Startup``: before the first step a stop signal raises at once (nothing to save), once;
    after the first step the cohort's agreed stop (``StopSignals``) takes over, and rank 0 says
    how long the start-up took, phase by phase."""
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        startup = Startup()
        startup.install()
        startup.phase("imports")
        with pytest.raises(StoppedAtStartup) as stop:
            signal.raise_signal(signal.SIGUSR2)
        assert stop.value.signum == signal.SIGUSR2 and startup.received == signal.SIGUSR2
        signal.raise_signal(signal.SIGTERM)  # a second one while leaving: not raised again
        assert re.fullmatch(r"[\d.]+ s \(imports [\d.]+ s, checks [\d.]+ s so far\)", startup.describe())

        with one_rank() as mesh:
            startup = Startup()
            startup.install()
            for phase in ("imports", "checks", "rendezvous"):
                startup.phase(phase)
            stops = StopSignals(mesh, startup)
            stops.install()  # the trainer is built: the guard stays until the first step
            assert signal.getsignal(signal.SIGUSR1) == startup.stop_now and "trainer" in startup.phases
            capsys.readouterr()
            assert stops.agreed(1) == 0  # the first step
            assert startup.done and all(signal.getsignal(s) == stops.request for s in STOP_SIGNALS)
            out = capsys.readouterr().out
            assert re.fullmatch(
                r"cohort: started in [\d.]+ s \(imports [\d.]+ s, checks [\d.]+ s, rendezvous [\d.]+ s, "
                r"trainer [\d.]+ s, first step [\d.]+ s\)\n",
                out,
            ), out
            signal.raise_signal(signal.SIGUSR1)  # now noted, and agreed on at the next check step
            assert stops.agreed(SIGNAL_CHECK_EVERY) == signal.SIGUSR1
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def test_a_stop_whose_exception_a_ctypes_callback_swallowed_ends_the_start_up_at_its_next_phase(monkeypatch):
    """numba's compiler calls back into Python through ctypes (llvmlite's object cache); a signal
    handled there raises into a callback whose exception is printed and dropped. The next phase
    of the start-up raises it again (a CI run of the time-limit test lost its warning so)."""
    import ctypes
    import os
    import sys

    lost = []  # what ctypes reports as "Exception ignored on calling ctypes callback function"
    monkeypatch.setattr(sys, "unraisablehook", lost.append)
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        startup = Startup()
        startup.install()

        def compile_step():  # the signal arrives while the callback runs
            os.kill(os.getpid(), signal.SIGUSR2)
            sum(range(10_000))

        ctypes.CFUNCTYPE(None)(compile_step)()
        assert startup.received == signal.SIGUSR2 and isinstance(lost[0].exc_value, StoppedAtStartup)
        with pytest.raises(StoppedAtStartup, match="SIGUSR2"):
            startup.phase("imports")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
