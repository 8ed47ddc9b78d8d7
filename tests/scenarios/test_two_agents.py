"""Cohorts on two nodes for real: two torchrun agents on this machine, meeting through a c10d
rendezvous on loopback, are two nodes to every code path but the network's
(``/work/shared/design.md`` §1): each starts half the ranks, so LOCAL_RANK != RANK and
LOCAL_WORLD_SIZE < WORLD_SIZE on the second.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from cohort.run.status import run_status
from tests.conftest import REPO, run_torchrun, tiny_config
from tests.scenarios.test_fault_tolerance import trace_steps, wait_for

# A K = 2, R = 2 cohort: member-major, so each node holds one member's two replicas and the
# logit exchange goes between the nodes. Checkpoints every 3 steps, for the node-loss test.
NODE_TRAIN = {"epochs": 2, "max_steps_per_epoch": 8, "trace": True, "checkpoint_every_steps": 3, "keep_last": 0}
NODE_TRAIN["dist_timeout_s"] = 30
HOST = socket.gethostname()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_agents(config: Path, logs: Path, *overrides: str) -> list[subprocess.Popen]:
    """Two torchrun agents of two ranks each, as on two nodes (``docs/distributed.md``): a c10d
    rendezvous whose store the first agent serves (``is_host``; on one machine both would claim
    the loopback endpoint). torchrun gives their node ranks itself; they log to the folder ``logs``."""
    logs.mkdir()
    port = free_port()
    agents = []
    for agent in range(2):
        command = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2"),
            *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"test-{port}"),
            *("--rdzv-conf", f"is_host={'true' if agent == 0 else 'false'},join_timeout=120"),
            *("--max-restarts", "0", "--monitor-interval", "0.5"),
            *("-m", "cohort.train", str(config), *overrides),
        ]
        log = (logs / f"agent{agent}.log").open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        agents.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    return agents


def finish(agents: list[subprocess.Popen], logs: Path) -> list[str]:
    """Wait for the agents (a hang fails the test); their logs."""
    try:
        for agent in agents:
            agent.wait(timeout=600)
    finally:
        for agent in agents:
            if agent.poll() is None:
                kill_node(agent)
    return [(logs / f"agent{i}.log").read_text() for i in range(len(agents))]


def ranks_of(agent: subprocess.Popen) -> list[int]:
    """The global ranks of an agent's workers (``python -m cohort.train``), once both started."""
    found: list[int] = []

    def started():
        found[:] = []
        for child in psutil.Process(agent.pid).children(recursive=True):
            try:
                if "cohort.train" in " ".join(child.cmdline()) and "RANK" in child.environ():
                    found.append(int(child.environ()["RANK"]))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return len(found) == 2

    wait_for(started, 120, "the agent's 2 workers")
    return sorted(found)


def kill_node(agent: subprocess.Popen) -> None:
    """SIGKILL an agent and its workers at once, as a node that loses power: torchrun starts
    each worker in a session of its own, so the agent's process group alone would leave them
    (and they would save on the SIGTERM their parent's death sends them, ``cohort.train.worker``)."""
    processes = [psutil.Process(agent.pid), *psutil.Process(agent.pid).children(recursive=True)]
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    agent.wait(timeout=60)


@pytest.fixture(scope="module")
def one_node(digits_root, tmp_path_factory):
    """The K = 2, R = 2 cohort of four ranks under one torchrun agent, and its test logits."""
    tmp = tmp_path_factory.mktemp("one_node")
    config = tiny_config(tmp, digits_root, members=2, replicas=2, train=NODE_TRAIN)
    result = run_torchrun(4, str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    return config, np.load(tmp / "run" / "predictions" / "test.npz")["logits"]


@pytest.mark.multiprocess
def test_two_agents_of_two_ranks_train_the_one_agent_cohort_bit_identically(one_node, tmp_path):
    config, reference = one_node
    run = tmp_path / "run"
    logs = finish(start_two_agents(config, tmp_path / "logs", f"run_dir={run}"), tmp_path / "logs")
    for log in logs:
        assert "cohort: error" not in log and "ChildFailedError" not in log, log[-3000:]
    said = f"cohort: ranks on 2 nodes: node 0 ({HOST}): ranks 0-1 (member 0); node 1 ({HOST}): ranks 2-3 (member 1)"
    assert sum(said in log for log in logs) == 1, logs  # rank 0 says it, on its node
    assert np.array_equal(np.load(run / "predictions" / "test.npz")["logits"], reference)
    assert (
        f"nodes: node 0 ({HOST}): ranks 0-1 (member 0); node 1 ({HOST}): ranks 2-3 (member 1)"
        in run_status(run).splitlines()
    )


@pytest.mark.multiprocess
def test_a_lost_node_stops_the_other_naming_it_and_resume_ends_bit_identical(one_node, tmp_path):
    config, reference = one_node
    run = tmp_path / "run"
    kill_after = random.Random().randint(4, 13)  # mid-epoch 0 or 1, after the first checkpoint (step 3)
    agents = start_two_agents(config, tmp_path / "killed", f"run_dir={run}", "resume=auto")
    lost_ranks = ranks_of(agents[1])  # the agent that does not serve the store, whichever node rank it got
    wait_for(lambda: trace_steps(run, 1) >= kill_after, 300, f"{kill_after} steps")
    kill_node(agents[1])
    survivor = finish(agents[:1], tmp_path / "killed")[0]
    assert agents[0].returncode != 0, survivor[-3000:]
    lost_node, lost_member = lost_ranks[0] // 2, lost_ranks[0] // 2  # two ranks a node, two replicas a member
    errors = [line for line in survivor.splitlines() if line.startswith("cohort: error:")]
    host = re.escape(HOST)
    # A survivor slower than the 2 s wait to see the loss (a loaded machine) is named by the other as well.
    survivor_too = rf"(rank \d on node {1 - lost_node} \({host}\); )?"
    expected = (
        rf"cohort: error: member {1 - lost_member} \(rank \d\) lost the cohort at step \d+ on node {1 - lost_node} "
        rf"\({host}\): member\(s\) (\d, )?{lost_member}(, \d)? stopped answering \({survivor_too}all of node "
        rf"{lost_node} \({host}\), ranks {lost_ranks[0]}-{lost_ranks[1]}\) \(dead, or stalled longer than "
        r"train.dist_timeout_s=30s\); continue with resume=auto"
    )
    assert errors and all(re.fullmatch(expected, line) for line in errors), f"killed after {kill_after}: {errors}"
    resumed = tmp_path / "resumed"
    logs = finish(start_two_agents(config, resumed, f"run_dir={run}", "resume=auto"), resumed)
    assert all(agent_log.count("cohort: error") == 0 for agent_log in logs), logs
    assert any("resuming" in log for log in logs), f"killed after {kill_after} steps, but the restart did not resume"
    assert np.array_equal(np.load(run / "predictions" / "test.npz")["logits"], reference), f"killed after {kill_after}"
