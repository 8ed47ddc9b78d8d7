"""A real single-node SLURM for the launcher tests (slurm/local-cluster.sh), and helpers
to submit to it and wait for jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cohort.run.directory import RunDir
from tests.conftest import REPO, run_cli

CLUSTER = REPO / "slurm" / "local-cluster.sh"
SLURM_CONF = REPO / ".slurm" / "slurm.conf"
REQUEUE_SETTLE_S = 2
"""How long a requeued job stays held before the tests let it start (see wait_for_job)."""
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def cluster_is_up() -> bool:
    return subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """SLURM's environment for commands that talk to the local cluster. Uses a running
    cluster (`.ci/run` starts one), else starts one for the session and stops it after."""
    started = False
    if not cluster_is_up():
        if os.geteuid() != 0:
            pytest.skip(
                "no local SLURM: its daemons run as root and these tests do not run as root "
                "(start it with sudo slurm/local-cluster.sh up)"
            )
        up = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        started = True
    env = {**os.environ, "SLURM_CONF": str(SLURM_CONF), "PYTHONUNBUFFERED": "1"}
    yield env
    if started:
        subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=120)


def partition_nodes(env: dict) -> list[str]:
    listed = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N"], env=env, capture_output=True, text=True)
    return listed.stdout.split()


@pytest.fixture(scope="session")
def two_node_cluster(slurm_cluster):
    """The local cluster with two nodes (``up --nodes 2``: node1 and node2, each its own slurmd
    in its own mount and UTS namespaces). A one-node cluster is restarted with two nodes for
    the rest of the session (a partition of two nodes runs the one-node jobs too), and put
    back as it was after it."""
    if len(partition_nodes(slurm_cluster)) >= 2:
        yield slurm_cluster
        return
    if os.geteuid() != 0:
        pytest.skip("a one-node local SLURM runs, and restarting it with two nodes needs root")
    subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=120)
    up = subprocess.run(["bash", str(CLUSTER), "up", "--nodes", "2"], capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        restored = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=300)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        pytest.skip(f"the two-node local SLURM did not start: {(up.stderr.strip().splitlines() or ['?'])[-1]}")
    yield slurm_cluster
    subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=120)
    restored = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stdout + restored.stderr


def job_fields(job_id: str, env: dict) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    return dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)


def wait_for_job(
    job_id: str, env: dict, timeout_s: float = 600, logs: list[Path] = (), progress: Callable[[], object] | None = None
) -> dict[str, str]:
    """Wait until the job has ended; returns its final ``scontrol show job`` fields. Given
    ``progress`` (e.g. the run's newest checkpoint), ``timeout_s`` counts from its last change:
    a job that requeues and goes on saving is waited for, however loaded the machine.

    SLURM holds a requeued job for about two minutes (Reason=BeginTime) before it may run
    again; the wait lifts that hold (an operator's `StartTime=now`) to keep the tests short.
    Not at once: slurmd revokes the previous attempt's credential with one-second
    resolution, and an attempt started within that second is killed ("Job credential
    revoked"), which the hold exists to prevent. The hold appears only once the previous
    attempt has completed (its credential revoked before that), so an attempt started
    REQUEUE_SETTLE_S later, past the next second, is safe; while held, the job is watched
    more often, so that the hold is lifted close to then. Every requeue costs this wait, and
    the time-limit test's attempts (each signalled at slurmctld's next 30 s check) train
    only in what remains of it. Nothing else about the job is touched."""
    deadline = time.monotonic() + timeout_s
    held_since, seen = None, progress() if progress else None
    while time.monotonic() < deadline:
        if progress is not None and (now := progress()) != seen:
            seen, deadline = now, time.monotonic() + timeout_s
        fields = job_fields(job_id, env)
        if fields["JobState"] in ENDED:
            return fields
        if fields["JobState"] == "PENDING" and fields.get("Reason") == "BeginTime":
            held_since = held_since or time.monotonic()
            if time.monotonic() - held_since >= REQUEUE_SETTLE_S:
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, capture_output=True)
        else:
            held_since = None
        time.sleep(0.25 if held_since else 1)
    subprocess.run(["scancel", job_id], env=env)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    within = f"within {timeout_s:.0f} s" + (f" of its last progress ({seen})" if progress else "")
    pytest.fail(f"job {job_id} did not end {within} (state {fields['JobState']})\n{tails}")


def queued_jobs(env: dict) -> list[str]:
    return subprocess.run(
        ["squeue", "--noheader", "--format=%i"], env=env, capture_output=True, text=True
    ).stdout.split()


PAIR = "configs/digits_pair.yaml"  # the digits demo with 2 members: one per core of this 2-core node
SIZE = ["--cpu", "--nodes", "1", "--gpus-per-node", "2", "--partition", "debug"]


def submit(
    env: dict, run_dir: Path, data_root: Path, *overrides: str, options: tuple[str, ...] = (), time_min: int = 15
) -> tuple[list[str], str]:
    """``cohort submit`` the digits pair; returns the job ids and what it printed."""
    result = run_cli(
        "submit",
        PAIR,
        f"data.root={data_root}",
        f"run_dir={run_dir}",
        *overrides,
        *SIZE,
        "--time",
        str(time_min),
        *options,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return re.findall(r"submitted job (\S+):", result.stdout), result.stdout


def logs_of(run_dir: Path) -> list[Path]:
    return [Path(p) for p in json.loads((run_dir / "submission.json").read_text())["logs"]]


def assert_every_epoch_once(run_dir: Path, epochs: int) -> None:
    rows = RunDir(run_dir).read_metrics()
    counts = Counter((row["epoch"], row["split"], str(row["member"])) for row in rows)
    assert set(counts.values()) == {1}, [key for key, n in counts.items() if n > 1]
    assert sorted({row["epoch"] for row in rows}) == list(range(epochs))


def final_logits(run_dir: Path) -> np.ndarray:
    """The members' test logits after the last epoch."""
    return np.load(run_dir / "predictions" / "test.npz")["logits"]


@pytest.fixture(scope="session")
def submitted_pair(slurm_cluster, digits_root, tmp_path_factory):
    """The digits pair trained to the end by ``cohort submit --cpu`` (2 tasks, 20 epochs),
    uninterrupted: the reference the other launches must reproduce bit for bit."""
    run_dir = tmp_path_factory.mktemp("submitted") / "run"
    (job_id,), printed = submit(slurm_cluster, run_dir, digits_root)
    fields = wait_for_job(job_id, slurm_cluster, logs=logs_of(run_dir))
    return run_dir, job_id, printed, fields
