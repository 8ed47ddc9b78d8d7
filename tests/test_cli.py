"""The ``cohort`` command's own handling of an interruption, through a real process."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO


def test_ctrl_c_while_the_config_is_read_is_one_line_and_exit_130(tmp_path):
    # A FIFO as the config: reading it blocks until this test writes, so the Ctrl-C lands
    # inside load_config for certain.
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    cli = subprocess.Popen(
        [sys.executable, "-m", "cohort.cli", "train", str(fifo)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background of a non-interactive shell (nohup, `&`) inherits
        # SIGINT ignored, and Python then keeps ignoring it; a terminal's Ctrl-C is never ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while True:  # a writer can open the FIFO only once the command opened it to read
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:
            assert error.errno == errno.ENXIO and time.monotonic() < deadline and cli.poll() is None
            time.sleep(0.05)
    try:
        time.sleep(0.2)  # into its read(), which waits for the config's text
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=60)
    finally:
        os.close(writer)
    assert cli.returncode == 130, err[-2000:]
    assert err == "cohort: interrupted (Ctrl-C) during `cohort train`; no run started\n", err[-2000:]
