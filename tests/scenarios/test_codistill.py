"""Codistillation for real: K = 2 members of R = 2 replicas (4 processes), each member with its
own sample order, copies refreshed over each replica's exchange group every 3 steps after a
2-step burn-in; resumed from a checkpoint between two refreshes, it ends bit-identical to the
uninterrupted run (what a kill before the next checkpoint leaves is that checkpoint)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_torchrun, tiny_config
from tests.scenarios.test_fault_tolerance import final_digests

pytestmark = pytest.mark.multiprocess

TRAIN = {"trace": True, "checkpoint_every_steps": 4, "keep_last": 0}
EXCHANGE = {"mode": "codistill", "refresh_every": 3, "burn_in_steps": 2}


def steps(run, member: int, replica: int) -> list[dict]:
    path = run / "trace" / f"member{member}-replica{replica}.jsonl"
    return [row for row in map(json.loads, path.read_text().splitlines()) if "step" in row]


def test_codistillation_reads_copies_after_its_burn_in_and_resumes_between_refreshes_bit_identically(
    digits_root, tmp_path
):
    config = tiny_config(
        tmp_path,
        digits_root,
        members=2,
        replicas=2,
        train=TRAIN,
        exchange=EXCHANGE,
        data={"sample_order": "per_member"},
    )
    run = tmp_path / "run"
    result = run_torchrun(4, str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    first = {(m, r): steps(run, m, r) for m in range(2) for r in range(2)}
    for rows in first.values():
        assert [row["mimicry"] == 0.0 for row in rows] == [True, True] + [False] * 10  # burn-in: no peers yet
    # Each member its own order; a member's two replicas disjoint shards of it.
    assert first[0, 0][0]["indices"] != first[1, 0][0]["indices"]
    assert not set(first[0, 0][0]["indices"]) & set(first[0, 1][0]["indices"])

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    for later in ("step-000000008", "step-000000012"):  # back to step 4: after the refresh at 2, before 5
        shutil.rmtree(resumed / "checkpoints" / later)
    result = run_torchrun(4, str(config), f"run_dir={resumed}", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout and "(step 4)" in result.stdout
    assert final_digests(resumed) == final_digests(run)
    for split in ("val", "test"):
        before, after = (np.load(r / "predictions" / f"{split}.npz")["logits"] for r in (run, resumed))
        assert np.array_equal(before, after)
