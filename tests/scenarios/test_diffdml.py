"""Diff-DML as its code trains it, for real: a primary and two auxiliaries (K = 3, three processes)
with differentiated objectives (the auxiliaries without cross-entropy, learning from the primary
alone) and schedules (the primary's step schedule stepped from an epoch on, the auxiliaries' constant
at a tenth of its rate), selected by CSMAC on the primary; resumed from a mid-epoch checkpoint, it
ends bit-identical to the uninterrupted run, selection included."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_torchrun, tiny_config

pytestmark = pytest.mark.multiprocess


def auxiliary(name: str) -> dict:
    return {
        "name": name,
        "arch": "small_cnn",
        "policy": "crop",
        "optim": {"lr": 0.005},
        "schedule": {"name": "constant"},
        "loss": {"ce": 0.0},
        "learns_from": ["primary"],
    }


TRAIN = {
    "trace": True,
    "checkpoint_every_steps": 4,
    "keep_last": 0,
    "select_by": "csmac",
    "baseline_acc": 0.3,
    "acc_threshold": 0.01,
    "calibration_bins": 10,
    "calibration_binning": "floor",
}


def digests(run) -> list[str]:
    rows = [
        [json.loads(line) for line in (run / "trace" / f"member{m}-replica0.jsonl").read_text().splitlines()]
        for m in range(3)
    ]
    return [[r for r in member if r.get("final")][-1]["param_digest"] for member in rows]


def test_a_primary_and_two_auxiliaries_train_as_diffdmls_code_and_resume_bit_identically(digits_root, tmp_path):
    config = tiny_config(
        tmp_path,
        digits_root,
        members=[{"name": "primary", "arch": "small_cnn", "policy": "crop"}, auxiliary("aux1"), auxiliary("aux2")],
        reported_members=["primary"],
        schedule={"name": "step_lr", "step_size": 1, "step_begin": 0, "gamma": 0.1},
        loss={"mimicry": {"weight": 0.9}},
        train=TRAIN,
    )
    run = tmp_path / "run"
    result = run_torchrun(3, str(config))
    assert result.returncode == 0, result.stderr[-3000:]

    # The final table: the reported primary first and marked, the binning named.
    table = result.stdout[result.stdout.index("test mce") :].splitlines()
    assert table[1].startswith("primary *") and table[4].startswith("ensemble"), table
    assert "* reported (reported_members)" in result.stdout and "ECE and MCE: 10 bins, floor(p·M)" in result.stdout
    # Differentiated objectives: the auxiliaries have no cross-entropy term at any step.
    steps = [
        [
            row
            for row in map(json.loads, (run / "trace" / f"member{m}-replica0.jsonl").read_text().splitlines())
            if "step" in row
        ]
        for m in range(3)
    ]
    assert all("ce" in row and row["mimicry"] > 0 for row in steps[0])
    assert all(
        "ce" not in row and row["loss"] == pytest.approx(0.9 * row["mimicry"]) for rows in steps[1:] for row in rows
    )
    # Differentiated schedules: the primary decays after epoch 0 (stepped from epoch 0), the auxiliaries stay.
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lr = {(r["epoch"], r["member"]): r["lr"] for r in metrics if r["split"] == "val" and r["member"] != "ensemble"}
    assert lr == pytest.approx(
        {(0, 0): 0.05, (1, 0): 0.005, (0, 1): 0.005, (1, 1): 0.005, (0, 2): 0.005, (1, 2): 0.005}
    )
    assert {"mce", "full_ece", "c_mce"} <= set(metrics[0])
    selection = json.loads((run / "selection.json").read_text())
    assert selection["select_by"] == "csmac" and selection["stage"] in (1, 2)

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000000012")  # back to step 8: epoch 1, batch 2
    result = run_torchrun(3, str(config), f"run_dir={resumed}", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout and "(step 8)" in result.stdout
    assert digests(resumed) == digests(run)
    for folder in ("", "best"):
        for split in ("val", "test"):
            before, after = (np.load(r / "predictions" / folder / f"{split}.npz")["logits"] for r in (run, resumed))
            assert np.array_equal(before, after), (folder, split)
    assert json.loads((resumed / "selection.json").read_text()) == selection
    timing = ("seconds", "images_per_s")  # the wall clock's, which no resume repeats

    def recorded(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if not k.endswith(timing)} for row in rows]

    assert recorded(resumed) == recorded(run)
