"""Rank 0's record, in process and without a process group: each evaluation's rows (every
metric of every member and of the ensemble, with the owning member's training figures), the
predictions, the selection and its best predictions; other ranks record nothing."""

from __future__ import annotations

import json

import numpy as np

from cohort.config import CohortConfig, MemberConfig
from cohort.run.directory import RunDir
from cohort.train.recorder import Recorder

FIGURES = {"ce": 0.5, "loss": 0.5, "images_per_s": 10.0, "seconds": 1.0, "lr": 0.1}


def recorder(tmp_path, is_main=True, select_by="val_ensemble_nll") -> tuple[Recorder, RunDir]:
    config = CohortConfig(
        members=[MemberConfig(name="a", batch_ensemble=2), MemberConfig(name="b")], run_dir=str(tmp_path / "run")
    )
    config.train.select_by = select_by
    config.resolve()
    run = RunDir(config.run_dir)
    run.create(config)
    return Recorder(config, run, is_main, ["ce"], None), run


def evaluation(scale: float, seed: int = 0) -> tuple[dict, dict]:
    """Logits of the three networks (a.0, a.1, b) on val and test, sharper with ``scale``."""
    rng = np.random.default_rng(seed)
    labels = {split: rng.integers(0, 4, 50) for split in ("val", "test")}
    logits = {
        split: (scale * np.eye(4)[labels[split]] + rng.normal(size=(3, 50, 4))).astype(np.float32) for split in labels
    }
    return logits, labels


def test_each_evaluation_writes_a_row_per_network_and_the_ensemble_with_its_owners_figures(tmp_path, capsys):
    rec, run = recorder(tmp_path)
    rec.start(None)
    per_member = [{**FIGURES, "ce": 0.25}, {**FIGURES, "ce": 0.75}]
    logits, labels = evaluation(3.0)
    rec.record(0, per_member, logits, labels)
    rows = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    assert [(r["split"], r["member"]) for r in rows] == [
        (split, member) for split in ("val", "test") for member in (0, 1, 2, "ensemble")
    ]
    by_member = {r["member"]: r for r in rows if r["split"] == "val"}
    # a.0 and a.1 are member a's internal members: a's figures; b's own for b.
    assert by_member[0]["ce"] == by_member[1]["ce"] == 0.25 and by_member[2]["ce"] == 0.75
    assert "ce" not in by_member["ensemble"] and {"acc", "nll", "ece", "c_nll"} <= set(by_member["ensemble"])
    saved = np.load(run.prediction_file("test"))
    assert np.array_equal(saved["logits"], logits["test"]) and np.array_equal(saved["labels"], labels["test"])
    assert rec.names == ["a.0", "a.1", "b"]
    assert "val acc a.0 " in capsys.readouterr().out  # the console line names the networks


def test_selection_keeps_the_best_epochs_predictions_and_records_it(tmp_path):
    rec, run = recorder(tmp_path)
    rec.start(None)
    per_member = [FIGURES, FIGURES]
    good, worse = evaluation(4.0, seed=1), evaluation(0.5, seed=2)
    assert rec.selects
    assert rec.record(0, per_member, *worse) is True  # the first is the best so far
    assert rec.record(1, per_member, *good) is True
    assert rec.record(2, per_member, *worse) is False
    assert json.loads(run.selection_file.read_text())["epoch"] == 1
    best = np.load(run.prediction_file("val", best=True))["logits"]
    assert np.array_equal(best, good[0]["val"])
    assert np.array_equal(np.load(run.prediction_file("val"))["logits"], worse[0]["val"])  # the latest


def test_selection_by_last_chooses_nothing(tmp_path):
    rec, run = recorder(tmp_path, select_by="last")
    rec.start(None)
    assert not rec.selects and rec.record(0, [FIGURES, FIGURES], *evaluation(2.0)) is False
    assert not run.selection_file.exists()


def test_a_rank_other_than_0_records_nothing(tmp_path):
    rec, run = recorder(tmp_path, is_main=False)
    rec.start(None)
    assert rec.record(0, [FIGURES, FIGURES], *evaluation(2.0)) is False
    assert not run.metrics_file.exists() and not run.prediction_file("val").exists()
