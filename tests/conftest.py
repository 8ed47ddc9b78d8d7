"""Shared fixtures: a real digits data folder and a helper that writes small configs."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    """scikit-learn's digits written as .beton files once per test session."""
    from cohort.data.datasets import write_digits

    root = tmp_path_factory.mktemp("digits")
    write_digits(root)
    return root


@pytest.fixture(scope="session")
def dml_pair(digits_root, tmp_path_factory):
    """A finished K = 2 DML run: 2 epochs × 6 steps, traced, a checkpoint after each epoch,
    selection by validation ensemble NLL. Tests that change it must copy it first."""
    tmp = tmp_path_factory.mktemp("dml_pair")
    config = tiny_config(
        tmp, digits_root, members=2, train={"trace": True, "checkpoint_every": 1, "select_by": "val_ensemble_nll"}
    )
    result = run_torchrun(2, str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    return config, tmp / "run", result


def tiny_config(tmp_path: Path, data_root: Path, members: int | list[dict] = 2, **sections) -> Path:
    """A fast config (small CNN, 16-image batches, few steps) written to ``tmp_path``; ``members``:
    how many small CNNs, or the members' sections."""
    config = {
        "name": "test",
        "seed": 0,
        "run_dir": str(tmp_path / "run"),
        # Each member its own dict: YAML would write one shared dict as an alias, and an override of one would edit all.
        "members": [dict(m) for m in members]
        if isinstance(members, list)
        else [{"arch": "small_cnn", "policy": "crop"} for _ in range(members)],
        "data": {"root": str(data_root), "batch_size": 16, "eval_batch_size": 128, "num_workers": 1},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "constant"},
        "loss": {"mimicry": {"weight": 1.0}},
        "train": {"epochs": 2, "max_steps_per_epoch": 6, "device": "cpu", "threads_per_rank": 1, "dist_timeout_s": 120},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cohort ARGS`` in a subprocess, as a user would (in ``env``, else this environment)."""
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cohort.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli_here(capfd, monkeypatch):
    """``cohort ARGS`` called in this process (``cohort.cli.main``), from the repository as
    ``run_cli`` runs it; returns its exit status and what it printed, as ``run_cli`` does. For
    commands that start no process: a subprocess would add only an interpreter and its
    imports, seconds a call. A command that gets as far as starting workers fails the test
    instead (call it with ``run_cli``). argparse's own refusals exit; their status counts."""
    import cohort.cli
    import cohort.launch.torchrun

    def start_workers(*args, **kwargs):
        raise AssertionError("this command starts workers: run it in a subprocess (run_cli), not cli_here")

    monkeypatch.setattr(cohort.launch.torchrun, "launch_local", start_workers)
    monkeypatch.chdir(REPO)

    def run(*args: str) -> subprocess.CompletedProcess:
        capfd.readouterr()  # what came before is not the command's
        try:
            code = cohort.cli.main(list(args))
        except SystemExit as stop:
            code = stop.code
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["cohort", *args], code, out, err)

    return run


def run_torchrun(nproc: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc-per-node N -m cohort.train ARGS`` in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "cohort.train",
        *args,
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def small_disk_skip_reason() -> str:
    """Why ``on_small_disk`` cannot run here ("" when it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /tmp"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"no user namespace may mount a tmpfs here ({probe.stderr.strip()[:120]})"
    return ""


def on_small_disk(mount: Path, kib: int, command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``command`` (in the repository) with a file system of ``kib`` KiB mounted at the
    folder ``mount``: a tmpfs in a user and mount namespace of its own (``unshare -rm``; no
    privileges needed), so its writes there meet a real full disk (ENOSPC). The tmpfs goes
    with the command: its files are listed after it, one ``left: PATH`` line each, on stdout."""
    script = 'mount -t tmpfs -o size="$1"k none "$2" || exit 99; shift 2; "$@"; rc=$?; '
    script += 'find "$MOUNT" -mindepth 1 | sed "s/^/left: /"; exit $rc'
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MOUNT": str(mount)}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(kib), str(mount), *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def one_rank(config=None):
    """A one-process gloo group (a "single" launch) and its mesh, for in-process tests of the parts
    that take part in collectives (checkpointer, stop signals); torch's thread count is put back."""
    import torch

    from cohort.config import CohortConfig
    from cohort.dist.mesh import detect_launch, join_cohort

    config = config or CohortConfig(members=[CohortConfig().members[0]])
    config.train.device = "cpu"
    threads = torch.get_num_threads()
    mesh = join_cohort(config, detect_launch(env={}))
    try:
        yield mesh
    finally:
        mesh.close()
        torch.set_num_threads(threads)


def train_here(config_path: Path, *overrides: str) -> Path:
    """Train the config's one-member cohort in this process (a "single" launch: a gloo group of
    one), as a worker does (``cohort.train.worker``); its run directory. The trainer's
    stop-signal handlers are put back afterwards: they are pytest's process's."""
    import signal

    import torch

    from cohort.config import load_config
    from cohort.dist.mesh import detect_launch, join_cohort
    from cohort.dist.stopping import STOP_SIGNALS
    from cohort.preflight import plan_run
    from cohort.run.opening import open_run
    from cohort.train.trainer import Trainer

    config = load_config(str(config_path), list(overrides))
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    threads = torch.get_num_threads()
    mesh = join_cohort(config, detect_launch(env={}))
    hold = None
    try:
        plan = plan_run(config)
        trainer = Trainer(plan, mesh)
        hold = open_run(plan, mesh)
        trainer.fit()
    finally:
        if hold is not None:
            hold.release()
        mesh.close()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        torch.set_num_threads(threads)
    return Path(config.run_dir)


def signal_while_reading(process: subprocess.Popen, fifo: Path, signum: int) -> tuple[str, str]:
    """Send ``signum`` to ``process`` while it blocks reading ``fifo`` (its config, made with
    ``os.mkfifo``), so that the signal lands inside that read for certain; its stdout and stderr."""
    deadline = time.monotonic() + 120
    while True:  # a writer can open the FIFO only once the process opened it to read
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:
            assert error.errno == errno.ENXIO and time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
    try:
        time.sleep(0.2)  # into its read(), which waits for the config's text
        process.send_signal(signum)
        return process.communicate(timeout=60)
    finally:
        os.close(writer)
