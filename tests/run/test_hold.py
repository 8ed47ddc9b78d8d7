"""The run directory's hold (``cohort.run.hold``), in-process: who is refused, which holds are
stale, joining a launcher's hold, the heartbeat. The real processes (a second ``cohort train``
on a live run, a resume after the launcher's SIGKILL) are in tests/scenarios/test_fault_tolerance.py
and tests/test_bad_inputs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest

from cohort.run import hold as run_hold
from cohort.run.directory import HOLD_FILE, RunDir
from cohort.run.files import RunDirError
from cohort.run.hold import HOLD_TOKEN_ENV, Holder, RunHold, create_whole, process_start


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    monkeypatch.delenv(HOLD_TOKEN_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def write_hold(run, holder: Holder, age_s: float = 0.0):
    run.mkdir(parents=True, exist_ok=True)
    assert create_whole(run / HOLD_FILE, holder)
    if age_s:
        then = time.time() - age_s
        os.utime(run / HOLD_FILE, (then, then))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_hold_refuses_a_second_run_naming_its_holder_and_is_gone_once_released(tmp_path):
    run = tmp_path / "run"
    hold = RunHold.acquire(run, "cohort train")
    written = json.loads((run / HOLD_FILE).read_text())
    assert written["pids"][0][0] == os.getpid() and written["command"] == "cohort train"
    with pytest.raises(RunDirError, match=rf"{run} is in use by cohort train \(process {os.getpid()} on .*, since "):
        RunHold.acquire(run, "cohort eval")
    with pytest.raises(RunDirError, match="in use by cohort train"):
        RunHold.check_free(run)
    hold.release()
    assert not run.exists(), "the run directory it created, still empty, is removed with the hold"
    RunHold.acquire(run, "cohort eval").release()


def test_the_run_directory_check_sees_past_the_hold(tmp_path, digits_root):
    from cohort.config import load_config
    from tests.conftest import tiny_config

    config = load_config(tiny_config(tmp_path, digits_root))
    with RunHold.acquire(config.run_dir, "cohort train"):
        assert RunDir(config.run_dir).check(config) is False  # a new run, not "another folder"


@pytest.mark.parametrize(
    "holder_of",
    [
        lambda here: replace(here, pids=[[dead_pid(), 1]]),
        lambda here: replace(here, pids=[[os.getpid(), process_start(os.getpid()) + 1]]),  # a reused pid
        lambda here: replace(here, boot_id="an-earlier-boot"),  # same host, rebooted since
    ],
    ids=["processes_gone", "pid_reused", "machine_rebooted"],
)
def test_a_hold_taken_on_this_machine_whose_processes_are_gone_is_taken_over(tmp_path, capsys, holder_of):
    run = tmp_path / "run"
    stale = holder_of(Holder.here("cohort train"))
    if stale.boot_id == "an-earlier-boot":
        stale = replace(stale, host="elsewhere")  # judged by its heartbeat: make it silent
        write_hold(run, stale, age_s=3600)
    else:
        write_hold(run, stale)
    with RunHold.acquire(run, "cohort train") as hold:
        assert json.loads((run / HOLD_FILE).read_text())["token"] == hold.holder.token != stale.token
    assert f"took over {run / HOLD_FILE} from cohort train" in capsys.readouterr().err


def test_a_hold_from_another_machine_lives_while_it_beats(tmp_path, capsys):
    run = tmp_path / "run"
    remote = replace(Holder.here("cohort train"), host="node-7", boot_id="other", pids=[[4242, 99]])
    write_hold(run, remote, age_s=5)
    with pytest.raises(RunDirError, match=r"in use by cohort train \(process 4242 on node-7"):
        RunHold.acquire(run, "cohort train")
    os.utime(run / HOLD_FILE, (time.time() - 2 * run_hold.STALE_AFTER_S,) * 2)
    RunHold.acquire(run, "cohort train").release()
    assert "it has not beaten for 1" in capsys.readouterr().err


def test_a_requeued_slurm_job_takes_over_its_earlier_runs_hold(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    earlier = replace(Holder.here("cohort train"), host="node-1", boot_id="other", pids=[[4242, 99]])
    write_hold(run, earlier)  # beating a second ago: only the job id says it is over
    RunHold.acquire(run, "cohort train").release()
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    write_hold(run, earlier)
    with pytest.raises(RunDirError, match="SLURM job 77"):
        RunHold.acquire(run, "cohort train")


def test_workers_join_their_launchers_hold_and_leave_its_removal_to_it(tmp_path):
    run = tmp_path / "run"
    launcher = RunHold.acquire(run, "cohort train")
    with launcher.for_children():
        assert os.environ[HOLD_TOKEN_ENV] == launcher.holder.token
        worker = RunHold.acquire(run, "cohort train")
    assert HOLD_TOKEN_ENV not in os.environ
    assert not worker.owner and len(json.loads((run / HOLD_FILE).read_text())["pids"]) == 2
    worker.release()
    assert (run / HOLD_FILE).is_file()
    launcher.release()
    assert not (run / HOLD_FILE).exists()


def test_the_heartbeat_touches_the_hold_and_says_once_when_it_was_lost(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_hold, "HEARTBEAT_S", 0.05)
    run = tmp_path / "run"
    hold = RunHold.acquire(run, "cohort train")
    os.utime(run / HOLD_FILE, (time.time() - 3600,) * 2)
    deadline = time.monotonic() + 10
    while time.time() - (run / HOLD_FILE).stat().st_mtime > 60:
        assert time.monotonic() < deadline, "the heartbeat never touched the hold"
        time.sleep(0.02)
    other = replace(Holder.here("cohort train"), token="someone-else")
    (run / HOLD_FILE).write_text(json.dumps(asdict(other)))
    hold._beat.join(timeout=10)
    assert not hold._beat.is_alive()
    assert capsys.readouterr().err.count("lost the hold") == 1
    hold.release()
    assert json.loads((run / HOLD_FILE).read_text())["token"] == "someone-else", "not its hold to remove"


def test_an_unreadable_hold_counts_as_a_silent_holder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / HOLD_FILE).write_text("{not json")
    with pytest.raises(RunDirError, match="in use by an unreadable HOLD.json"):
        RunHold.acquire(run, "cohort train")
    os.utime(run / HOLD_FILE, (time.time() - 2 * run_hold.STALE_AFTER_S,) * 2)
    RunHold.acquire(run, "cohort train").release()
    assert list(run.iterdir()) == []
