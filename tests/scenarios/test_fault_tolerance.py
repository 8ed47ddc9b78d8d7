"""Crashes, stalls and signals in real torchrun cohorts: nothing hangs, and resuming is exact.

Faults are real: SIGKILL, SIGSTOP and SIGTERM sent to worker processes found by their
LOCAL_RANK, and SIGKILL, SIGTERM and SIGINT sent to ``cohort train``'s launcher. The only
test hook is COHORT_TEST_PAUSE_BEFORE_RENAME_S, which holds a written checkpoint part
before its rename so a kill can land mid-checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from cohort.config import load_config
from cohort.run.checkpoint_files import MARKER
from cohort.run.directory import RunDir
from tests.conftest import REPO, on_small_disk, run_cli, run_torchrun, small_disk_skip_reason, tiny_config

pytestmark = pytest.mark.multiprocess

FAULT_TRAIN = {"epochs": 2, "max_steps_per_epoch": 8, "trace": True, "checkpoint_every_steps": 3, "keep_last": 0}
# Long enough to signal the launcher well before the end; no periodic checkpoints: any
# checkpoint is the stop's own.
SIGNAL_TRAIN = {"epochs": 3, "max_steps_per_epoch": 40, "trace": True, "dist_timeout_s": 20}


def start_torchrun(*args: str, restarts: int = 0, env: dict | None = None) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        str(restarts),
        "--monitor-interval",
        "0.5",
        "-m",
        "cohort.train",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_cli(*args: str, **popen) -> subprocess.Popen:
    """``cohort ARGS`` in a subprocess (as ``tests.conftest.run_cli``), not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "cohort.cli", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def cohort_workers(launcher: subprocess.Popen, count: int) -> list[psutil.Process]:
    """The launcher's ``count`` worker processes (``python -m cohort.train``)."""
    found: list[psutil.Process] = []

    def all_started():
        found[:] = []
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if "cohort.train" in " ".join(child.cmdline()):
                    found.append(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return len(found) == count

    wait_for(all_started, 60, f"{count} workers")
    return found


def stop_step(out: str) -> int:
    """The step rank 0 says the cohort saved at and stopped."""
    assert "cohort: stopped by SIGTERM at step " in out, out[-2000:]
    return int(out.split("cohort: stopped by SIGTERM at step ")[1].split()[0])


def resume_to_the_end(config: Path, run: Path, step: int) -> str:
    """Finish the run with ``cohort train resume=auto``; returns its stderr."""
    result = run_cli("train", str(config), "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(step {step})" in result.stdout, result.stdout[-2000:]
    assert len(final_digests(run)) == 2  # every member finished its epochs
    assert not (run / "HOLD.json").exists(), "a finished run releases its hold"
    return result.stderr


def worker(launcher: subprocess.Popen, local_rank: int) -> psutil.Process:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("LOCAL_RANK") == str(local_rank) and "cohort.train" in " ".join(child.cmdline()):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no worker with LOCAL_RANK={local_rank}")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def trace_steps(run: Path, member: int) -> int:
    path = run / "trace" / f"member{member}-replica0.jsonl"
    return sum(1 for line in path.read_text().splitlines() if '"step"' in line) if path.exists() else 0


def final_digests(run: Path) -> list[str]:
    digests = []
    for member in range(2):
        rows = [
            json.loads(line) for line in (run / "trace" / f"member{member}-replica0.jsonl").read_text().splitlines()
        ]
        digests.append([r for r in rows if r.get("final")][-1]["param_digest"])
    return digests


@pytest.fixture(scope="module")
def uninterrupted(digits_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = tiny_config(tmp, digits_root, members=2, train=FAULT_TRAIN)
    result = run_torchrun(2, str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    return config, final_digests(tmp / "run")


def test_sigkill_of_one_rank_and_a_torchrun_restart_end_bit_identical(uninterrupted, tmp_path):
    config, reference = uninterrupted
    run = tmp_path / "run"
    kill_after = random.Random().randint(4, 13)
    launcher = start_torchrun(str(config), f"run_dir={run}", "resume=auto", restarts=1)
    wait_for(lambda: trace_steps(run, 1) >= kill_after, 180, f"{kill_after} steps")
    worker(launcher, 1).kill()
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, err[-3000:]
    assert "resuming" in out, f"killed after {kill_after} steps, but the restart did not resume: {out[-2000:]}"
    assert final_digests(run) == reference, f"killed after {kill_after} steps"


def test_a_kill_in_the_middle_of_a_checkpoint_write_falls_back_to_the_previous_one(uninterrupted, tmp_path):
    config, reference = uninterrupted
    run = tmp_path / "run"
    launcher = start_torchrun(
        str(config), f"run_dir={run}", "resume=auto", restarts=1, env={"COHORT_TEST_PAUSE_BEFORE_RENAME_S": "1.5"}
    )
    torn = []

    def part_being_written():
        torn[:] = list(run.glob("checkpoints/step-*/.member-1.pt.tmp"))
        return bool(torn) and torn[0].parent.name != "step-000000003"  # let one checkpoint complete first

    wait_for(part_being_written, 180, "a checkpoint part being written")
    worker(launcher, 1).kill()
    torn_folder = torn[0].parent
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, err[-3000:]
    resumed_from = out.split("from step-")[1][:9]
    assert int(resumed_from) < int(torn_folder.name.removeprefix("step-")), out[-2000:]
    assert final_digests(run) == reference


@pytest.mark.skipif(bool(small_disk_skip_reason()), reason=small_disk_skip_reason() or "-")
def test_a_full_disk_at_a_checkpoint_stops_every_rank_with_one_line_and_resume_then_finishes(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=2, train={**FAULT_TRAIN, "trace": False})
    run = RunDir(load_config(config).run_dir)
    run.create(load_config(config))  # its checkpoints/ becomes a disk of 256 KiB, too small for a part
    full = on_small_disk(
        run.checkpoints, 256, [sys.executable, "-m", "cohort.cli", "train", str(config), "resume=auto"]
    )
    assert full.returncode != 0
    errors = [line for line in full.stderr.splitlines() if line.startswith("cohort: error:")]
    disk = re.escape(str(run.checkpoints))
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert re.fullmatch(
        rf"cohort: error: no space left on {disk} writing {disk}/step-000000003/member-[01]\.pt: free space there "
        r"\(or move the run directory to a disk with room, run_dir=<there>\) and continue with resume=auto",
        errors[0],
    ), errors[0]
    left = [line for line in full.stdout.splitlines() if line.startswith("left: ")]
    assert left == [f"left: {run.checkpoints}/step-000000003"], left  # no temporary file, no torn part
    # With room again (the real disk under it), resume=auto trains to the end.
    finished = run_cli("train", str(config), "resume=auto")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (run.checkpoints / "step-000000016" / MARKER).is_file()


def test_a_stalled_peer_makes_every_survivor_exit_naming_it(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=2, train={**FAULT_TRAIN, "dist_timeout_s": 8})
    run = tmp_path / "run"
    launcher = start_torchrun(str(config))
    wait_for(lambda: trace_steps(run, 1) >= 3, 180, "3 steps")
    stalled = worker(launcher, 1)
    stalled.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        out, err = launcher.communicate(timeout=120)
    finally:
        if stalled.is_running():
            stalled.send_signal(signal.SIGCONT)
            stalled.kill()
    assert launcher.returncode != 0
    assert time.monotonic() - stopped_at < 60
    lines = [line for line in err.splitlines() if line.startswith("cohort: error:")]
    assert any(
        "member 0 (rank 0) lost the cohort at step" in line
        and "member(s) 1 stopped answering" in line
        and "dist_timeout_s=8s" in line
        for line in lines
    ), err[-3000:]
    assert "cohort/train/__main__.py" not in err  # bare torchrun prints its own traceback; ours must not appear


def test_sigterm_checkpoints_at_an_agreed_step_and_resume_is_exact(uninterrupted, tmp_path):
    config, reference = uninterrupted
    run = tmp_path / "run"
    launcher = start_torchrun(str(config), f"run_dir={run}")
    wait_for(lambda: trace_steps(run, 0) >= 2, 180, "2 steps")
    for rank in (0, 1):
        worker(launcher, rank).send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, err[-3000:]
    # Ranks agree at the next multiple of SIGNAL_CHECK_EVERY (8) steps: the end of epoch 0 here.
    assert "cohort: stopped by SIGTERM at step 8 after saving" in out, out[-2000:]
    assert (run / "checkpoints" / "step-000000008" / MARKER).is_file()
    result = run_torchrun(2, str(config), f"run_dir={run}", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at epoch 0 batch 8 (step 8)" in result.stdout
    assert final_digests(run) == reference


def test_non_finite_steps_are_skipped_and_counted_or_stop_the_run(digits_root, tmp_path):
    # A learning rate of 1e30 makes the first update overflow the weights: from step 1 on,
    # every step's logits are non-finite.
    base = tiny_config(
        tmp_path,
        digits_root,
        members=2,
        optim={"lr": 1e30},
        train={"epochs": 1, "max_steps_per_epoch": 4, "trace": True},
    )
    skip = tmp_path / "skip"
    skipping = run_torchrun(
        2,
        str(base),
        "train.on_nonfinite=skip_step",
        "train.checkpoint_every_steps=2",
        "train.keep_last=0",
        f"run_dir={skip}",
    )
    assert skipping.returncode == 0, skipping.stderr[-3000:]
    # Resume from the mid-epoch checkpoint at step 2 (step 1 skipped before it, 2 and 3 after).
    shutil.rmtree(skip / "checkpoints" / "step-000000004")
    resumed = run_torchrun(
        2,
        str(base),
        "train.on_nonfinite=skip_step",
        "train.checkpoint_every_steps=2",
        "train.keep_last=0",
        f"run_dir={skip}",
        "resume=auto",
    )
    assert resumed.returncode == 0 and "at epoch 0 batch 2 (step 2)" in resumed.stdout, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (skip / "metrics.jsonl").read_text().splitlines()]
    members = [r for r in rows if r["member"] != "ensemble"]
    assert {r["skipped_steps"] for r in members} == {3.0}
    first_step = json.loads((skip / "trace" / "member0-replica0.jsonl").read_text().splitlines()[0])
    assert next(r for r in members if r["member"] == 0)["loss"] == pytest.approx(first_step["loss"], rel=1e-9)
    # Skipped steps leave BatchNorm's running statistics as they were: finite, though every
    # forward pass after step 0 overflowed.
    part = torch.load(skip / "checkpoints" / "step-000000004" / "member-0.pt", weights_only=False)
    statistics = {k: v for k, v in part["model"].items() if "running" in k}
    assert statistics and all(torch.isfinite(v).all() for v in statistics.values())
    stopping = run_torchrun(2, str(base), f"run_dir={tmp_path / 'stop'}")
    assert stopping.returncode != 0
    lines = [line for line in stopping.stderr.splitlines() if line.startswith("cohort: error:")]
    assert lines == [
        "cohort: error: member 0 produced non-finite logits at step 1; lower the learning rate or check the data"
    ], stopping.stderr[-2000:]


def test_the_workers_stop_when_their_launcher_is_killed_and_resume_continues(digits_root, tmp_path, cli_here):
    config = tiny_config(tmp_path, digits_root, members=2, train=SIGNAL_TRAIN)
    run = tmp_path / "run"
    launcher = start_cli("train", str(config))
    wait_for(lambda: trace_steps(run, 0) >= 2, 180, "2 steps")
    ranks = cohort_workers(launcher, 2)
    # While it trains, the run directory is its own: a second run is refused before it starts.
    second = cli_here("train", str(config), "resume=auto")
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert second.stderr.startswith(f"cohort: error: {run} is in use by cohort train (process {launcher.pid} on ")
    assert len(second.stderr.splitlines()) == 1, second.stderr[-3000:]
    launcher.kill()
    _, alive = psutil.wait_procs(ranks, timeout=30)
    for rank in alive:
        rank.kill()
    assert not alive, f"{len(alive)} of 2 workers outlived their SIGKILLed launcher by 30 s"
    out, _ = launcher.communicate(timeout=30)
    # The launcher's death is a SIGTERM to its workers: they still agree on a step and save.
    step = stop_step(out)
    assert step < 120 and (run / "checkpoints" / f"step-{step:09d}" / MARKER).is_file()
    # Its hold outlived it (SIGKILL), but names processes that are gone: the resume takes it over.
    assert "cohort: took over" in resume_to_the_end(config, run, step)


def test_sigterm_to_the_launcher_saves_at_an_agreed_step_exits_0_and_resume_continues(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=2, train=SIGNAL_TRAIN)
    run = tmp_path / "run"
    launcher = start_cli("train", str(config))
    wait_for(lambda: trace_steps(run, 0) >= 2, 180, "2 steps")
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("cohort:")] == [
        "cohort: stopped by SIGTERM to the launcher; every rank ended cleanly (where it saved is printed above); "
        "continue with resume=auto"
    ], err[-3000:]
    step = stop_step(out)
    assert step < 120 and (run / "checkpoints" / f"step-{step:09d}" / MARKER).is_file()
    resume_to_the_end(config, run, step)


def test_ctrl_c_to_the_launchers_process_group_saves_and_exits_0(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=2, train=SIGNAL_TRAIN)
    run = tmp_path / "run"
    launcher = start_cli("train", str(config), start_new_session=True)
    wait_for(lambda: trace_steps(run, 0) >= 2, 180, "2 steps")
    os.killpg(launcher.pid, signal.SIGINT)  # as Ctrl-C in a terminal
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "cohort: stopped by SIGINT to the launcher; every rank ended cleanly" in err, err[-3000:]
    step = stop_step(out)
    assert (run / "checkpoints" / f"step-{step:09d}" / MARKER).is_file()
