"""Checkpoints and the run's other files when a write fails: a full disk (a real one, a small
tmpfs) is one line naming it and the file, and leaves neither a temporary file nor a torn one."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from cohort.run import checkpoint_files
from tests.conftest import on_small_disk, small_disk_skip_reason

FULL_DISK = r"""
import json, os, sys
from pathlib import Path

import numpy as np
import torch

from cohort.run import checkpoint_files
from cohort.config import load_config
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, write_json

disk = Path(sys.argv[1])
run = RunDir(disk / "run")
said = {}


def attempt(name, write):
    try:
        write()
        said[name] = "written"
    except RunDirError as error:
        said[name] = str(error)


# 64 KiB: room for the small files, not for a part of 4 MB.
step = checkpoint_files.checkpoint_dir(run.path, 3)
attempt("part", lambda: checkpoint_files.save_part(step, 0, {"model": torch.zeros(1_000_000)}))
rows = [{"epoch": 0, "split": "val", "member": 0, "acc": 0.5}]
run.append_metrics(rows)
write_json(run.path / "selection.json", {"select_by": "val_ensemble_nll", "epoch": 0, "value": 1.0})
(step / "member-0.pt").touch()

# Then the disk fills up (to its last page).
fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
try:
    while os.write(fd, b"\0" * 4096):
        pass
except OSError:
    pass
os.close(fd)

attempt("metrics", lambda: run.append_metrics(rows * 200))  # fills the page it has, then fails
said["metrics after"] = run.read_metrics()
attempt("selection", lambda: write_json(run.path / "selection.json", {"select_by": "x", "epoch": 1, "value": 0.5}))
said["selection after"] = json.loads((run.path / "selection.json").read_text())["epoch"]
attempt("marker", lambda: checkpoint_files.mark_complete(step, 1, {"epoch": 1, "batch": 0, "step": 3}))
attempt("predictions", lambda: run.save_predictions("val", np.zeros((2, 100, 10)), np.zeros(100)))
config = load_config("configs/demo.yaml", [f"run_dir={disk / 'new' / 'run'}"])
attempt("new run", lambda: RunDir(config.run_dir).create(config))
print(json.dumps(said))
"""


@pytest.mark.skipif(bool(small_disk_skip_reason()), reason=small_disk_skip_reason() or "-")
def test_a_full_disk_is_one_line_naming_it_and_leaves_no_temporary_or_torn_file(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    result = on_small_disk(disk, 64, [sys.executable, "-c", FULL_DISK, str(disk)])
    assert result.returncode == 0, result.stderr[-3000:]
    said = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    run, step = disk / "run", disk / "run" / "checkpoints" / "step-000000003"
    fix = "free space there (or move the run directory to a disk with room, run_dir=<there>) and "
    fix += "continue with resume=auto"
    # torch itself says only "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    assert said["part"] == f"no space left on {disk} writing {step}/member-0.pt: {fix}"
    assert said["metrics"] == f"no space left on {disk} writing {run}/metrics.jsonl: {fix}"
    assert said["metrics after"] == [{"epoch": 0, "split": "val", "member": 0, "acc": 0.5}]  # cut back: no torn line
    assert said["selection"] == f"no space left on {disk} writing {run}/selection.json: {fix}"
    assert said["selection after"] == 0  # the old file, whole
    assert said["marker"] == f"no space left on {disk} writing {step}/{checkpoint_files.MARKER}: {fix}"
    assert said["predictions"] == f"no space left on {disk} writing {run}/predictions/val.npz: {fix}"
    assert said["new run"] == f"no space left on {disk} writing {disk}/new/run/config.yaml: {fix}"
    left = sorted(
        line.removeprefix(f"left: {disk}/") for line in result.stdout.splitlines() if line.startswith("left:")
    )
    # No temporary file, no part, no marker, and no new run folder without its config.yaml.
    assert left == [
        "filler",
        "run",
        "run/checkpoints",
        "run/checkpoints/step-000000003",
        "run/checkpoints/step-000000003/member-0.pt",  # the empty file the script touched
        "run/metrics.jsonl",
        "run/predictions",
        "run/selection.json",
    ], result.stdout


def test_a_part_that_fails_to_save_leaves_the_previous_one_and_no_temporary_file(tmp_path):
    folder = checkpoint_files.checkpoint_dir(tmp_path, 3)
    saved = checkpoint_files.save_part(folder, 0, {"model": torch.arange(4.0)})
    before = saved.read_bytes()
    with pytest.raises(AttributeError, match="local object"):  # pickle cannot save a local function
        checkpoint_files.save_part(folder, 0, {"model": torch.arange(8.0), "hook": lambda: None})
    assert sorted(p.name for p in folder.iterdir()) == ["member-0.pt"] and saved.read_bytes() == before
