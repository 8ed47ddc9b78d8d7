"""Experiment tracking through a real crash: a K = 2 cohort tracked by MLflow (a file store at a
given URI) and W&B (offline) loses a rank to SIGKILL after an evaluation its last checkpoint does
not cover; torchrun restarts it, it resumes from that checkpoint and redoes the evaluation. Each
tool then holds one tracked run whose history is ``metrics.jsonl``'s rows, each step once (read
back through MLflow's client and from W&B's offline files); ``cohort eval`` and ``cohort report``
add theirs to the same runs."""

from __future__ import annotations

import json
import math

import pytest

from cohort.run.directory import RunDir
from cohort.run.tracking import tracked_metrics
from tests.conftest import tiny_config
from tests.run.test_tracking import mlflow_history, needs_trackers, wandb_history
from tests.scenarios.test_fault_tolerance import start_torchrun, wait_for, worker

pytestmark = [pytest.mark.multiprocess, needs_trackers]

NAMES = ["crop-a", "plain"]
WALL_CLOCK = ("seconds", "images_per_s", "data_seconds", "exchange_seconds")
"""The training figures a redone epoch measures anew; the tracker keeps their first values."""


def measured_anew(key: str, step: int) -> bool:
    """Whether metric ``key`` at ``step`` is a wall-clock figure of the redone evaluation (step 12)."""
    return step == 12 and key.count("/") == 2 and key.split("/")[1] in WALL_CLOCK


def last_steps(run: RunDir) -> list[int]:
    try:
        return [entry["last_step"] for entry in json.loads(run.tracking_file.read_text()).values()]
    except (OSError, ValueError):
        return []


def test_a_killed_and_resumed_run_is_one_tracked_run_with_each_step_once(digits_root, tmp_path, cli_here):
    members = [
        {"arch": "small_cnn", "policy": "crop", "name": NAMES[0]},
        {"arch": "small_cnn", "policy": "none", "name": NAMES[1]},
    ]
    # 5 epochs of 4 steps, evaluated after each, checkpoints after the 2nd and 4th (and the last).
    train = {"epochs": 5, "max_steps_per_epoch": 4, "checkpoint_every": 2, "keep_last": 0}
    store = tmp_path / "mlstore"
    config = tiny_config(tmp_path, digits_root, members=members, train=train)
    run = RunDir(tmp_path / "run")
    launcher = start_torchrun(
        str(config),
        "resume=auto",
        f"track.mlflow.tracking_uri=file:{store}",
        "track.wandb.project=cohort-test",
        restarts=1,
    )
    # Both trackers hold the 3rd evaluation (step 12), which only the next checkpoint would cover.
    wait_for(lambda: min(last_steps(run), default=-1) >= 12, 240, "the trackers to hold step 12")
    worker(launcher, 1).kill()
    out, err = launcher.communicate(timeout=400)
    assert launcher.returncode == 0, err[-3000:]
    assert "resuming" in out and "at epoch 2 batch 0 (step 8)" in out, out[-2000:]  # epoch 3 (from 1) redone
    assert "warning" not in err, err[-2000:]

    rows = run.read_metrics()
    assert sorted({r["step"] for r in rows}) == [4, 8, 12, 16, 20]
    expected = tracked_metrics(rows, NAMES, ["ce", "mimicry", "loss", "lr", "skipped_steps", *WALL_CLOCK])
    record = json.loads(run.tracking_file.read_text())
    assert set(record) == {"mlflow", "wandb"} and all(entry["last_step"] == 20 for entry in record.values())

    history = mlflow_history(record["mlflow"])
    assert record["mlflow"]["tracking_uri"] == store.as_uri()
    assert set(history) >= set(expected[4]) and "val/acc/crop-a" in history and "train/mimicry/plain" in history
    for key, values in history.items():
        if key.startswith("eval/"):
            continue
        steps = [step for step, _ in values]
        assert steps == sorted(set(steps)) == sorted(expected), f"{key}: {steps}"  # each step once
        for step, value in values:
            if not measured_anew(key, step):
                assert math.isclose(value, expected[step][key], rel_tol=1e-12), (key, step)

    ids, logged = wandb_history(run.wandb)
    assert ids == {record["wandb"]["id"]} and len(list(run.wandb.glob("offline-run-*"))) == 2  # one per start
    assert [row["_step"] for row in logged] == [4, 8, 12, 16, 20]
    for row in logged:
        assert set(row) == {*expected[row["_step"]], "_step"}
        for key, value in expected[row["_step"]].items():
            if not measured_anew(key, row["_step"]):
                assert math.isclose(row[key], value, rel_tol=1e-12), (key, row["_step"])

    # What the end of training kept, and what cohort eval and cohort report add, in the same runs.
    from mlflow import MlflowClient  # mlflow_history allowed its file store

    client = MlflowClient(tracking_uri=record["mlflow"]["tracking_uri"])
    run_id = record["mlflow"]["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["members.1.name"] == "plain"
    assert client.get_run(run_id).data.tags["cohort.run_dir"] == str(run.path.resolve())
    kept = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/reliability.png", "report/curves.png", "report/report.md", "report/final_table.txt"} <= kept
    assert cli_here("eval", str(run.path), "--checkpoint", "last").returncode == 0
    assert client.get_metric_history(run_id, "eval/step-000000020/test/acc/ensemble")[0].step == 20
    assert len(client.get_metric_history(run_id, "eval/step-000000020/test/acc/ensemble")) == 1
    assert {a.path for a in client.list_artifacts(run_id, "eval/step-000000020")} >= {
        "eval/step-000000020/metrics.jsonl"
    }
    assert cli_here("report", str(run.path)).returncode == 0
    assert client.get_run(run_id).info.status == "FINISHED"
    assert wandb_history(run.wandb)[0] == ids and len(list(run.wandb.glob("offline-run-*"))) == 4  # eval, report
