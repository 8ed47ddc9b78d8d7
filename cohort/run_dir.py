"""The run directory: the contract other tools read.

    RUN_DIR/config.yaml                 the resolved config
    RUN_DIR/metrics.jsonl               one JSON object per member (and "ensemble") per evaluation
    RUN_DIR/predictions/{val,test}.npz  logits float32 [K, N, C], labels int64 [N]
    RUN_DIR/checkpoints/step-NNNNNNNNN/ see cohort.checkpoint (best/: train.select_by's choice)
    RUN_DIR/trace/                      per-step traces (train.trace=true)
    RUN_DIR/submission.json             the SLURM job that trains it (cohort submit)
    RUN_DIR/HOLD.json                   who uses it now (cohort.run_hold), while a run or an eval lives

Only global rank 0 writes here, except checkpoint parts and traces (each rank its own).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml

from cohort.config import (
    MOVED_KEYS,
    RUN_NEUTRAL_KEYS,
    CohortConfig,
    ConfigError,
    load_config,
    moved_key,
    same_run_config,
)
from cohort.errors import CohortError
from cohort.typed_tree import config_to_dict, dump_config

HOLD_FILE = "HOLD.json"


def is_hold_file(name: str) -> bool:
    """The hold a live run keeps here (``cohort.run_hold``), and its temporary files: not a run's content."""
    return name == HOLD_FILE or name.startswith(f".{HOLD_FILE}.")


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (a temporary file, then a rename): a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


class RunDirError(CohortError, RuntimeError):
    """The run directory cannot hold this run; the message names the fix."""


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in RUN_NEUTRAL_KEYS and a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}.{i}")
    return f"{path}: {a!r} there, {b!r} here"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / "config.yaml"
        self.metrics_file = self.path / "metrics.jsonl"
        self.predictions = self.path / "predictions"
        self.checkpoints = self.path / "checkpoints"
        self.trace = self.path / "trace"
        self.submission_file = self.path / "submission.json"

    def require_run(self) -> None:
        """Raise unless this folder holds a run (its config.yaml), for the tools that read one."""
        if not self.config_file.is_file():
            raise RunDirError(
                f"{self.config_file} is missing: {self.path} is not a cohort run directory; "
                f"pass a folder that `cohort train` wrote (its run_dir)"
            )

    def format_error(self, raw: dict) -> RunDirError | None:
        """The error for a config.yaml of config format 1 (written before the objective's terms
        moved under ``loss:``), or None."""
        old = moved_key(raw)
        if old is None:
            return None
        return RunDirError(
            f"{self.config_file} is a config of format 1 (it has {old}:, now {MOVED_KEYS[old]}), "
            f"written by an earlier cohort; move those keys under loss: to read this run, and "
            f"finish training it with the version that started it"
        )

    def load_config(self) -> CohortConfig:
        """The run's config as the typed tree (for the tools that read a finished run)."""
        self.require_run()
        error = self.format_error(yaml.safe_load(self.config_file.read_text()) or {})
        if error is not None:
            raise error
        return load_config(self.config_file)

    def check(self, config: CohortConfig) -> bool:
        """Raise unless this run may start (or continue, with resume=auto) here; True when the
        folder already holds this run (it continues), False when the run is new. Writes nothing."""

        # A folder name past the file system's limit (os.pathconf's PC_NAME_MAX, 255 bytes on
        # most), or a path past PC_PATH_MAX, fails every stat below with ENAMETOOLONG: named
        # here, each part against the limit of the deepest folder of the path that exists.
        def limit_of(folder: Path, name: str, default: int) -> int:
            try:
                return os.pathconf(folder, name)
            except (OSError, ValueError):  # the system does not say
                return default

        def cut(text: str, keep: int) -> str:
            return text if len(text) <= keep else f"{text[:keep]}..."

        room = 128  # below PC_PATH_MAX, for the files written inside (checkpoints/step-NNNNNNNNN/...)
        where, found = Path(self.path.anchor or "."), True
        for part in self.path.parts[1 if self.path.anchor else 0 :]:
            size, limit = len(os.fsencode(part)), limit_of(where, "PC_NAME_MAX", 255)
            if size > limit:
                raise RunDirError(
                    f"run_dir {cut(str(self.path), 60)}: its folder name {cut(part, 24)} is {size} bytes, longer "
                    f"than the file system allows ({limit}); choose a shorter run_dir="
                )
            found = found and (where / part).is_dir()
            where = where / part if found else where
        size, limit = len(os.fsencode(os.path.abspath(self.path))), limit_of(where, "PC_PATH_MAX", 4096)
        if size + room > limit:
            raise RunDirError(
                f"run_dir {cut(str(self.path), 60)} is {size} bytes long; the file system allows paths of "
                f"{limit}, less {room} for its files; choose a shorter run_dir="
            )
        continues = self.config_file.is_file()
        if continues:
            if config.resume == "never":
                raise RunDirError(
                    f"{self.path} already holds a run; pass resume=auto to continue it, or run_dir=<a new folder>"
                )
            existing = yaml.safe_load(self.config_file.read_text())
            if (error := self.format_error(existing)) is not None:
                raise error
            try:  # read back through today's config: keys added since then take their defaults
                existing = config_to_dict(load_config(self.config_file))
            except ConfigError:
                pass  # compared as written: the first difference names the key
            if not same_run_config(existing, config_to_dict(config)):
                raise RunDirError(
                    f"{self.path} holds a run of a different config "
                    f"({_first_difference(existing, config_to_dict(config))}); choose another run_dir="
                )
        elif self.path.exists() and (
            not self.path.is_dir() or any(not is_hold_file(p.name) for p in self.path.iterdir())
        ):
            raise RunDirError(f"{self.path} exists and is not a cohort run directory; choose another run_dir=")
        parent = self.path if self.path.exists() else next(p for p in self.path.parents if p.exists())
        # A file on the way (run_dir=notes.txt/run) would only fail at mkdir, in every rank;
        # os.access alone does not see it, and lets root write anywhere.
        if not parent.is_dir():
            raise RunDirError(f"cannot create {self.path}: {parent} is a file, not a folder; choose another run_dir=")
        if not os.access(parent, os.W_OK):
            raise RunDirError(f"cannot write into {parent}; choose a writable run_dir=")
        return continues

    def create(self, config: CohortConfig) -> None:
        for folder in (self.path, self.predictions, self.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.config_file.exists():
            dump_config(config, self.config_file)

    def append_metrics(self, rows: list[dict]) -> None:
        with open(self.metrics_file, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def drop_metrics_after(self, epoch: int) -> None:
        """Forget evaluations newer than a checkpoint being resumed (they will be redone)."""
        kept = [row for row in self.read_metrics() if row["epoch"] <= epoch]
        tmp = self.metrics_file.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(self.metrics_file)

    def save_predictions(self, split: str, logits: np.ndarray, labels: np.ndarray, folder: str = "") -> Path:
        """``predictions/[folder/]split.npz``; ``folder="best"`` holds the selected epoch's."""
        target = self.predictions / folder if folder else self.predictions
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{split}.npz"
        tmp = target / f".{split}.tmp.npz"
        np.savez(tmp, logits=logits.astype(np.float32), labels=labels.astype(np.int64))
        tmp.replace(path)
        return path
