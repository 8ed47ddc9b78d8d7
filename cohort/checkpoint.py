"""Checkpoints that count only when complete.

    RUN_DIR/checkpoints/epoch-NNNN/member-<m>.pt    one part per member (replica 0 writes it)
    RUN_DIR/checkpoints/epoch-NNNN/COMPLETE.json    written by rank 0 after every part exists

Parts are keyed by member id, not rank: a restarted job may number its ranks differently.
Each part is written to a temporary name and renamed, so a crash never leaves a torn file;
a folder without its marker is ignored by ``latest_complete``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from cohort.run_dir import RunDirError

MARKER = "COMPLETE.json"


def checkpoint_dir(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch:04d}"


def best_dir(run_dir: Path) -> Path:
    """The checkpoint of the epoch chosen by ``train.select_by`` (rewritten when it improves)."""
    return Path(run_dir) / "checkpoints" / "best"


def unmark(folder: Path) -> None:
    """Make a checkpoint folder incomplete before its parts are rewritten."""
    (folder / MARKER).unlink(missing_ok=True)


def save_part(folder: Path, member: int, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path, tmp = folder / f"member-{member}.pt", folder / f".member-{member}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def mark_complete(folder: Path, members: int, info: dict) -> None:
    """Write the marker; call only after every member's part is saved (after a barrier)."""
    missing = [m for m in range(members) if not (folder / f"member-{m}.pt").is_file()]
    if missing:
        raise RuntimeError(f"checkpoint {folder} lacks the parts of members {missing}")
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"members": members, **info}))
    os.replace(tmp, folder / MARKER)


def latest_complete(run_dir: Path) -> Path | None:
    """The newest checkpoint folder that has its marker, or None."""
    root = Path(run_dir) / "checkpoints"
    complete = sorted(d for d in root.glob("epoch-*") if (d / MARKER).is_file()) if root.is_dir() else []
    return complete[-1] if complete else None


def load_part(folder: Path, member: int, device: torch.device) -> dict:
    path = folder / f"member-{member}.pt"
    if not path.is_file():
        raise RunDirError(f"{path} is missing from a checkpoint marked complete; delete {folder} to resume from an earlier one")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch/pickle raise many kinds for a damaged file; name the file instead
        raise RunDirError(f"{path} cannot be read ({type(error).__name__}); "
                          f"delete {folder} to resume from an earlier one") from None
    if not isinstance(state, dict):
        raise RunDirError(f"{path} is not a cohort checkpoint part; delete {folder} to resume from an earlier one")
    return state
