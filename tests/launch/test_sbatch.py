"""``slurm/train.sbatch`` against a real SLURM on this machine: the same cohort as
``cohort submit`` trains to the same logits, through srun and the launcher detection."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.launch.conftest import PAIR, assert_every_epoch_once, final_logits, wait_for_job


@pytest.mark.multiprocess
@pytest.mark.slurm
def test_sbatch_template_trains_the_digits_pair_like_submit(submitted_pair, slurm_cluster, digits_root, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "job.log"
    # The template asks for 8 GPUs on partition "gpu"; sbatch's options override its lines.
    command = [
        "sbatch",
        "--parsable",
        "--partition=debug",
        "--nodes=1",
        "--ntasks-per-node=2",
        "--gpus-per-node=0",
        "--cpus-per-task=1",
        "--time=15",
        f"--output={log}",
        "slurm/train.sbatch",
        PAIR,
        f"data.root={digits_root}",
        f"run_dir={run_dir}",
    ]
    env = {**slurm_cluster, "COHORT_PYTHON": sys.executable}
    submitted = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    fields = wait_for_job(job_id, slurm_cluster, logs=[log])
    text = log.read_text()
    assert fields["JobState"] == "COMPLETED", (fields, text[-3000:])
    assert f"cohort: job {job_id} (restart 0) on" in text and "ensemble" in text, text[-3000:]
    assert_every_epoch_once(run_dir, 20)
    # Same config, seed and ranks as cohort submit's run: the two launchers agree bit for bit.
    np.testing.assert_array_equal(final_logits(run_dir), final_logits(submitted_pair[0]))
