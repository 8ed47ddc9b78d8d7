"""How a rank's end is reported (``cohort.train.worker``), in-process on a real TCPStore: a peer
that failed with an error of its own is named with that error, not as a lost peer."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch.distributed as dist

from cohort.config import load_config
from cohort.dist.mesh import Launch, _free_port
from cohort.dist.node import Node
from cohort.dist.stopping import Startup
from cohort.train.worker import (
    LEFT_AT_STARTUP_KEY,
    WorkerExit,
    left_at_startup,
    lost_peers_message,
    stopped_at_startup,
    tell_peers,
    tell_peers_of_failure,
)
from tests.conftest import REPO, signal_while_reading, tiny_config


@pytest.fixture
def store():
    port = _free_port()
    return dist.PrefixStore(
        "cohort/attempt-0",
        dist.TCPStore("127.0.0.1", port, 1, is_master=True, timeout=datetime.timedelta(seconds=10)),
    )


def rank_of(rank: int, world: int = 4) -> Launch:
    return Launch("torchrun", rank, world, rank, world, "127.0.0.1", 0)


def test_a_peer_that_failed_with_an_error_is_named_with_it(store, tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, members=2), ["replicas=2"])
    tell_peers_of_failure(store, 3, ValueError("the trace folder is a file\nsecond line"))
    message = lost_peers_message(store, rank_of(0), config, step=7)
    assert message == (
        "member 0 (rank 0) stopped at step 7: member 1 (rank 3) failed with an error (ValueError: the trace "
        "folder is a file), printed in full above; fix that, then continue with resume=auto"
    )


def test_without_a_failure_record_the_silent_members_are_named(store, tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, members=2))
    store.set("cohort/alive/1", "7")  # rank 1 answers; ranks 2 and 3 (of a 4-rank cohort) never do
    message = lost_peers_message(store, rank_of(0), config, step=7)
    assert message.startswith("member 0 (rank 0) lost the cohort at step 7: member(s) 2, 3 stopped answering")
    assert message.endswith("continue with resume=auto")


def test_the_silent_ranks_nodes_are_named_and_a_node_silent_whole_as_such(store, tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, members=2), ["replicas=2"])
    nodes = [Node(0, "a")] * 2 + [Node(1, "b")] * 2
    store.set("cohort/alive/1", "7")  # rank 1, on rank 0's node, answers; node 1's ranks never do
    message = lost_peers_message(store, rank_of(0), config, step=7, nodes=nodes)
    assert message == (
        "member 0 (rank 0) lost the cohort at step 7 on node 0 (a): member(s) 1 stopped answering (all of node 1 "
        "(b), ranks 2-3) (dead, or stalled longer than train.dist_timeout_s=120s); continue with resume=auto"
    )
    tell_peers_of_failure(store, 3, ValueError("the trace folder is a file"))
    message = lost_peers_message(store, rank_of(0), config, step=7, nodes=nodes)
    assert message.startswith(
        "member 0 (rank 0) stopped at step 7 on node 0 (a): member 1 (rank 3 on node 1 (b)) failed with an error"
    )


def test_a_rank_whose_store_went_down_with_its_node_names_the_stores_address(tmp_path, digits_root):
    """The store's server in a child process, SIGKILLed as a lost head node would take it."""
    config = load_config(tiny_config(tmp_path, digits_root, members=2), ["replicas=2"])
    port = _free_port()
    code = (
        "import datetime, sys, time, torch.distributed as dist; "
        f"s = dist.TCPStore('127.0.0.1', {port}, None, is_master=True, wait_for_workers=False); "
        "print('serving', flush=True); time.sleep(600)"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "serving"
        client = dist.TCPStore("127.0.0.1", port, None, is_master=False, timeout=datetime.timedelta(seconds=10))
        client.set("cohort/alive/0", "7")
    finally:
        server.kill()
        server.wait()
    nodes = [Node(0, "a")] * 2 + [Node(1, "b")] * 2
    launch = Launch("torchrun", 2, 4, 0, 2, "127.0.0.1", port)
    assert lost_peers_message(client, launch, config, step=7, nodes=nodes) == (
        f"member 1 (rank 2) lost the cohort at step 7 on node 1 (b): the rendezvous store at 127.0.0.1:{port} is "
        "gone, likely with the node serving it (dead, or stalled longer than train.dist_timeout_s=120s); continue "
        "with resume=auto"
    )


# --- a stop signal before the first step (cohort.dist.stopping.Startup) ----------------------


def test_a_worker_signalled_during_its_start_up_leaves_at_once_naming_its_phases(tmp_path):
    """``python -m cohort.train`` alone (a single launch) whose config is a FIFO: reading it
    blocks until this test writes, so SIGUSR2 (submitit's time-limit warning) lands in the
    start-up's checks for certain. Before the guard, the default action killed the process
    with no word (-12); under submitit, a rank other than 0 went on starting up."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    worker = subprocess.Popen(
        [sys.executable, "-m", "cohort.train", str(fifo)],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = signal_while_reading(worker, fifo, signal.SIGUSR2)
    assert worker.returncode == 0, err[-2000:]
    assert re.fullmatch(
        r"cohort: stopped by SIGUSR2 during start-up, [\d.]+ s \(imports [\d.]+ s, checks [\d.]+ s so far\), before "
        r"the first step: nothing new to save; continue with resume=auto\n",
        out,
    ), out
    assert err == "", err[-2000:]


def test_a_time_limit_that_stops_three_start_ups_in_a_row_stops_the_job(tmp_path, digits_root, capfd):
    """Rank 0's count (``cohort.run.attempts``): each time-limit warning before the first step is
    one more stalled attempt since the newest checkpoint; a new checkpoint starts it again; the
    third in a row is one line and exit 1 (no requeue), naming the start-up it measured."""
    from cohort.run import checkpoint_files
    from cohort.run.directory import RunDir

    config = load_config(tiny_config(tmp_path, digits_root))
    run = RunDir(config.run_dir)
    run.create(config)
    startup = Startup()
    startup.phase("imports")

    def stop(signum=signal.SIGUSR2, rank=0):
        capfd.readouterr()
        outcome = stopped_at_startup(signum, rank_of(rank), config, startup)
        return outcome, capfd.readouterr()

    assert stop()[0] == WorkerExit(0, signal.SIGUSR2)  # requeued: submitit's handler is called next
    assert stop(rank=1)[0] == WorkerExit(0, signal.SIGUSR2) and stop(signal.SIGTERM)[0].exit_code == 0
    assert json.loads(run.stalled_file.read_text())["stalled"] == 1  # rank 1 and SIGTERM (preemption) not counted
    newer = checkpoint_files.checkpoint_dir(run.path, 7)
    newer.mkdir()
    checkpoint_files.mark_complete(newer, 0, {"epoch": 0, "batch": 3, "step": 7})
    for count in (1, 2):  # progress since: counted from 1 again
        outcome, printed = stop()
        assert outcome == WorkerExit(0, signal.SIGUSR2) and "stopped by SIGUSR2 during start-up" in printed.out
        assert json.loads(run.stalled_file.read_text()) == {
            "checkpoint_step": 7,
            "stalled": count,
            "signal": "SIGUSR2",
            "startup": json.loads(run.stalled_file.read_text())["startup"],
        }
    outcome, printed = stop()
    assert outcome == WorkerExit(1) and printed.out == ""
    lines = printed.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "cohort: error: 3 attempts in a row were stopped by SIGUSR2, the warning before the job's time limit, "
        "before their first step, with no checkpoint in between"
    )
    assert "this start-up took " in lines[0] and "(imports " in lines[0] and "raise the time limit" in lines[0]


def test_a_peer_that_left_its_start_up_on_a_signal_is_not_reported_lost(store):
    """A rank signalled before its first step records that it left (``LEFT_AT_STARTUP_KEY``);
    its peers already training, signalled too, whose next collective fails, then stop as it did
    (``stopped_at_startup``) instead of naming it lost or failed."""
    assert not left_at_startup(store, 4)
    tell_peers(store, LEFT_AT_STARTUP_KEY.format(rank=3), "1")
    assert left_at_startup(store, 4)
