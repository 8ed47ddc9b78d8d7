"""``train.trace``: one line a step with the batch and the terms, appended on resume, and a last
line of parameter digests that change with any parameter."""

from __future__ import annotations

import json

import torch

from cohort.data.batch import Batch
from cohort.run.directory import RunDir
from cohort.train.trace import StepTrace, parameter_digest

BATCH = Batch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([3, 1]), torch.tensor([7, 2]), 2)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_steps_are_lines_a_resume_appends_and_the_last_line_holds_the_digests(tmp_path):
    run = RunDir(tmp_path)
    trace = StepTrace(run, member=1, replica=0, resumed=False)
    trace.step(0, 0, BATCH, {"teacher": 2}, {"ce": torch.tensor(0.5), "loss": torch.tensor(0.5)})
    trace.step(1, 0, BATCH, {}, None)  # a skipped step
    trace.flush()
    path = tmp_path / "trace" / "member1-replica0.jsonl"
    assert lines(path) == [
        {"step": 0, "epoch": 0, "labels": [3, 1], "indices": [7, 2], "teacher": 2, "ce": 0.5, "loss": 0.5},
        {"step": 1, "epoch": 0, "labels": [3, 1], "indices": [7, 2], "skipped": 1.0},
    ]
    trace.file.close()
    resumed = StepTrace(run, member=1, replica=0, resumed=True)
    net = torch.nn.Linear(2, 2)
    resumed.finish(net, {0: torch.nn.Linear(2, 1)})
    rows = lines(path)
    assert len(rows) == 3 and rows[-1]["final"] and rows[-1]["param_digest"] == parameter_digest(net)
    assert set(rows[-1]["teacher_digests"]) == {"0"}
    fresh = StepTrace(run, member=1, replica=0, resumed=False)  # a new run starts the file over
    fresh.file.close()
    assert path.read_text() == ""


def test_the_digest_changes_with_any_parameter_and_only_with_them():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    before = parameter_digest(net)
    assert parameter_digest(net) == before
    with torch.no_grad():
        net[1].running_mean[0] += 1e-7  # buffers count too
    assert parameter_digest(net) != before
