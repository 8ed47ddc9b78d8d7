"""A cohort on two SLURM nodes (``slurm/local-cluster.sh up --nodes 2``: node1 and node2, two
slurmd daemons in their own mount and UTS namespaces on this machine): K = 2 members × R = 2
replicas, two tasks per node, through ``sbatch slurm/train.sbatch`` and through ``cohort
submit`` with a ``scontrol requeue`` mid-run, which must end bit-identical; and a run
directory on node-local storage, refused before training."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, run_cli
from tests.launch.conftest import PAIR, assert_every_epoch_once, final_logits, job_fields, logs_of, wait_for_job

pytestmark = [pytest.mark.multiprocess, pytest.mark.slurm]

EPOCHS = 4
COHORT = ["replicas=2", f"train.epochs={EPOCHS}"]  # K×R = 2×2: member 0 on node1, member 1 on node2
SCRATCH = REPO / ".slurm" / "scratch"  # each node's own tmpfs (local-cluster.sh), unseen by the others


def sbatch(env: dict, log, *args: str, nodes: int = 2, tasks_per_node: int = 2) -> str:
    """Submit the sbatch template (the digits pair, ``args`` after it); returns the job id."""
    command = [
        "sbatch",
        "--parsable",
        "--partition=debug",
        f"--nodes={nodes}",
        f"--ntasks-per-node={tasks_per_node}",
        "--gpus-per-node=0",
        "--cpus-per-task=1",
        "--time=15",
        f"--output={log}",
        "slurm/train.sbatch",
        PAIR,
        *args,
    ]
    submitted = subprocess.run(
        command, cwd=REPO, env={**env, "COHORT_PYTHON": sys.executable}, capture_output=True, text=True, timeout=60
    )
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


def node_markers(run_dir) -> dict[str, str]:
    """Each node's marker of the run's latest start (``cohort.run.shared_fs``): node → token."""
    markers = [json.loads(p.read_text()) for p in sorted((run_dir / "nodes").glob("*.json"))]
    return {marker["node"]: marker["token"] for marker in markers}


@pytest.fixture(scope="module")
def sbatch_on_two_nodes(two_node_cluster, digits_root, tmp_path_factory):
    """The K = 2, R = 2 cohort trained to the end by the sbatch template on both nodes, uninterrupted."""
    folder = tmp_path_factory.mktemp("two-nodes-sbatch")
    run_dir, log = folder / "run", folder / "job.log"
    job_id = sbatch(two_node_cluster, log, *COHORT, f"data.root={digits_root}", f"run_dir={run_dir}")
    return run_dir, log, wait_for_job(job_id, two_node_cluster, logs=[log])


def test_sbatch_trains_a_cohort_over_two_nodes(sbatch_on_two_nodes):
    run_dir, log, fields = sbatch_on_two_nodes
    text = log.read_text()
    assert fields["JobState"] == "COMPLETED" and fields["NodeList"] == "node[1-2]", (fields, text[-3000:])
    assert "on node[1-2]: 4 tasks" in text and "ensemble" in text, text[-3000:]
    markers = node_markers(run_dir)  # ranks ran on both nodes, in the same start
    assert sorted(markers) == ["node1", "node2"] and len(set(markers.values())) == 1, markers
    assert_every_epoch_once(run_dir, EPOCHS)
    assert final_logits(run_dir).shape[0] == 2


def test_submit_on_two_nodes_requeued_resumes_and_matches_sbatch(
    sbatch_on_two_nodes, two_node_cluster, digits_root, tmp_path
):
    reference = final_logits(sbatch_on_two_nodes[0])
    run_dir = tmp_path / "run"
    result = run_cli(
        "submit",
        PAIR,
        *COHORT,
        f"data.root={digits_root}",
        f"run_dir={run_dir}",
        "--cpu",
        "--nodes",
        "2",
        "--gpus-per-node",
        "2",
        "--partition",
        "debug",
        "--time",
        "15",
        env=two_node_cluster,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (job_id,) = re.findall(r"submitted job (\S+):", result.stdout)
    assert "4 × CPU task on 2 node(s)" in result.stdout, result.stdout
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.5)  # until mid-run: the first epoch is evaluated
    running = job_fields(job_id, two_node_cluster)
    assert running["JobState"] == "RUNNING" and running["NodeList"] == "node[1-2]", running
    first_start = node_markers(run_dir)
    requeued = subprocess.run(["scontrol", "requeue", job_id], env=two_node_cluster, capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr

    fields = wait_for_job(job_id, two_node_cluster, logs=logs_of(run_dir))
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) == 1, fields
    assert len(logs_of(run_dir)) == 4
    log = logs_of(run_dir)[0].read_text()
    assert "cohort: stopped by SIGTERM at step" in log and "cohort: resuming" in log, log[-3000:]
    second_start = node_markers(run_dir)  # both attempts ran on both nodes, each its own start
    assert sorted(first_start) == sorted(second_start) == ["node1", "node2"], (first_start, second_start)
    assert len(set(second_start.values())) == 1 and set(first_start.values()) != set(second_start.values())
    assert_every_epoch_once(run_dir, EPOCHS)
    np.testing.assert_array_equal(final_logits(run_dir), reference)


def test_run_dir_on_node_local_storage_is_refused_before_training(two_node_cluster, digits_root, tmp_path):
    # Under .slurm/scratch each node has a tmpfs of its own: rank 0 creates the run directory
    # on node1's, and node2 never sees it (nor node1 node2's marker).
    run_dir, log = SCRATCH / tmp_path.name / "run", tmp_path / "job.log"
    job_id = sbatch(
        two_node_cluster, log, f"data.root={digits_root}", f"run_dir={run_dir}", "train.epochs=1", tasks_per_node=1
    )
    fields = wait_for_job(job_id, two_node_cluster, logs=[log])
    text = log.read_text()
    assert fields["JobState"] == "FAILED", (fields, text[-3000:])
    errors = [line for line in text.splitlines() if line.startswith("cohort: error: ")]
    assert len(errors) == 1, text[-3000:]
    found = re.search(r"node (node[12])'s marker (\S+) is missing on node (node[12]);", errors[0])
    assert found and found[1] != found[3], errors[0]
    assert found[2] == f"{run_dir}/nodes/{found[1]}.json", errors[0]
    assert "not on a file system every node sees" in errors[0] and "shared file system" in errors[0], errors[0]
    assert not re.search(r"^epoch ", text, re.M), text[-3000:]
