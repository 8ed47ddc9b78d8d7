"""Stop signals on a one-process group: a signal is only noted where it arrives, and the ranks
learn of it together at the next check step (every ``SIGNAL_CHECK_EVERY`` steps)."""

from __future__ import annotations

import signal

from cohort.dist.stopping import SIGNAL_CHECK_EVERY, STOP_SIGNALS, StopSignals, ignore_stop_signals, stopped
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
