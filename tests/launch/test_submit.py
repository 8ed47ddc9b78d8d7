"""``cohort submit`` against a real SLURM on this machine (slurm/local-cluster.sh): a 2-task
CPU job to completion, preemption by ``scontrol requeue``, a real time limit, a job array,
and the bad inputs that must be refused before anything is queued."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from cohort.config import load_config
from cohort.run.checkpoint_files import latest_complete
from cohort.run.directory import RunDir
from tests.conftest import REPO, run_cli
from tests.launch.conftest import (
    PAIR,
    SIZE,
    assert_every_epoch_once,
    final_logits,
    job_fields,
    logs_of,
    queued_jobs,
    submit,
    wait_for_job,
)


@pytest.mark.multiprocess
@pytest.mark.slurm
def test_submit_trains_the_digits_pair_to_completion(submitted_pair, slurm_cluster):
    run_dir, job_id, printed, fields = submitted_pair
    assert fields["JobState"] == "COMPLETED", fields
    assert f"run directory  {run_dir}" in printed and "cohort status" in printed
    submission = json.loads((run_dir / "submission.json").read_text())
    assert submission["job_id"] == job_id and len(submission["logs"]) == 2
    assert "resume=auto" in submission["overrides"] and "train.device=cpu" in submission["overrides"]
    for log in logs_of(run_dir):
        assert log.is_file(), log
    assert "ensemble" in logs_of(run_dir)[0].read_text()  # rank 0 printed the final table
    assert not (run_dir / "nodes").exists()  # one node: no node markers (cohort.run.shared_fs)

    assert_every_epoch_once(run_dir, 20)
    logits = final_logits(run_dir)
    labels = np.load(run_dir / "predictions" / "test.npz")["labels"]
    assert logits.shape[:2] == (2, labels.shape[0])
    ensemble_acc = (np.log(np.exp(logits - logits.max(-1, keepdims=True)).mean(0)).argmax(-1) == labels).mean()
    assert ensemble_acc > 0.9, ensemble_acc

    status = run_cli("status", str(run_dir), env=slurm_cluster)
    assert status.returncode == 0, status.stderr
    assert f"job {job_id}: COMPLETED" in status.stdout and "finished: yes" in status.stdout
    assert "newest checkpoint: step" in status.stdout and "epoch 20 (test)" in status.stdout


@pytest.mark.multiprocess
@pytest.mark.slurm
def test_preempted_by_scontrol_requeue_resumes_and_matches(submitted_pair, slurm_cluster, digits_root, tmp_path):
    reference = final_logits(submitted_pair[0])
    run_dir = tmp_path / "run"
    (job_id,), _ = submit(slurm_cluster, run_dir, digits_root)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.5)  # until mid-run: the first epoch is evaluated
    assert job_fields(job_id, slurm_cluster)["JobState"] == "RUNNING"
    requeued = subprocess.run(["scontrol", "requeue", job_id], env=slurm_cluster, capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr

    fields = wait_for_job(job_id, slurm_cluster, logs=logs_of(run_dir))
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) == 1, fields
    log = logs_of(run_dir)[0].read_text()
    assert "cohort: stopped by SIGTERM at step" in log and "cohort: resuming" in log, log[-3000:]
    assert_every_epoch_once(run_dir, 20)
    np.testing.assert_array_equal(final_logits(run_dir), reference)


SIGNAL_BEFORE_S = 40
SLURM_CHECK_S = 30
"""slurmctld checks time limits every 30 s: the warning, due SIGNAL_BEFORE_S before the limit,
comes at the first check after that, up to 30 s late (with a 1-minute limit, 20 to 50 s in)."""


def startup_seconds(run_dir: Path) -> float:
    """The longest start-up rank 0 logged in ``run_dir``'s job (``cohort: started in``, the
    process's start to the end of its first step)."""
    found = re.findall(r"^cohort: started in ([\d.]+) s", logs_of(run_dir)[0].read_text(), re.M)
    assert found, logs_of(run_dir)[0].read_text()[-3000:]
    return max(map(float, found))


def progress(run_dir: Path) -> tuple[str, int]:
    """How far a run got: its newest complete checkpoint and the evaluations it logged."""
    folder = latest_complete(run_dir) if (run_dir / "checkpoints").is_dir() else None
    metrics = RunDir(run_dir).metrics_file
    return (folder.name if folder else "", metrics.stat().st_size if metrics.is_file() else 0)


def time_limit_for(startup_s: float) -> int:
    """The shortest time limit (whole minutes) whose earliest warning comes after 1.25 ×
    ``startup_s`` (the start-up of the uninterrupted job on this machine, loaded as it is), so
    that every attempt trains and saves a step. An idle 2-core machine starts in about 10 s (a
    1-minute limit); loaded 5 to 16 deep, 40 to 60 s, where a fixed 1-minute limit, warned 20 to
    50 s in, made no progress and requeued until the test gave up (``cohort.run.attempts`` now
    stops such a job after 3 attempts, naming the limit and the start-up)."""
    return max(1, math.ceil((1.25 * startup_s + SIGNAL_BEFORE_S) / 60))


def epochs_to_outlast(run_dir: Path, seconds: float, epochs: int = 20) -> int:
    """The fewest epochs (at least ``epochs``) of the digits pair that keep a job running past
    ``seconds``, judged by the uninterrupted ``epochs``-epoch job in ``run_dir``: its span
    (submitit's first and last log lines), then for each further epoch the mean seconds of its
    epochs' training steps alone (evaluations add to that, so the estimate errs long)."""
    stamps = re.findall(r"^submitit INFO \((\S+ \S+)\)", logs_of(run_dir)[0].read_text(), re.M)
    start, end = (datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp in (stamps[0], stamps[-1]))
    rows = [row for row in RunDir(run_dir).read_metrics() if row["member"] == 0 and row["split"] == "test"]
    step_seconds = sum(row["seconds"] for row in rows) / len(rows)
    return epochs + max(0, math.ceil((seconds - (end - start).total_seconds()) / step_seconds))


@pytest.mark.multiprocess
@pytest.mark.slurm
@pytest.mark.timeout(3600)  # requeues on a loaded machine: waited for while they save (``wait_for_job``)
def test_time_limit_signal_saves_requeues_and_matches(submitted_pair, slurm_cluster, digits_root, tmp_path):
    """A real time limit, warned SIGNAL_BEFORE_S before it: as short as lets an attempt start up
    and train on this machine (``time_limit_for``: 1 minute when idle), so that attempts save.
    The job must outlast its first attempt, so it trains the digits pair for as many epochs as
    keep it running past the latest warning (20 where the uninterrupted pair already does: 20
    epochs took 25 s on one machine, 180 s with requeues on a slower one), and must match the
    same epochs run uninterrupted."""
    startup = startup_seconds(submitted_pair[0])
    minutes = time_limit_for(startup)
    epochs = epochs_to_outlast(submitted_pair[0], 60 * minutes - SIGNAL_BEFORE_S + SLURM_CHECK_S + 5)
    if epochs == 20:
        reference = final_logits(submitted_pair[0])
    else:  # a faster machine, or a longer limit: the same longer cohort uninterrupted
        (reference_job,), _ = submit(slurm_cluster, tmp_path / "reference", digits_root, f"train.epochs={epochs}")
        reference_run = tmp_path / "reference"
        fields = wait_for_job(reference_job, slurm_cluster, 600, progress=lambda: progress(reference_run))
        assert fields["JobState"] == "COMPLETED"
        reference = final_logits(tmp_path / "reference")
    run_dir = tmp_path / "run"
    (job_id,), _ = submit(
        slurm_cluster,
        run_dir,
        digits_root,
        f"train.epochs={epochs}",
        options=("--signal-delay-s", str(SIGNAL_BEFORE_S), "--max-timeouts", "99"),
        time_min=minutes,
    )
    # A machine loaded more than when the uninterrupted job ran makes attempts start slower and
    # train less each: the wait lasts while they evaluate and save (no progress in 10 minutes
    # is a failure; cohort.run.attempts stops a job whose attempts never reach a step).
    fields = wait_for_job(job_id, slurm_cluster, 600, logs=logs_of(run_dir), progress=lambda: progress(run_dir))
    log = logs_of(run_dir)[0].read_text()
    why = (startup, minutes, epochs, fields, log[-3000:])
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) >= 1, why
    assert "cohort: stopped by SIGUSR2 at step" in log and f"Requeued job {job_id}" in log, why
    assert "cohort: started in" in log, why  # each attempt's start-up, phase by phase
    assert_every_epoch_once(run_dir, epochs)
    np.testing.assert_array_equal(final_logits(run_dir), reference)


@pytest.mark.multiprocess
@pytest.mark.slurm
def test_seeds_submit_a_job_array_one_run_per_seed(slurm_cluster, digits_root, tmp_path):
    run_dir = tmp_path / "runs"
    job_ids, printed = submit(slurm_cluster, run_dir, digits_root, "train.epochs=2", options=("--seeds", "0", "1"))
    assert len(job_ids) == 2 and job_ids[0].split("_")[0] == job_ids[1].split("_")[0], printed  # one array
    for job_id, seed in zip(job_ids, (0, 1)):
        seed_dir = run_dir / f"seed{seed}"
        fields = wait_for_job(job_id, slurm_cluster, logs=logs_of(seed_dir))
        assert fields["JobState"] == "COMPLETED", fields
        assert yaml.safe_load((seed_dir / "config.yaml").read_text())["seed"] == seed
        assert_every_epoch_once(seed_dir, 2)
    assert not np.array_equal(final_logits(run_dir / "seed0"), final_logits(run_dir / "seed1"))


# --- bad input: one line, exit code 2, nothing written, nothing queued ---------------------


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cohort: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("nodes, per_node", [(1, 3), (2, 1)])
def test_world_size_other_than_k_times_r_is_refused(digits_root, tmp_path, nodes, per_node):
    run_dir = tmp_path / "run"
    # An override after the options counts too (replicas=2: K×R = 2×2).
    result = run_cli(
        "submit",
        PAIR,
        f"data.root={digits_root}",
        f"run_dir={run_dir}",
        "--cpu",
        "--nodes",
        str(nodes),
        "--gpus-per-node",
        str(per_node),
        "--partition",
        "debug",
        "--time",
        "5",
        "replicas=2",
    )
    assert_refused(result, f"--nodes {nodes} × --gpus-per-node {per_node} = {nodes * per_node} tasks", "K×R = 2×2 = 4")
    assert not run_dir.exists()


def test_gpu_job_for_a_cpu_config_is_refused(digits_root, tmp_path):
    result = run_cli(
        "submit",
        PAIR,
        f"data.root={digits_root}",
        f"run_dir={tmp_path / 'run'}",
        "--nodes",
        "1",
        "--gpus-per-node",
        "2",
        "--partition",
        "debug",
        "--time",
        "5",
    )
    assert_refused(result, "train.device=cpu", "--cpu")
    assert not (tmp_path / "run").exists()


def test_missing_submitit_is_refused(digits_root, tmp_path):
    # A None entry in sys.modules makes `import submitit` raise ImportError, as when it is absent.
    argv = ["submit", PAIR, f"run_dir={tmp_path / 'run'}", *SIZE, "--time", "5"]
    code = f"import sys; sys.modules['submitit'] = None; from cohort.cli import main; sys.exit(main({argv!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_refused(result, "submitit is not installed", "pip install submitit")
    assert not (tmp_path / "run").exists()


def test_checks_before_queueing_import_no_torch_ffcv_numba_or_scipy(digits_root):
    # cohort submit validates the config and the data before it queues anything; importing
    # any of these (for policy, metric or architecture names, or to read a .beton) costs seconds.
    code = (
        f"import sys; from cohort.config import load_config; from cohort.data.folder import check_data; "
        f"from cohort.data.labelled import check_labelled; import cohort.launch.submit; "
        f"config = load_config({PAIR!r}, ['data.root={digits_root}', 'data.labelled_fraction=0.3']); "
        f"check_data(config.data.root, config.data.batch_size, config.replicas); "
        f"assert len(check_labelled(config)) > 0; "
        f"print(sorted(m for m in ('torch', 'torchvision', 'ffcv', 'numba', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slurm
def test_unknown_partition_is_refused(slurm_cluster, digits_root, tmp_path):
    before = queued_jobs(slurm_cluster)
    result = run_cli(
        "submit",
        PAIR,
        f"data.root={digits_root}",
        f"run_dir={tmp_path / 'run'}",
        "--cpu",
        "--nodes",
        "1",
        "--gpus-per-node",
        "2",
        "--partition",
        "gpu-a100",
        "--time",
        "5",
        env=slurm_cluster,
    )
    assert_refused(result, "partition 'gpu-a100' does not exist", "debug")
    assert not (tmp_path / "run").exists() and queued_jobs(slurm_cluster) == before


@pytest.mark.slurm
def test_run_dir_of_another_config_is_refused(slurm_cluster, digits_root, tmp_path):
    run_dir = tmp_path / "run"
    other = load_config(REPO / PAIR, [f"data.root={digits_root}", f"run_dir={run_dir}", "seed=7"])
    RunDir(run_dir).create(other)
    before_files = sorted(p.name for p in run_dir.iterdir())
    before = queued_jobs(slurm_cluster)
    result = run_cli(
        "submit", PAIR, f"data.root={digits_root}", f"run_dir={run_dir}", *SIZE, "--time", "5", env=slurm_cluster
    )
    assert_refused(result, "different config", "seed: 7 there, 0 here")
    assert sorted(p.name for p in run_dir.iterdir()) == before_files and queued_jobs(slurm_cluster) == before


@pytest.mark.slurm
def test_a_job_sbatch_refuses_leaves_nothing_behind(slurm_cluster, digits_root, tmp_path):
    # GPUs from a cluster that has none: every check of ours passes, and sbatch says no.
    run_dir = tmp_path / "run"
    before = queued_jobs(slurm_cluster)
    result = run_cli(
        "submit",
        PAIR,
        f"data.root={digits_root}",
        f"run_dir={run_dir}",
        "train.device=auto",
        "--nodes",
        "1",
        "--gpus-per-node",
        "2",
        "--partition",
        "debug",
        "--time",
        "5",
        env=slurm_cluster,
    )
    assert_refused(result, "sbatch refused the job", "Invalid generic resource", "nothing was queued")
    assert not run_dir.exists() and queued_jobs(slurm_cluster) == before


@pytest.mark.slurm
def test_a_job_no_node_of_the_partition_can_hold_is_refused(slurm_cluster, digits_root, tmp_path):
    before = queued_jobs(slurm_cluster)
    result = run_cli(
        "submit",
        PAIR,
        f"data.root={digits_root}",
        f"run_dir={tmp_path / 'run'}",
        *SIZE,
        "--time",
        "5",
        "--cpus-per-task",
        "64",
        env=slurm_cluster,
    )
    assert_refused(result, "2 task(s) per node × 64 CPU(s) per task = 128 CPUs", "--cpus-per-task")
    assert not (tmp_path / "run").exists() and queued_jobs(slurm_cluster) == before
