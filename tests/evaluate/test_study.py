"""cohort study: real runs over two seeds, a table, and no retraining of finished runs."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, run_cli, tiny_config

pytestmark = pytest.mark.multiprocess


def test_study_trains_each_seed_once_and_tabulates(digits_root, tmp_path, cli_here):
    config = tiny_config(
        tmp_path,
        digits_root,
        members=2,
        name="tiny-diffdml",
        loss={"diversity": {"kind": "margin", "weight": 2.0, "margin": 0.1}},
        train={"epochs": 1, "max_steps_per_epoch": 4},
    )
    out = tmp_path / "study"
    first = run_cli("study", str(config), "--seeds", "0", "1", "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("study: training tiny-diffdml") == 2
    for seed in (0, 1):
        assert yaml.safe_load((out / "tiny-diffdml" / f"seed{seed}" / "config.yaml").read_text())["seed"] == seed
    table_row = next(line for line in first.stdout.splitlines() if line.startswith("| tiny-diffdml"))
    assert table_row.count("±") == 8 and "| 2 |" in table_row
    assert table_row in (out / "study.md").read_text()
    calibration_row, *curve_rows = [line for line in first.stdout.splitlines() if line.startswith("| tiny-diffdml")][1:]
    assert calibration_row.count("±") == 13 and calibration_row in (out / "study.md").read_text()
    assert len(curve_rows) == 2 and all(
        row.count("±") == 5 and row in (out / "study.md").read_text() for row in curve_rows
    )
    assert "calibration errors: 15 bins, (lo, hi]" in (out / "study.md").read_text()
    again = run_cli("study", str(config), "--seeds", "0", "1", "--out", str(out))
    assert again.returncode == 0 and "study: training" not in again.stdout and table_row in again.stdout
    # A config of that name that has changed since is not reported from the old runs.
    refused = cli_here("study", str(config), "--seeds", "0", "--out", str(out), "--set", "optim.lr=0.01")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert (
        f"{out}/tiny-diffdml/seed0 holds a run of a different config (optim.lr: 0.05 there, 0.01 here)"
        in refused.stderr
    )
    assert "choose another --out, or move" in refused.stderr


@pytest.mark.parametrize(
    "args, error",
    [
        (["--set", "members.0.policy=sharpen"], "members.0.policy 'sharpen'"),
        (["--set", "name=../../x"], "name '../../x' must be a plain folder name"),  # would escape --out
        (["--out", "{tmp}/notes.txt"], "--out {tmp}/notes.txt is a file, not a folder; choose another --out"),
        (["--out", "{tmp}/notes.txt/s"], "--out {tmp}/notes.txt/s: {tmp}/notes.txt is a file, not a folder"),
    ],
    ids=["bad_policy", "name_escaping_out", "out_is_a_file", "out_under_a_file"],
)
def test_study_rejects_bad_input_in_one_line_before_anything_starts(digits_root, tmp_path, capsys, args, error):
    from cohort.cli import main

    config = tiny_config(tmp_path, digits_root, members=2)
    (tmp_path / "notes.txt").write_text("not a folder\n")
    args = [a.format(tmp=tmp_path) for a in args]
    before = sorted(tmp_path.rglob("*"))
    assert main(["study", str(config), "--out", str(tmp_path / "s"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cohort: error: {error.format(tmp=tmp_path)}") and err.count("\n") == 1, err
    assert sorted(tmp_path.rglob("*")) == before, "nothing written"


def test_a_failing_run_stops_the_study_with_one_line(digits_root, tmp_path):
    config = tiny_config(
        tmp_path,
        digits_root,
        members=2,
        name="doomed",
        optim={"lr": 1e30},
        train={"epochs": 1, "max_steps_per_epoch": 4},
    )
    result = run_cli("study", str(config), "--seeds", "0", "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "cohort: error: doomed with seed 0 failed (exit 1; its error is "
        "above); fix it and rerun the study: finished runs are kept"
    )
    assert "Traceback" not in result.stderr


def test_a_stop_signal_stops_the_study_not_just_its_run(digits_root, tmp_path):
    """SIGTERM to `cohort study` reaches its launcher, whose ranks save and end cleanly (exit 0):
    the study must stop there, saying how to continue, not go on to the next seed."""
    config = tiny_config(tmp_path, digits_root, members=2, train={"epochs": 50, "max_steps_per_epoch": 4})
    out = tmp_path / "s"
    study = subprocess.Popen(
        [sys.executable, "-m", "cohort.cli", "study", str(config), "--seeds", "0", "1", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "test" / "seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.2)  # until seed 0 has evaluated its first epoch (of 50: far from its end)
    study.send_signal(signal.SIGTERM)
    stdout, stderr = study.communicate(timeout=300)
    assert study.returncode == 130, stdout[-2000:] + stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        "cohort: study stopped during test with seed 0 (a stop signal; it saved); rerun the same command "
        "to continue: finished runs are kept"
    ), stderr[-3000:]
    assert "training test with seed 1" not in stdout and not (out / "test" / "seed1").exists()
