"""The experiment trackers, for real and in process: MLflow on a file store (read back through
its own client) and W&B offline (read back from the files offline mode writes, ``wandb_history``).
The checks before a run starts; the metrics a row becomes; a tracked run continued by a second
start without a step logged twice. The multi-process kill and resume is tests/scenarios/test_tracking.py."""

from __future__ import annotations

import importlib.util
import json
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest

from cohort.config import CohortConfig, MemberConfig, MlflowConfig, WandbConfig
from cohort.run.directory import RunDir
from cohort.run.trackers import quiet_environment
from cohort.run.tracking import PROBE_TIMEOUT_S, TrackingError, check_trackers, mlflow_uri, tracked_metrics
from cohort.train.tracking import Tracking

TRACKERS_INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("mlflow", "wandb"))
needs_trackers = pytest.mark.skipif(
    not TRACKERS_INSTALLED,
    reason="the tracking extras are not installed (`pip install -e .[wandb,mlflow]`; the README's `.[dev]` has them)",
)
"""Tests that run W&B and MLflow for real; an install without the optional extras (the GPU
machine's, ``bench/gpu_rehearsal.sh``) skips them, and ``.[dev]``, which CI installs, has both."""

WANDB_BLOCK = 32768


def wandb_records(path: Path):
    """The records of a W&B offline transaction log (``run-<id>.wandb``), parsed with wandb's own
    protobuf classes. The file is LevelDB's log format under a 7-byte header (``:W&B``, magic
    0xBEE1, version 0): 32 KiB blocks of chunks, each ``crc32 | length | type`` then its bytes;
    types 1 (whole), 2-4 (first, middle, last) of a record split across blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if WANDB_BLOCK - pos % WANDB_BLOCK < 7:  # a block's tail too short for a header: padding
            pos += WANDB_BLOCK - pos % WANDB_BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad chunk at {pos}"
        pos, pending = pos + 7 + length, pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_history(wandb_dir: Path) -> tuple[set[str], list[dict]]:
    """The run ids and every history row (``{key: value, "_step": n}``) of every offline run under
    ``wandb_dir``, in the order they were written."""
    ids, rows = set(), []
    for log in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
            elif kind == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                rows.append({k: v for k, v in row.items() if not k.startswith("_") or k == "_step"})
    return ids, rows


def mlflow_history(entry: dict) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the tracked run an entry of ``tracking.json`` names: ``{key: [(step, value)]}``."""
    quiet_environment()  # MLflow 3 opens a file store only when allowed, as cohort allows it
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=entry["tracking_uri"])
    keys = client.get_run(entry["run_id"]).data.metrics
    return {key: [(m.step, m.value) for m in client.get_metric_history(entry["run_id"], key)] for key in keys}


def tracked_config(tmp_path: Path, **track) -> CohortConfig:
    config = CohortConfig(
        name="t",
        members=[MemberConfig(name="crop-a", batch_ensemble=2), MemberConfig(name="plain")],
        run_dir=str(tmp_path / "run"),
    )
    for name, section in track.items():
        setattr(config.track, name, section)
    config.resolve()
    config.validate()
    return config


def rows_at(epoch: int, step: int, seconds: float = 1.0) -> list[dict]:
    """One evaluation's rows as the recorder writes them (two splits, three networks, the ensemble)."""
    rows = []
    for split in ("val", "test"):
        for member in (0, 1, 2, "ensemble"):
            row = {
                "epoch": epoch,
                "step": step,
                "split": split,
                "member": member,
                "acc": 0.1 * epoch,
                "nll": 2.0 - epoch,
            }
            row.update(
                {"ce": 1.5, "seconds": seconds}
                if member != "ensemble"
                else {"subensembles": [{"size": 1, "nll": 2.5}], "temperature_at_bound": False}
            )
            rows.append(row)
    return rows


def stopped(tracking: Tracking) -> None:
    """``Tracking.stop`` (a process's exit), then wait for the trackers however long they take: a
    loaded machine can keep them past ``EXIT_TIMEOUT_S``, after which a real process just ends."""
    thread = tracking.thread
    tracking.stop()
    if thread is not None:
        thread.join()


def test_a_row_becomes_metrics_named_as_in_the_files():
    metrics = tracked_metrics(rows_at(1, 6), ["crop-a.0", "crop-a.1", "plain"], ["ce", "seconds"])
    assert list(metrics) == [6] and list(metrics[6])[-1] == "epoch"  # last: it marks a step logged whole
    at = metrics[6]
    assert at["epoch"] == 1.0 and at["val/acc/crop-a.1"] == 0.1 and at["test/nll/ensemble"] == 1.0
    assert at["test/nll/ensemble-of-1"] == 2.5 and at["val/temperature_at_bound/ensemble"] == 0.0
    # A member's training figures once, from its validation row; none for the ensemble.
    assert (
        at["train/ce/plain"] == 1.5
        and "val/ce/plain" not in at
        and not any("train/" in k and "ensemble" in k for k in at)
    )
    assert tracked_metrics([{k: v for k, v in rows_at(0, 3)[0].items() if k != "step"}], ["a"], []) == {}


def test_mlflow_without_a_uri_writes_into_the_run_directory_and_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir("runs/x")
    assert mlflow_uri(MlflowConfig(), run) == (tmp_path / "runs" / "x" / "mlruns").as_uri()
    assert mlflow_uri(MlflowConfig(tracking_uri="file:store"), run) == (tmp_path / "store").as_uri()
    assert mlflow_uri(MlflowConfig(tracking_uri="sqlite:///m.db"), run) == f"sqlite:///{tmp_path}/m.db"
    assert mlflow_uri(MlflowConfig(tracking_uri="http://h:5000"), run) == "http://h:5000"


@needs_trackers
def test_a_tracker_that_cannot_start_is_one_line_before_anything_starts(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tracked_config(tmp_path, mlflow=MlflowConfig(tracking_uri=f"http://127.0.0.1:{port}"))
    with pytest.raises(TrackingError, match=rf"tracking_uri http://127.0.0.1:{port}: .* did not answer within"):
        check_trackers(config, RunDir(config.run_dir))
    (tmp_path / "file").write_text("")
    config = tracked_config(tmp_path, mlflow=MlflowConfig(tracking_uri=f"file:{tmp_path}/file/store"))
    with pytest.raises(TrackingError, match="cannot write into .*/file; give a writable path"):
        check_trackers(config, RunDir(config.run_dir))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    config = tracked_config(tmp_path, wandb=WandbConfig(mode="online"))
    with pytest.raises(TrackingError, match="no W&B API key .* run `wandb login`, or use track.wandb.mode=offline"):
        check_trackers(config, RunDir(config.run_dir))
    check_trackers(tracked_config(tmp_path, wandb=WandbConfig(), mlflow=MlflowConfig()), RunDir(config.run_dir))
    assert PROBE_TIMEOUT_S <= 10


@needs_trackers
def test_a_second_start_continues_the_tracked_runs_and_logs_no_step_twice(tmp_path):
    """As a resume from the checkpoint after epoch 0 would: the file is cut back to epoch 0, epoch 1
    is redone (its wall-clock figure differs) and epoch 2 follows. MLflow and W&B each hold one run
    whose history has every step once, the first values of the redone one."""
    config = tracked_config(tmp_path, wandb=WandbConfig(project="p"), mlflow=MlflowConfig())
    run = RunDir(config.run_dir)
    run.create(config)
    names, keys = config.member_names, ["ce", "seconds"]

    first = Tracking(config, run, names, keys)
    first.start([])
    first.log(rows_at(0, 4))
    first.log(rows_at(1, 8))
    stopped(first)  # the process ends before its next checkpoint
    record = json.loads(run.tracking_file.read_text())
    assert record["mlflow"]["last_step"] == record["wandb"]["last_step"] == 8

    # W&B names a start's folder offline-run-<second>-<id>: two starts in one second would share one.
    started = time.time()
    time.sleep(max(0.0, 1.05 - (started - int(started))))
    second = Tracking(config, run, names, keys)
    second.start(rows_at(0, 4))  # what metrics.jsonl holds after the resume's cut
    second.log(rows_at(1, 8, seconds=9.0))  # redone
    second.log(rows_at(2, 12))
    stopped(second)

    again = json.loads(run.tracking_file.read_text())
    assert again["mlflow"]["run_id"] == record["mlflow"]["run_id"] and again["wandb"]["id"] == record["wandb"]["id"]
    history = mlflow_history(again["mlflow"])
    assert history["epoch"] == [(4, 0.0), (8, 1.0), (12, 2.0)]
    assert history["train/seconds/plain"] == [(4, 1.0), (8, 1.0), (12, 1.0)]  # the first epoch 1 kept
    assert all(len({s for s, _ in values}) == len(values) == 3 for values in history.values())

    ids, rows = wandb_history(run.wandb)
    assert ids == {record["wandb"]["id"]} and len(list(run.wandb.glob("offline-run-*"))) == 2
    assert [row["_step"] for row in rows] == [4, 8, 12]
    assert rows[1]["train/seconds/plain"] == 1.0 and rows[2]["val/acc/crop-a.0"] == pytest.approx(0.2)


@needs_trackers
def test_an_evaluation_is_added_once_however_often_it_is_repeated(tmp_path):
    """``cohort eval`` of one checkpoint, twice: MLflow's history gets its metrics once, at its step."""
    from cohort.run.tracking import attach

    config = tracked_config(tmp_path, mlflow=MlflowConfig())
    run = RunDir(config.run_dir)
    run.create(config)
    tracking = Tracking(config, run, config.member_names, [])
    tracking.start(rows_at(0, 4) + rows_at(1, 8))
    stopped(tracking)
    for _ in range(2):
        (tracker,) = attach(run)
        tracker.summary({"eval/best/test/acc/ensemble": 0.5, "eval/best/step": 4.0}, 4)
        tracker.close(None)
    history = mlflow_history(json.loads(run.tracking_file.read_text())["mlflow"])
    assert history["eval/best/test/acc/ensemble"] == [(4, 0.5)] and history["epoch"] == [(4, 0.0), (8, 1.0)]


@needs_trackers
def test_a_tracker_added_later_or_pointed_elsewhere_catches_up_from_the_rows(tmp_path):
    """``track`` is run-neutral: a tracker added when a run resumes logs the rows it already has;
    another tracking URI opens a new tracked run there, which gets them all."""
    config = tracked_config(tmp_path)
    run = RunDir(config.run_dir)
    run.create(config)
    rows = rows_at(0, 4) + rows_at(1, 8)
    entries = []
    for store in ("a", "b"):
        config.track.mlflow = MlflowConfig(tracking_uri=f"file:{tmp_path / store}")
        tracking = Tracking(config, run, config.member_names, [])
        tracking.start(rows)
        stopped(tracking)
        entries.append(json.loads(run.tracking_file.read_text())["mlflow"])
        assert mlflow_history(entries[-1])["epoch"] == [(4, 0.0), (8, 1.0)]
    assert entries[0]["run_id"] != entries[1]["run_id"] and entries[1]["tracking_uri"] == (tmp_path / "b").as_uri()


@needs_trackers
def test_training_feeds_the_tracker_and_a_finished_run_started_again_brings_a_new_one_up_to_date(digits_root, tmp_path):
    """In process, one member on a one-process group: the recorder's rows reach MLflow at their
    steps, with the config, the run's path and the report's files; MLflow added to the finished
    run (resume=auto, nothing left to train) gets the whole history and is closed as finished."""
    from mlflow import MlflowClient

    from tests.conftest import tiny_config, train_here

    config = tiny_config(
        tmp_path, digits_root, members=[{"arch": "small_cnn", "name": "solo"}], loss={"mimicry": {"weight": 0}}
    )
    short = ("train.epochs=2", "train.max_steps_per_epoch=2")
    run = RunDir(train_here(config, *short, f"track.mlflow.tracking_uri=file:{tmp_path / 'a'}"))
    rows = run.read_metrics()
    assert sorted({r["step"] for r in rows}) == [2, 4]
    entry = json.loads(run.tracking_file.read_text())["mlflow"]
    history = mlflow_history(entry)
    assert history["val/acc/solo"] == [(r["step"], r["acc"]) for r in rows if r["split"] == "val" and r["member"] == 0]
    client = MlflowClient(tracking_uri=entry["tracking_uri"])
    logged = client.get_run(entry["run_id"])
    assert logged.info.status == "FINISHED" and logged.data.params["members.0.name"] == "solo"
    assert "track.mlflow.tracking_uri" not in logged.data.params  # run-neutral: may change on resume
    assert {a.path for a in client.list_artifacts(entry["run_id"], "report")} >= {
        "report/reliability.png",
        "report/final_table.txt",
    }

    train_here(config, *short, "resume=auto", f"track.mlflow.tracking_uri=file:{tmp_path / 'b'}")
    moved = json.loads(run.tracking_file.read_text())["mlflow"]
    assert moved["run_id"] != entry["run_id"] and mlflow_history(moved) == history
    assert MlflowClient(tracking_uri=moved["tracking_uri"]).get_run(moved["run_id"]).info.status == "FINISHED"
