"""The run directory: the contract other tools read, every file a run leaves named once, here.

    RUN_DIR/config.yaml                 the resolved config (``config_file``)
    RUN_DIR/metrics.jsonl               one JSON object per member (and "ensemble") per evaluation
    RUN_DIR/predictions/{val,test}.npz  logits float32 [K, N, C], labels int64 [N], of the latest evaluation
    RUN_DIR/predictions/best/           the same at the epoch train.select_by chose
    RUN_DIR/checkpoints/step-NNNNNNNNN/ complete checkpoints (``cohort.run.checkpoint_files``); best/: the chosen one
    RUN_DIR/selection.json              the epoch train.select_by chose (``cohort.run.selection``)
    RUN_DIR/teacher_plan.json           the teachers a student distils, fixed at its first start
    RUN_DIR/teacher_metrics.json        those teachers' metrics on val and test, for reports
    RUN_DIR/tensorboard/                TensorBoard scalars (when tensorboard is installed)
    RUN_DIR/tracking.json               the tracked runs (W&B, MLflow) this run writes to (``cohort.run.tracking``)
    RUN_DIR/wandb/                      W&B's files (track.wandb; offline: wandb sync RUN_DIR/wandb/offline-run-*)
    RUN_DIR/mlruns/                     MLflow's file store when track.mlflow names no tracking_uri
    RUN_DIR/trace/                      per-step traces (train.trace=true)
    RUN_DIR/submission.json             the SLURM job that trains it (cohort submit)
    RUN_DIR/slurm/                      cohort submit: submitit's job files and per-task logs
    RUN_DIR/nodes.json                  which node each rank runs on (``cohort.dist.node``), rewritten at every start
    RUN_DIR/nodes/<node>.json           each node's marker of the latest start (``cohort.run.shared_fs``)
    RUN_DIR/HOLD.json                   who uses it now (``cohort.run.hold``), while a run or an eval lives
    RUN_DIR/stalled.json                attempts a time limit stopped before a step (``cohort.run.attempts``)
    RUN_DIR/eval/<checkpoint>/          cohort eval: metrics.jsonl, predictions/, source.yaml
    RUN_DIR/report.md, *.png            cohort report (and training's end, with track: on): the table and figures

Predictions are written and read by ``cohort.run.predictions``.
Runs written before the teachers' two files got distinct names hold ``teacher.json`` and
``teachers.json``; they are still read (``readable``).
Only global rank 0 writes here, except checkpoint parts and traces (each rank its own) and
the node markers (the first rank of each node).
Every file is written whole or not at all (``cohort.run.files.replacing``), except the traces
and ``metrics.jsonl``, which are appended (``append_metrics``; ``read_metrics`` recovers a torn
last line). A failed write (a full disk) is one line naming the disk and the file; a
malformed file is one line naming it and the fix (``read_json``, ``read_metrics``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from cohort.config import (
    MOVED_KEYS,
    CohortConfig,
    ConfigError,
    config_to_dict,
    dump_config,
    first_difference,
    load_config,
    moved_key,
    read_yaml,
    same_run_config,
)
from cohort.run.files import RESUME, RunDirError, fits, make_folder, replacing, writing
from cohort.run.predictions import write_predictions

HOLD_FILE = "HOLD.json"


def is_hold_file(name: str) -> bool:
    """The hold a live run keeps here (``cohort.run.hold``), and its temporary files: not a run's content."""
    return name == HOLD_FILE or name.startswith(f".{HOLD_FILE}.")


METRICS_KEYS = {"epoch": int, "split": str, "member": (int, str)}
"""What every row of a ``metrics.jsonl`` holds (and its readers index by)."""


LEGACY_NAMES = {"teacher_plan.json": "teacher.json", "teacher_metrics.json": "teachers.json"}
"""The names an earlier cohort gave two files (one letter apart), still read (``RunDir.readable``)."""


class RunDir:
    """A run's folder and every file in it: one property per file, the only place that names them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- the contract ---------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def predictions(self) -> Path:
        """``predictions/``: the latest evaluation's ``{val,test}.npz``; ``best/``: the selected epoch's."""
        return self.path / "predictions"

    def prediction_file(self, split: str, best: bool = False) -> Path:
        return self.predictions / ("best" if best else "") / f"{split}.npz"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def selection_file(self) -> Path:
        return self.path / "selection.json"

    @property
    def teacher_plan_file(self) -> Path:
        return self.path / "teacher_plan.json"

    @property
    def teacher_metrics_file(self) -> Path:
        return self.path / "teacher_metrics.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def tracking_file(self) -> Path:
        return self.path / "tracking.json"

    @property
    def wandb(self) -> Path:
        """W&B's folder: ``offline-run-<time>-<id>/`` per start of the run (``wandb.init(dir=RUN_DIR)``)."""
        return self.path / "wandb"

    @property
    def mlruns(self) -> Path:
        """MLflow's file store when ``track.mlflow.tracking_uri`` is empty."""
        return self.path / "mlruns"

    @property
    def trace(self) -> Path:
        return self.path / "trace"

    @property
    def submission_file(self) -> Path:
        return self.path / "submission.json"

    @property
    def nodes_file(self) -> Path:
        return self.path / "nodes.json"

    def node_marker(self, node: str) -> Path:
        return self.path / "nodes" / f"{node}.json"

    @property
    def slurm_logs(self) -> Path:
        """``cohort submit``: submitit's job files and per-task logs (a job array's: beside its seeds' runs)."""
        return self.path / "slurm"

    @property
    def hold_file(self) -> Path:
        return self.path / HOLD_FILE

    @property
    def stalled_file(self) -> Path:
        return self.path / "stalled.json"

    def evaluation(self, checkpoint: str) -> RunDir:
        """``eval/<checkpoint>/``: ``cohort eval``'s files, laid out as a run's (metrics, predictions)."""
        return RunDir(self.path / "eval" / checkpoint)

    @property
    def source_file(self) -> Path:
        """In an evaluation's folder: which checkpoint, split and data it read."""
        return self.path / "source.yaml"

    @property
    def report_file(self) -> Path:
        return self.path / "report.md"

    def figure(self, name: str) -> Path:
        """``cohort report``'s figures: ``reliability``, ``curves``, ``ensemble_size``."""
        return self.path / f"{name}.png"

    def readable(self, path: Path) -> Path:
        """``path``, or the file an earlier cohort wrote under its old name where only that exists."""
        old = path.with_name(LEGACY_NAMES.get(path.name, path.name))
        return old if not path.exists() and old.exists() else path

    # --- the run's life -------------------------------------------------------------------

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
                    f"({first_difference(existing, config_to_dict(config))}); choose another run_dir="
                )
            for folder in (self.checkpoints, self.predictions):  # a run's folders, which it writes into
                if folder.exists() and not folder.is_dir():
                    raise RunDirError(
                        f"{folder} is a file, not a folder: {self.path} cannot be resumed; move that file away "
                        f"(the run writes its {folder.name} there), or choose another run_dir="
                    )
        elif self.path.exists() and (
            not self.path.is_dir() or any(not is_hold_file(p.name) for p in self.path.iterdir())
        ):
            raise RunDirError(f"{self.path} exists and is not a cohort run directory; choose another run_dir=")
        # Proved by creating it (and removing what was made): a file on the way, a symlink loop,
        # /proc or a read-only disk would otherwise fail at mkdir, in the launcher or every rank.
        make_folder(self.path, "run_dir", "choose another run_dir=", keep=False)
        return continues

    def create(self, config: CohortConfig) -> None:
        """The run's folders and its config.yaml (written whole, ``dump_config``), unless there.
        A failure (a full disk) removes the folders it made: a folder without its config.yaml
        would be refused as "not a cohort run directory" once the disk has room again."""
        folders = (self.path, self.predictions, self.checkpoints)
        made = [folder for folder in folders if not folder.exists()]
        outermost = next((p for p in reversed([self.path, *self.path.parents]) if not p.exists()), None)
        try:
            for folder in folders:  # a folder that cannot be made is named (not the config beside it)
                make_folder(folder, "the run's folder", f"move it away or fix that disk, and {RESUME}")
            with writing(self.config_file):
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
            if not isinstance(row, dict) or not all(fits(row.get(k), kinds) for k, kinds in METRICS_KEYS.items()):
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
        return write_predictions(self.predictions / folder / f"{split}.npz", logits, labels)
