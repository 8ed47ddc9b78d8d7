"""The ``cohort`` command's own handling of an interruption, through a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.conftest import REPO, signal_while_reading


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
    out, err = signal_while_reading(cli, fifo, signal.SIGINT)
    assert cli.returncode == 130, err[-2000:]
    assert err == "cohort: interrupted (Ctrl-C) during `cohort train`; no run started\n", err[-2000:]
