"""``cohort status`` on a finished torchrun run and on a folder that is not a run."""

from __future__ import annotations

import socket

from tests.conftest import run_cli


def test_status_of_a_finished_run(dml_pair):
    _, run_dir, _ = dml_pair
    result = run_cli("status", str(run_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {run_dir}: test, 2 member(s) × 1 replica(s), 2 epochs"
    assert "newest checkpoint: step 12 (end of epoch 2)" in lines
    assert any(line.startswith("last evaluation: epoch 2 (test): ensemble acc ") for line in lines), lines
    assert lines[-1] == "finished: yes (2 evaluation(s) logged)"
    assert f"nodes: node 0 ({socket.gethostname()}): ranks 0-1 (members 0, 1)" in lines  # a one-agent torchrun
    assert not any(line.startswith("job ") for line in lines)  # not submitted to SLURM


def test_status_of_a_folder_that_is_not_a_run(tmp_path, cli_here):
    result = cli_here("status", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cohort: error: {tmp_path}/config.yaml is missing: {tmp_path} is not a cohort "
        f"run directory; pass a folder that `cohort train` wrote (its run_dir)"
    )


def test_status_names_who_uses_the_run(dml_pair, tmp_path):
    import os
    import shutil

    from cohort.run.hold import RunHold
    from cohort.run.status import run_status

    run = tmp_path / "run"
    shutil.copytree(dml_pair[1], run)
    assert "in use: no (no cohort train or eval holds it)" in run_status(run).splitlines()
    with RunHold.acquire(run, "cohort eval"):
        assert f"in use: by cohort eval (process {os.getpid()} on " in run_status(run)


def test_a_malformed_nodes_record_is_one_line_naming_it(dml_pair, tmp_path, cli_here):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(dml_pair[1], run)
    (run / "nodes.json").write_text('{"ranks": [{"rank": 0}]}')
    result = cli_here("status", str(run))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cohort: error: {run}/nodes.json: a rank's row lacks its rank, node or host; delete it; the run's next "
        "start writes it again"
    )
