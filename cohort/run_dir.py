"""The run directory: the contract other tools read.

    RUN_DIR/config.yaml                 the resolved config
    RUN_DIR/metrics.jsonl               one JSON object per member (and "ensemble") per evaluation
    RUN_DIR/predictions/{val,test}.npz  logits float32 [K, N, C], labels int64 [N]
    RUN_DIR/checkpoints/step-NNNNNNNNN/ see cohort.checkpoint (best/: train.select_by's choice)
    RUN_DIR/trace/                      per-step traces (train.trace=true)
    RUN_DIR/submission.json             the SLURM job that trains it (cohort submit)
    RUN_DIR/nodes.json                  which node each rank runs on (cohort.node), rewritten at every start
    RUN_DIR/HOLD.json                   who uses it now (cohort.run_hold), while a run or an eval lives
    RUN_DIR/nodes/<node>.json           each node's marker of the latest start (cohort.shared_fs; jobs on several nodes)

Only global rank 0 writes here, except checkpoint parts and traces (each rank its own) and
the node markers (the first rank of each node).
Every file is written whole or not at all (``replacing``), except the traces and
``metrics.jsonl``, which are appended (``append_metrics``; ``read_metrics`` recovers a torn last line).
A failed write (a full disk) is one line naming the disk and the file (``write_error``); a
malformed file is one line naming it and the fix (``read_json``, ``read_metrics``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

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
from cohort.typed_tree import config_to_dict, dump_config, read_yaml

HOLD_FILE = "HOLD.json"


def is_hold_file(name: str) -> bool:
    """The hold a live run keeps here (``cohort.run_hold``), and its temporary files: not a run's content."""
    return name == HOLD_FILE or name.startswith(f".{HOLD_FILE}.")


class RunDirError(CohortError, RuntimeError):
    """The run directory cannot hold this run; the message names the fix."""


# --- writing: whole files or nothing ------------------------------------------------------

DISK_FULL = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}
"""The errnos of a full disk (or quota), and how the error says it."""

RESUME = "continue with resume=auto"
"""What a training run does once a failed write's cause is fixed (``write_error``'s default)."""


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds ``path`` (or would, once created)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: itself, or one in its chain of causes and contexts.
    ``torch.save`` into a Python file reports a failed write as a RuntimeError ("unexpected
    pos 704 vs 598") whose context is the OSError (ENOSPC) the file raised; into a path, its
    C++ writer keeps no errno at all, so ``cohort.checkpoint.save_part`` passes it a file."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def write_error(path: Path, error: BaseException, then: str = RESUME) -> RunDirError | None:
    """The one-line error for a failed write of ``path`` (a full disk, a quota, a read-only or
    failing disk), or None when no OSError is behind ``error`` (a bug: let it raise). ``then``:
    what to do once the cause is fixed. The rank that writes meets it alone (``shared=False``);
    where every rank takes part in the write, they agree on it first (``cohort.mesh``)."""
    cause = os_error_in(error)
    if cause is None:
        return None
    if cause.errno in DISK_FULL:
        return RunDirError(
            f"{DISK_FULL[cause.errno]} on {mount_point(path)} writing {path}: free space there (or move the run "
            f"directory to a disk with room, run_dir=<there>) and {then}",
            shared=False,
        )
    reason = cause.strerror or type(cause).__name__
    return RunDirError(
        f"cannot write {path} ({reason}): fix that folder or disk (or move the run directory, run_dir=<there>) "
        f"and {then}",
        shared=False,
    )


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a folder's entries are its data). Best effort: some
    file systems cannot open or sync a folder, and then lose nothing a crash of this process
    could; only a machine's crash could undo the rename, never tear the file."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path, mode: str = "w", then: str = RESUME, tmp: Path | None = None) -> Iterator[IO]:
    """A file to write ``path``'s new contents into: a temporary file next to it (``tmp``;
    default ``.<name>.tmp``), synced to the disk and renamed over ``path`` when the block ends.
    A crash, of this process or of the machine, leaves the old file or the new one, never
    half of one (the fsync before the rename: without it a machine's crash may keep the
    rename but lose the data, an empty file under the new name). Any failure removes the
    temporary file; a file-system error (a full disk) is a one-line ``write_error``."""
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        problem = write_error(path, error, then) if isinstance(error, Exception) else None
        if problem is not None:
            raise problem from None
        raise
    sync_folder(path.parent)


@contextmanager
def writing(path: Path, then: str = RESUME) -> Iterator[None]:
    """Turn a file-system error while the block writes ``path`` into a one-line ``write_error``."""
    try:
        yield
    except OSError as error:
        raise write_error(path, error, then) from None


def write_json(path: Path, data: dict, then: str = RESUME, indent: int | None = None) -> None:
    """Write ``data`` as JSON, whole or not at all (``replacing``): a reader never sees half a file."""
    with replacing(path, then=then) as f:
        f.write(json.dumps(data, indent=indent) + "\n")


# --- reading: one line naming the file and the fix ----------------------------------------


def _kind(kinds: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _fits(value, kinds: type | tuple[type, ...]) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):  # JSON's true is no integer
        return bool in kinds
    return isinstance(value, kinds) or (float in kinds and isinstance(value, int))


def read_json(path: Path, fix: str, keys: dict[str, type | tuple[type, ...]] | None = None, what: str = "") -> dict:
    """The JSON object in ``path``, with each of ``keys`` of its type; else a RunDirError of
    one line naming the file (``what`` it holds) and ``fix``: not readable, not UTF-8, not JSON
    (a torn or damaged file), not an object, a key missing or of the wrong type."""
    path = Path(path)
    name = f"{path} ({what})" if what else str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RunDirError(f"{name} is not UTF-8 text, so not the JSON cohort wrote; {fix}") from None
    except OSError as error:
        raise RunDirError(f"cannot read {name} ({error.strerror or type(error).__name__}); {fix}") from None
    if not text.strip():
        raise RunDirError(f"{name} is empty; {fix}")
    try:
        data = json.loads(text)
    except ValueError as error:
        where = f" at line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise RunDirError(f"{name} is not valid JSON{where}; {fix}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{name} must hold a JSON object, not {type(data).__name__}; {fix}")
    for key, kinds in (keys or {}).items():
        if key not in data:
            raise RunDirError(f"{name} has no key {key}; {fix}")
        if not _fits(data[key], kinds):
            shown = repr(data[key])
            shown = shown if len(shown) <= 40 else f"{shown[:40]}..."
            raise RunDirError(f"{name}: {key} must be {_kind(kinds)}, got {shown}; {fix}")
    return data


METRICS_KEYS = {"epoch": int, "split": str, "member": (int, str)}
"""What every row of a ``metrics.jsonl`` holds (and its readers index by)."""


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
        self.nodes_file = self.path / "nodes.json"

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

    CONFIG_FIX = "restore it from the config the run was started with (its overrides applied)"
    """What an error about a run's own config.yaml (which cohort wrote) tells the user to do."""

    def read_config_tree(self) -> dict:
        """The run's config.yaml as a raw tree; a file that is not UTF-8, not YAML or not a
        mapping (damaged: cohort writes it whole, ``dump_config``) is a one-line RunDirError."""
        try:
            raw = read_yaml(self.config_file, ConfigError, empty=self.CONFIG_FIX, fix=self.CONFIG_FIX)
        except ConfigError as error:
            raise RunDirError(str(error)) from None
        if (error := self.format_error(raw)) is not None:
            raise error
        return raw

    def load_config(self, role: str = "") -> CohortConfig:
        """The run's config as the typed tree (for the tools that read a finished run); ``role``:
        what the run is to the caller (``teacher.run_dir``), for the errors to say."""
        self.require_run()
        self.read_config_tree()
        try:
            return load_config(self.config_file)
        except ConfigError as error:  # a key of the wrong type or unknown here: name the file
            message = str(error)
            if str(self.config_file) not in message:
                message = f"{self.config_file}{f' ({role})' if role else ''} is not a valid config: {message}"
            raise RunDirError(message) from None

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
            existing = self.read_config_tree()
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
        """The run's folders and its config.yaml (written whole, ``dump_config``), unless there.
        A failure (a full disk) removes the folders it made: a folder without its config.yaml
        would be refused as "not a cohort run directory" once the disk has room again."""
        folders = (self.path, self.predictions, self.checkpoints)
        made = [folder for folder in folders if not folder.exists()]
        outermost = next((p for p in reversed([self.path, *self.path.parents]) if not p.exists()), None)
        try:
            with writing(self.config_file):
                for folder in folders:
                    folder.mkdir(parents=True, exist_ok=True)
                if not self.config_file.exists():
                    dump_config(config, self.config_file)
        except RunDirError:
            for folder in [outermost] if outermost is not None else reversed(made):
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def append_metrics(self, rows: list[dict]) -> None:
        """Append one evaluation's rows to ``metrics.jsonl``, as whole lines.

        One ``write()`` of every row, then an fsync; a write that fails part-way (a full disk)
        is cut back to the file's size before it, so no torn line stays behind. Yet a line can
        still tear: a process killed inside the write, or a machine's crash, may keep a prefix
        of it (rewriting the whole file through a rename at each evaluation would rule that
        out, at a cost growing with the run). So the readers recover a torn last line
        (``read_metrics``), and the fsync keeps the rows of an epoch on the disk before the
        checkpoint that follows them: a resumed run finds them (it redoes only what its
        checkpoint does not cover, ``drop_metrics_after``). Once per evaluation: cheap."""
        data = memoryview("".join(json.dumps(row) + "\n" for row in rows).encode())
        with writing(self.metrics_file):
            fd = os.open(self.metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                try:
                    while data:  # a short write only where the next one fails (a full disk)
                        data = data[os.write(fd, data) :]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)

    def read_metrics(self, notice: bool = True) -> list[dict]:
        """The rows of ``metrics.jsonl`` (none without it). A torn last line (a crash while it
        was appended, ``append_metrics``) is left out, with one line on stderr saying so
        (``notice``); a malformed line before the last is damage: a one-line RunDirError
        naming the file, the line and the fix."""
        rows, torn = self._read_metrics()
        if torn and notice:
            print(
                f"cohort: {self.metrics_file} ends in a torn line (a crash while it was written); "
                f"reading the rows before it",
                file=sys.stderr,
                flush=True,
            )
        return rows

    def _read_metrics(self) -> tuple[list[dict], bool]:
        """The rows, and whether a torn last line was left out."""
        if not self.metrics_file.exists():
            return [], False
        try:
            data = self.metrics_file.read_bytes()
        except OSError as error:
            raise RunDirError(
                f"cannot read {self.metrics_file} ({error.strerror or type(error).__name__}); make it a readable file"
            ) from None
        lines = [(number, line) for number, line in enumerate(data.split(b"\n"), 1) if line.strip()]
        rows = []
        for index, (number, line) in enumerate(lines):
            try:
                row = json.loads(line)
            except ValueError:  # not UTF-8 or not JSON
                if index == len(lines) - 1:
                    return rows, True
                row = None
            if not isinstance(row, dict) or not all(_fits(row.get(k), kinds) for k, kinds in METRICS_KEYS.items()):
                raise RunDirError(
                    f"{self.metrics_file} line {number} is not a metrics row (a JSON object with "
                    f"{', '.join(METRICS_KEYS)}): the file is damaged; delete that line (the other rows stay)"
                )
            rows.append(row)
        return rows, False

    def drop_metrics_after(self, epoch: int) -> None:
        """Forget evaluations newer than a checkpoint being resumed (they will be redone); the
        file is rewritten whole (``replacing``), without a torn last line if it had one."""
        rows, torn = self._read_metrics()
        with replacing(self.metrics_file) as f:
            f.write("".join(json.dumps(row) + "\n" for row in rows if row["epoch"] <= epoch))
        if torn:
            print(
                f"cohort: {self.metrics_file} ended in a torn line (a crash while it was written); "
                f"rewrote it without that line",
                file=sys.stderr,
                flush=True,
            )

    def save_predictions(self, split: str, logits: np.ndarray, labels: np.ndarray, folder: str = "") -> Path:
        """``predictions/[folder/]split.npz``; ``folder="best"`` holds the selected epoch's."""
        target = self.predictions / folder if folder else self.predictions
        path = target / f"{split}.npz"
        with writing(path):
            target.mkdir(parents=True, exist_ok=True)
        with replacing(path, "wb") as f:
            np.savez(f, logits=logits.astype(np.float32), labels=labels.astype(np.int64))
        return path
