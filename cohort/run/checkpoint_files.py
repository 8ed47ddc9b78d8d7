"""Checkpoints that count only when complete.

    RUN_DIR/checkpoints/step-NNNNNNNNN/member-<m>.pt   one part per member (replica 0 writes it)
    RUN_DIR/checkpoints/step-NNNNNNNNN/COMPLETE.json   written by rank 0 after every part exists

A folder is named by the optimiser steps taken; its marker holds the position to continue
from (epoch, batch within it).
Parts are keyed by member id, not rank: a restarted job may number its ranks differently.
Each part and the marker are written to a temporary name, synced and renamed
(``cohort.run.directory.replacing``), so a crash never leaves a torn file; a folder without its
marker is ignored by ``latest_complete``. A write that fails (a full disk) removes its
temporary file and is a one-line RunDirError naming the disk and the file.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, read_json, replacing, write_error, write_json

MARKER = "COMPLETE.json"

MARKER_KEYS = {"members": int, "epoch": int, "batch": int, "step": int}
"""What a marker holds: the member count, and the position to continue from."""


STEP_DIGITS = 9
"""A checkpoint folder's step count, in digits (``step-NNNNNNNNN``): the folders sort as text,
so a run's steps must stay below 10 ** 9 (``cohort.preflight.check_run_length``)."""


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return RunDir(run_dir).checkpoints / f"step-{step:0{STEP_DIGITS}d}"


def best_dir(run_dir: Path) -> Path:
    """The checkpoint of the epoch chosen by ``train.select_by`` (rewritten when it improves)."""
    return RunDir(run_dir).checkpoints / "best"


def unmark(folder: Path) -> None:
    """Make a checkpoint folder incomplete before its parts are rewritten."""
    (folder / MARKER).unlink(missing_ok=True)


def save_part(folder: Path, member: int, state: dict) -> Path:
    """Member ``member``'s part of checkpoint ``folder``, written whole or not at all: any
    failure removes its temporary file, and a file-system error (a full disk, where torch
    itself says only "unexpected pos 64 vs 0") is a one-line RunDirError naming the disk."""
    import torch  # here, not above: the teachers' check reads markers before torch is imported

    path = folder / f"member-{member}.pt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    # Into a Python file, not a path: a failed write then keeps its errno (``os_error_in``).
    with replacing(path, "wb", tmp=folder / f".member-{member}.pt.tmp") as f:
        torch.save(state, f)
        # Fault injection for the tests: hold the written-but-unrenamed part long enough for a
        # test to kill this process mid-checkpoint. Unset in normal use.
        time.sleep(float(os.environ.get("COHORT_TEST_PAUSE_BEFORE_RENAME_S", "0")))
    return path


def mark_complete(folder: Path, members: int, info: dict) -> None:
    """Write the marker; call only after every member's part is saved (after a barrier)."""
    missing = [m for m in range(members) if not (folder / f"member-{m}.pt").is_file()]
    if missing:
        raise RuntimeError(f"checkpoint {folder} lacks the parts of members {missing}")
    write_json(folder / MARKER, {"members": members, **info})


def damaged(folder: Path) -> str:
    """The fix for a damaged checkpoint ``folder``."""
    if folder.name == "best":
        return f"delete {folder} and use another checkpoint (last, or a step-* folder)"
    return f"delete {folder} to resume from an earlier one"


def read_marker(folder: Path) -> dict:
    """The marker of a complete checkpoint ``folder``: the member count and the position to
    continue from. A malformed one is a one-line RunDirError naming it and ``damaged``'s fix."""
    return read_json(Path(folder) / MARKER, f"the checkpoint is damaged; {damaged(Path(folder))}", MARKER_KEYS)


def latest_complete(run_dir: Path) -> Path | None:
    """The newest checkpoint folder that has its marker, or None.

    Its marker is read: a malformed one is a RunDirError ("delete the folder to resume from
    an earlier one"), not a reason to fall back silently. A marker is written whole through
    a rename after an fsync (``mark_complete``), so no crash tears one; a malformed marker is
    damage (a failing disk, a hand edit), which a user should see before training goes on
    from an older checkpoint and overwrites the newer one. Deleting the folder is that choice."""
    root = RunDir(run_dir).checkpoints
    complete = sorted(d for d in root.glob("step-*") if (d / MARKER).is_file()) if root.is_dir() else []
    if not complete:
        return None
    read_marker(complete[-1])
    return complete[-1]


def position(marker: dict) -> str:
    """Where a checkpoint's marker says training continues from, in words."""
    if marker["batch"]:
        return f"epoch {marker['epoch'] + 1}, batch {marker['batch']}"
    return f"end of epoch {marker['epoch']}"


def finished(run_dir: Path, epochs: int) -> bool:
    """Whether the run in ``run_dir`` trained all its ``epochs``: its newest complete checkpoint
    is the one saved after the last epoch (its marker's position is (epochs, batch 0); training
    always saves there, ``cohort.train.checkpointer``). The one definition of a finished run:
    ``cohort status``, ``cohort study`` (which trains what has not) and a student's teachers
    (``cohort.run.teacher_run``) read it."""
    newest = latest_complete(run_dir)
    return newest is not None and read_marker(newest)["epoch"] >= epochs


def prune(run_dir: Path, keep_last: int) -> None:
    """Remove step folders older than the newest ``keep_last`` complete ones (0: keep all).

    Runs after a newer checkpoint is complete, so a crash here never leaves no checkpoint.
    """
    root = RunDir(run_dir).checkpoints
    folders = sorted(root.glob("step-*"))
    complete = [d for d in folders if (d / MARKER).is_file()]
    if keep_last < 1 or len(complete) <= keep_last:
        return
    oldest_kept = complete[-keep_last]
    for folder in folders:
        if folder < oldest_kept:
            shutil.rmtree(folder, ignore_errors=True)


def load_part(folder: Path, member: int, device, mmap: bool = False) -> dict:
    """Member ``member``'s part of checkpoint ``folder``, on ``device``; ``mmap``: map the file and
    read only the tensors the caller touches (a peer's part, of which one entry is wanted)."""
    import torch

    path = folder / f"member-{member}.pt"
    if not path.is_file():
        raise RunDirError(
            f"{path} is missing from a checkpoint marked complete; delete {folder} to resume from an earlier one"
        )
    try:
        state = torch.load(path, map_location=device, weights_only=False, mmap=mmap)
    except Exception as error:  # torch/pickle raise many kinds for a damaged file; name the file instead
        raise RunDirError(
            f"{path} cannot be read ({type(error).__name__}); delete {folder} to resume from an earlier one"
        ) from None
    if not isinstance(state, dict):
        raise RunDirError(f"{path} is not a cohort checkpoint part; delete {folder} to resume from an earlier one")
    return state


def weights_epoch(folder: Path) -> int:
    """The epoch whose weights a complete checkpoint holds. Its marker holds the position to
    continue from: at a batch boundary of 0, the epoch before it is the one these weights end."""
    marker = read_marker(folder)
    return marker["epoch"] - 1 if marker["batch"] == 0 else marker["epoch"]


def load_model(
    folder: Path,
    member: int,
    arch: str,
    meta: dict,
    device,
    *,
    blurpool: bool = False,
    batch_ensemble: int = 1,
    whose: str = "the config",
    fix: str,
):
    """Member ``member``'s network from checkpoint ``folder``, on ``device``, in eval mode
    (``cohort eval`` and a student's teachers). A part that holds another architecture than
    ``arch`` is a RunDirError naming both and ``fix``."""
    from cohort.models import build_model

    state = load_part(folder, member, device)
    if state.get("arch") != arch:
        raise RunDirError(f"{folder}/member-{member}.pt holds a {state.get('arch')}, but {whose} says {arch}; {fix}")
    model = build_model(
        arch, meta["num_classes"], meta["mean"], meta["std"], blurpool=blurpool, batch_ensemble=batch_ensemble
    ).to(device)
    model.load_state_dict(state["model"])  # with the input scaling it trained with (data.normalize)
    return model.eval()
