"""A catalogue of bad inputs, each run through the real CLI (or the bare torchrun launcher).

Every case builds one bad situation in its own temporary folder, from the real digits data
and, where it needs a finished run, a copy of the ``dml_pair`` run. The command must then
fail with exactly one ``cohort: error: ...`` line on stderr that names the culprit (a key,
a file or a value) and says the fix, without a Python traceback; it must leave no run
directory behind where none existed, and leave an existing folder byte-for-byte as it was.

Most cases fail before any worker starts, and call ``cohort.cli.main`` in this process (its
stderr and exit status captured): a ``cohort`` subprocess would only add an interpreter and
its imports, seconds a case. The cases in ``IN_A_SUBPROCESS`` run ``cohort`` as a user
would: those that the workers find, and one of each command, so that the command line
itself stays tested.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from cohort.run.directory import HOLD_FILE
from cohort.run.hold import Holder, create_whole
from tests.conftest import run_cli, run_torchrun, tiny_config

pytestmark = pytest.mark.multiprocess

ERROR = "cohort: error:"


@dataclass
class Situation:
    """What a case built: the command to run, the folder it must not create or change, and
    the paths its error message should mention (by the names its templates use)."""

    args: list[str]
    run_dir: Path
    torchrun: int = 0
    """Start ``torchrun --nproc-per-node N -m cohort.train ARGS``; 0: run ``cohort ARGS``."""
    paths: dict[str, Path] = field(default_factory=dict)


class Bench:
    """A case's materials. Fixtures are fetched on demand, so that selecting a few cases
    with ``-k`` does not train the ``dml_pair`` run unless one of them needs it."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest):
        self.tmp, self.request = tmp, request

    @property
    def digits(self) -> Path:
        return self.request.getfixturevalue("digits_root")

    def config(self, members: int = 2, data_root: Path | None = None, **sections) -> Path:
        return tiny_config(self.tmp, data_root or self.digits, members=members, **sections)

    def train(self, *overrides: str, members: int = 2, **sections) -> Situation:
        """``cohort train`` of a tiny config (run_dir ``tmp/run``) with these overrides."""
        return Situation(["train", str(self.config(members, **sections)), *overrides], self.tmp / "run")

    def data_copy(self) -> Path:
        data = self.tmp / "data"
        shutil.copytree(self.digits, data)
        return data

    def train_on(self, data: Path, torchrun: int = 0) -> Situation:
        config = str(self.config(data_root=data))
        args = [config] if torchrun else ["train", config]
        return Situation(args, self.tmp / "run", torchrun=torchrun, paths={"data": data})

    def run_copy(self) -> tuple[Path, Path]:
        """(config, a copy of the finished dml_pair run): 2 members, 2 epochs, checkpoints of both."""
        config, run, _ = self.request.getfixturevalue("dml_pair")
        copy = self.tmp / "existing"
        shutil.copytree(run, copy)
        return config, copy

    def on_run_copy(self, *overrides: str) -> Situation:
        """``cohort train`` of the dml_pair config aimed at a copy of its run."""
        config, run = self.run_copy()
        return Situation(["train", str(config), f"run_dir={run}", *overrides], run)

    def folder_that_is_not_a_run(self) -> Path:
        folder = self.tmp / "notes"
        folder.mkdir()
        (folder / "todo.txt").write_text("not a run\n")
        return folder


# --- the builders that need more than a config and overrides -----------------------------------


def tracker_package_missing(b: Bench) -> Situation:
    # None in sys.modules is Python's own way to make an import fail (importlib's find_spec then
    # finds nothing): the wandb the dev install brings is hidden for this case alone.
    b.request.getfixturevalue("monkeypatch").setitem(sys.modules, "wandb", None)
    return b.train("track.wandb.project=cohort")


def mlflow_server_that_never_answers(b: Bench) -> Situation:
    # A socket that listens and never answers: the connection is made, the request times out.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    b.request.addfinalizer(server.close)
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    return Situation(b.train(f"track.mlflow.tracking_uri={uri}").args, b.tmp / "run", paths={"uri": uri})


def malformed_yaml(b: Bench) -> Situation:
    config = b.config()
    config.write_text(config.read_text() + "optim: {lr: 0.1\n")  # the mapping is never closed
    return Situation(["train", str(config)], b.tmp / "run", paths={"config": config})


def missing_config_file(b: Bench) -> Situation:
    return Situation(["train", str(b.tmp / "nope.yaml")], b.tmp / "run")


def missing_beton(b: Bench) -> Situation:
    data = b.data_copy()
    (data / "val.beton").unlink()
    return b.train_on(data)


def truncated_beton(b: Bench, torchrun: int = 0) -> Situation:
    data = b.data_copy()
    beton = data / "train.beton"
    os.truncate(beton, beton.stat().st_size // 2)
    return b.train_on(data, torchrun)


def edited_meta(**changes) -> Callable[[Bench], Situation]:
    def build(b: Bench) -> Situation:
        data = b.data_copy()
        meta = json.loads((data / "meta.json").read_text())
        (data / "meta.json").write_text(json.dumps({**meta, **changes}))
        return b.train_on(data)

    return build


def corrupt_meta(b: Bench) -> Situation:
    data = b.data_copy()
    (data / "meta.json").write_text('{"dataset": "digits", "num_cl')
    return b.train_on(data)


def file_on_the_run_dir_path(b: Bench) -> Situation:
    # Tests run as root, whom chmod does not stop: a regular file as a parent is unwritable to all.
    blocker = b.tmp / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    situation = b.train(f"run_dir={blocker / 'run'}")
    situation.run_dir = blocker / "run"
    return situation


def run_dir_is_another_folder(b: Bench) -> Situation:
    folder = b.folder_that_is_not_a_run()
    situation = b.train(f"run_dir={folder}")
    situation.run_dir = folder
    return situation


def checkpoint_part_of_another_arch(b: Bench) -> Situation:
    """config.yaml matches, but member 0's part of the latest checkpoint holds a resnet20."""
    from cohort.models import build_model
    from cohort.run.checkpoint_files import latest_complete

    situation = b.on_run_copy("resume=auto")
    part = latest_complete(situation.run_dir) / "member-0.pt"
    state = torch.load(part, weights_only=False)
    state.update(arch="resnet20", model=build_model("resnet20", 10, [0.5] * 3, [0.25] * 3).state_dict())
    torch.save(state, part)
    situation.paths["folder"] = part.parent
    return situation


def eval_or_report_on_a_folder_that_is_not_a_run(command: str) -> Callable[[Bench], Situation]:
    def build(b: Bench) -> Situation:
        folder = b.folder_that_is_not_a_run()
        return Situation([command, str(folder)], folder, paths={"folder": folder})

    return build


def label_file_with_a_repeated_index(b: Bench) -> Situation:
    labels = b.tmp / "labelled.txt"
    labels.write_text("4\n8\n4\n")
    situation = b.train(f"data.labelled_indices={labels}")
    situation.paths["labels"] = labels
    return situation


def run_in_use(b: Bench, *args: str) -> Situation:
    """A copy of the dml_pair run held by a live ``cohort train`` (this test's process, which
    stays alive), and ``cohort ARGS`` on it: ``{run}`` in ARGS is the copy; ``train`` adds the
    config and resume=auto."""
    config, run = b.run_copy()
    create_whole(run / HOLD_FILE, Holder.here("cohort train"))
    args = tuple(a.format(run=run) for a in args)
    if args[0] == "train":
        args = ("train", str(config), f"run_dir={run}", "resume=auto", *args[1:])
    return Situation(list(args), run)


def eval_on_other_data(b: Bench, damage: str) -> Situation:
    """``cohort eval --data`` with a .beton the run cannot read: ``garbage`` (not a .beton) or
    ``16px`` (digits written at 16 px, where the run trained on 32)."""
    _, run = b.run_copy()
    if damage == "garbage":
        data = b.tmp / "notes.beton"
        data.write_text("not a beton\n")
    else:
        from cohort.data.datasets import write_digits

        write_digits(b.tmp / "small", size=16)
        data = b.tmp / "small" / "test.beton"
    return Situation(["eval", str(run), "--checkpoint", "last", "--data", str(data)], run, paths={"data": data})


def eval_of_a_missing_checkpoint(b: Bench) -> Situation:
    _, run = b.run_copy()
    return Situation(["eval", str(run), "--checkpoint", str(b.tmp / "nowhere")], run)


def student_of(b: Bench, teacher: Path, *overrides: str, members: int = 2) -> Situation:
    """``cohort train`` of a tiny student cohort distilling the run in ``teacher``."""
    situation = b.train(
        f"teacher.run_dir={teacher}",
        "loss.distill.weight=0.9",
        "loss.ce.weight=0.1",
        "loss.mimicry.weight=0",
        "views=shared",
        *overrides,
        members=members,
    )
    situation.paths["teacher"] = teacher
    return situation


def edited_teacher(b: Bench, **changes) -> Path:
    """A copy of the finished dml_pair run whose config.yaml has ``changes`` (dotted keys)."""
    from cohort.config import apply_override

    _, teacher = b.run_copy()
    raw = yaml.safe_load((teacher / "config.yaml").read_text())
    for key, value in changes.items():
        apply_override(raw, f"{key}={value}")
    (teacher / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return teacher


def teacher_without_a_complete_checkpoint(b: Bench) -> Situation:
    _, teacher = b.run_copy()
    for marker in teacher.glob("checkpoints/*/COMPLETE.json"):
        marker.unlink()
    return student_of(b, teacher)


def teacher_of_other_classes(b: Bench) -> Situation:
    data = b.data_copy()
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "num_classes": 11}))
    return student_of(b, edited_teacher(b, **{"data.root": str(data)}))


def run_dir_under_a_symlink_loop(b: Bench) -> Situation:
    loop = b.tmp / "loop"
    loop.mkdir()
    (loop / "a").symlink_to(loop / "b")
    (loop / "b").symlink_to(loop / "a")
    situation = b.train(f"run_dir={loop / 'a' / 'run'}")
    situation.run_dir = loop / "a" / "run"
    return situation


def out_under_a_symlink_loop(b: Bench, command: str) -> Situation:
    """``cohort data digits`` or ``cohort study`` writing under a symlink loop (its folder made first)."""
    situation = run_dir_under_a_symlink_loop(b)
    out = situation.run_dir
    args = ["data", "digits", "--out", str(out)] if command == "data" else ["study", str(b.config()), "--out", str(out)]
    return Situation(args, out)


def under_proc(b: Bench, key: str) -> Situation:
    """``cohort train`` with ``key`` (run_dir or data.root, the digits to be written there) under /proc."""
    where = Path("/proc") / f"cohort-{b.tmp.name}"
    situation = b.train(f"{key}={where}")
    situation.paths["where"] = where
    if key == "run_dir":
        situation.run_dir = where
    return situation


def edited_beton(edit: str) -> Callable[[Bench], Situation]:
    """A copy of the digits whose train.beton's header says another thing: ``rename`` its image
    field (FFCV's loader then fails in every rank with a bare AssertionError), or a ``page`` size
    FFCV never writes."""

    def build(b: Bench) -> Situation:
        import numpy as np

        from cohort.data.beton import FIELD_DESCRIPTOR, HEADER

        data = b.data_copy()
        with open(data / "train.beton", "r+b") as f:
            header = np.fromfile(f, dtype=HEADER, count=1)[0]
            if edit == "rename":  # the first field is the image (cohort.data.datasets writes it first)
                f.seek(HEADER.itemsize + FIELD_DESCRIPTOR.fields["name"][1])
                f.write(b"picture\0")
            else:
                header["page_size"] = 12345
                f.seek(0)
                f.write(header.tobytes())
        return b.train_on(data)

    return build


def predictions_of_objects(b: Bench, command: str) -> Situation:
    """A copy of the dml_pair run whose selected epoch's test predictions hold an object array
    (numpy loads one only by unpickling it); ``report`` or ``dee --temperature test-cv`` (its
    config made independent, as a DEE reference must be)."""
    import numpy as np

    run = edited_teacher(b, **{"loss.mimicry.weight": 0}) if command == "dee" else b.run_copy()[1]
    path = run / "predictions" / "best" / "test.npz"
    np.savez(path, logits=np.array([{"not": "logits"}], dtype=object), labels=np.zeros(3, dtype=np.int64))
    args = (
        ["report", str(run)]
        if command == "report"
        else ["dee", "--temperature", "test-cv", "--reference", str(run), str(run)]
    )
    return Situation(args, run, paths={"file": path})


def report_of_torn_final_rows(b: Bench) -> Situation:
    """A copy of the dml_pair run whose metrics.jsonl lost its last line, the final test
    evaluation's ensemble row (torn), and that selected nothing (its last epoch is reported)."""
    _, run = b.run_copy()
    (run / "selection.json").unlink()
    metrics = run / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])
    return Situation(["report", str(run)], run)


def checkpoints_that_is_a_file(b: Bench) -> Situation:
    situation = b.on_run_copy("resume=auto")
    checkpoints = situation.run_dir / "checkpoints"
    shutil.rmtree(checkpoints)
    checkpoints.write_text("not a folder\n")
    return situation


def teacher_that_did_not_finish(b: Bench) -> Situation:
    """A copy of the dml_pair run (2 epochs, a checkpoint after each) as if killed in its second
    epoch: its final checkpoint gone, the first epoch's the newest."""
    _, teacher = b.run_copy()
    shutil.rmtree(teacher / "checkpoints" / "step-000000012")
    return student_of(b, teacher)


def teacher_predictions_of_objects(b: Bench) -> Situation:
    import numpy as np

    _, teacher = b.run_copy()
    path = teacher / "predictions" / "best" / "val.npz"
    np.savez(path, logits=np.array([None], dtype=object), labels=np.zeros(3, dtype=np.int64))
    situation = student_of(b, teacher)
    situation.paths["file"] = path
    return situation


def repeated_seed(b: Bench, command: str) -> Situation:
    out = b.tmp / "out"
    config = str(b.config())
    if command == "study":
        return Situation(["study", config, "--seeds", "0", "0", "--out", str(out)], out)
    return Situation(
        ["submit", config, f"run_dir={out}", "--cpu", "--gpus-per-node", "2", "--partition", "debug", "--time", "5",
         "--seeds", "1", "0", "1"],
        out,
    )  # fmt: skip


# --- the catalogue -----------------------------------------------------------------------------


@dataclass
class Case:
    build: Callable[[Bench], Situation]
    culprit: str
    """Text naming the key, file or value at fault; ``{tmp}``, ``{run}`` and the situation's
    ``paths`` are filled in."""
    fix: str
    """Text of the fix the message must suggest (filled in the same way)."""


CASES = {
    "malformed_yaml": Case(malformed_yaml, "{config} is not valid YAML at line", "fix the file's syntax"),
    "missing_config_file": Case(
        missing_config_file, "config file {tmp}/nope.yaml does not exist", "pick one from configs/"
    ),
    "unknown_key": Case(lambda b: b.train(train={"epoch": 3}), "unknown key train.epoch", "valid keys of train: "),
    "unknown_tracker": Case(
        lambda b: b.train("track.comet.project=x"), "unknown key track.comet", "valid keys of track: mlflow, wandb"
    ),
    "tracker_package_missing": Case(
        tracker_package_missing, "track.wandb is set but the wandb package is not installed", "pip install -e .[wandb]"
    ),
    "mlflow_server_that_never_answers": Case(
        mlflow_server_that_never_answers,
        "track.mlflow.tracking_uri {uri}: {uri}/health did not answer within 5 s",
        "start the server or fix the URI",
    ),
    "wrong_type": Case(lambda b: b.train("train.epochs=ten"), "train.epochs must be int, got 'ten'", "must be int"),
    "override_without_equals": Case(lambda b: b.train("optim.lr"), "override 'optim.lr'", "must look like key=value"),
    "process_count_not_k_times_r": Case(
        lambda b: Situation([str(b.config(members=2))], b.tmp / "run", torchrun=3),
        "3 processes were started but the config needs K×R = 2×1 = 2",
        "start 2 (e.g. torchrun --nproc-per-node 2)",
    ),
    "missing_beton": Case(missing_beton, "{data}/val.beton is missing", "`cohort data digits --out {data}`"),
    "truncated_beton": Case(
        truncated_beton,
        "{data}/train.beton is truncated or corrupt",
        "rewrite it with `cohort data digits --out {data}`",
    ),
    "truncated_beton_bare_torchrun": Case(
        lambda b: truncated_beton(b, torchrun=2),
        "{data}/train.beton is truncated or corrupt",
        "rewrite it with `cohort data digits --out {data}`",
    ),
    "corrupt_meta_json": Case(corrupt_meta, "{data}/meta.json is not valid JSON", "--out {data}`"),
    "labels_out_of_range": Case(
        edited_meta(num_classes=5),
        "in {data}/train.beton is outside 0..4",
        "rewrite the data folder with `cohort data digits --out {data}`",
    ),
    "unknown_arch": Case(
        lambda b: b.train("members.0.arch=resnet33"), "members.0.arch 'resnet33' is unknown", "valid: small_cnn"
    ),
    "unknown_policy": Case(
        lambda b: b.train("members.1.policy=sharpen"), "members.1.policy 'sharpen'", "choose one of: none, crop"
    ),
    "zero_lr": Case(lambda b: b.train("optim.lr=0"), "optim.lr", "must be > 0, got 0"),
    "negative_member_lr": Case(
        lambda b: b.train("members.1.optim.lr=-0.1"), "members.1.optim.lr", "must be > 0, got -0.1"
    ),
    "batch_larger_than_train_set": Case(
        lambda b: b.train("data.batch_size=2000"), "data.batch_size 2000", "lower data.batch_size"
    ),
    "labelled_fraction_out_of_range": Case(
        lambda b: b.train("data.labelled_fraction=1.5"), "data.labelled_fraction must be in (0, 1]", "got 1.5"
    ),
    "label_file_with_a_repeated_index": Case(
        label_file_with_a_repeated_index,
        "data.labelled_indices {labels}: index 4 is listed twice",
        "list each sample once",
    ),
    "cskd_batch_too_small": Case(
        lambda b: b.train("data.batch_size=1", "loss.cskd.weight=1"),
        "data.batch_size 1 is too small for loss.cskd",
        "set data.batch_size >= 2",
    ),
    "negative_focal_gamma": Case(
        lambda b: b.train("loss.focal.weight=1", "loss.focal.gamma=-2"), "loss.focal.gamma must be >= 0", "got -2"
    ),
    "empty_members": Case(lambda b: b.train("members=[]"), "members is empty", "needs at least one member"),
    "duplicate_member_names": Case(
        lambda b: b.train("members.0.name=a", "members.1.name=a"),
        "members.1.name 'a' is used twice",
        "give each member its own name",
    ),
    "auto_policies_for_too_many_members": Case(
        lambda b: b.train(members=11, policies="auto"),
        "policies: auto has 11 members but only 10",
        "name each member's policy",
    ),
    "strength_out_of_range": Case(
        lambda b: b.train("members.0.strength=3"), "members.0.strength", "must be in [0.0, 2.0], got 3"
    ),
    "negative_diversity_weight": Case(
        lambda b: b.train("loss.diversity.weight=-0.5"), "loss.diversity: weight", "must be >= 0, got weight -0.5"
    ),
    "members_per_gpu_not_dividing_k": Case(
        lambda b: b.train("train.members_per_gpu=3"),
        "train.members_per_gpu must be auto or a divisor of the K=2 members",
        "got 3",
    ),
    "more_ranks_than_gpus_times_members_per_gpu": Case(
        lambda b: b.train("train.device=cuda", "train.members_per_gpu=1"),
        "2 ranks on this node with train.members_per_gpu=1 need 2 GPUs but 0 are visible",
        "raise train.members_per_gpu (a divisor of K=2), use members_per_gpu=auto, or train.device=cpu",
    ),
    "bad_resume_value": Case(lambda b: b.train("resume=maybe"), "resume 'maybe'", "choose one of: never, auto"),
    "run_dir_under_a_file": Case(file_on_the_run_dir_path, "{tmp}/notes.txt is a file", "choose another run_dir="),
    "run_dir_is_another_folder": Case(
        run_dir_is_another_folder, "{run} exists and is not a cohort run directory", "choose another run_dir="
    ),
    "existing_run_without_resume": Case(
        lambda b: b.on_run_copy("optim.lr=0.01"),
        "{run} already holds a run",
        "pass resume=auto to continue it, or run_dir=",
    ),
    "existing_run_of_a_different_config": Case(
        lambda b: b.on_run_copy("optim.lr=0.01", "resume=auto"),
        "{run} holds a run of a different config (optim.lr: 0.05 there, 0.01 here)",
        "choose another run_dir=",
    ),
    "resume_with_another_arch_in_the_config": Case(
        lambda b: b.on_run_copy("resume=auto", "members.0.arch=resnet20"),
        "different config (members.0.arch: 'small_cnn' there, 'resnet20' here)",
        "choose another run_dir=",
    ),
    "resume_from_a_checkpoint_part_of_another_arch": Case(
        checkpoint_part_of_another_arch,
        "{folder}/member-0.pt holds a resnet20, but member 0 is a small_cnn",
        "delete {folder} to resume from an earlier checkpoint",
    ),
    "eval_of_a_folder_that_is_not_a_run": Case(
        eval_or_report_on_a_folder_that_is_not_a_run("eval"),
        "{folder}/config.yaml is missing",
        "pass a folder that `cohort train` wrote",
    ),
    "report_of_a_folder_that_is_not_a_run": Case(
        eval_or_report_on_a_folder_that_is_not_a_run("report"),
        "{folder}/config.yaml is missing",
        "pass a folder that `cohort train` wrote",
    ),
    "train_resume_on_a_run_in_use": Case(
        lambda b: run_in_use(b, "train"),
        "{run} is in use by cohort train (process " + str(os.getpid()),
        "wait for it to end or stop it",
    ),
    "eval_of_a_run_in_use": Case(
        lambda b: run_in_use(b, "eval", "{run}", "--checkpoint", "last"),
        "{run} is in use by cohort train (process",
        "wait for it to end or stop it",
    ),
    "eval_with_zero_replicas": Case(
        lambda b: Situation(["eval", str(b.run_copy()[1]), "--distributed", "--replicas", "0"], b.tmp / "existing"),
        "--replicas must be at least 1, not 0",
        "leave it out for the run's R",
    ),
    "eval_replicas_without_distributed": Case(
        lambda b: Situation(["eval", str(b.run_copy()[1]), "--replicas", "2"], b.tmp / "existing"),
        "--replicas splits a --distributed evaluation",
        "add --distributed, or drop --replicas",
    ),
    "eval_on_a_file_that_is_not_a_beton": Case(
        lambda b: eval_on_other_data(b, "garbage"), "{data} is truncated or corrupt", "rewrite it with `cohort data`"
    ),
    "eval_on_data_of_another_image_size": Case(
        lambda b: eval_on_other_data(b, "16px"),
        "{data} holds images of 16×16 px (sample 0) but the run's data (",
        "rewrite the data folder with `cohort data` (the 10 classes of the run's data, 32 px)",
    ),
    "eval_of_a_missing_checkpoint": Case(
        eval_of_a_missing_checkpoint, "{tmp}/nowhere/COMPLETE.json is missing", "pick a complete checkpoint"
    ),
    "teacher_without_a_complete_checkpoint": Case(
        teacher_without_a_complete_checkpoint,
        "{teacher}/checkpoints holds no complete checkpoint",
        "finish it with resume=auto first",
    ),
    "teacher_of_other_classes": Case(
        teacher_of_other_classes, "teacher.run_dir {teacher} has 11 classes", "distil teachers of the same classes"
    ),
    "teacher_of_an_unknown_arch": Case(
        lambda b: student_of(b, edited_teacher(b, **{"members.0.arch": "resnet33"})),
        "{teacher}/config.yaml (teacher.run_dir) is not a valid config: members.0.arch 'resnet33' is unknown",
        "valid: small_cnn",
    ),
    "more_students_than_teachers": Case(
        lambda b: student_of(b, b.run_copy()[1], members=3),
        "members: 3 students but teacher.run_dir {teacher} holds 2 teachers",
        "use at most 2 students, or teacher.mapping=mean",
    ),
    "more_internal_students_than_teachers": Case(
        lambda b: student_of(b, b.run_copy()[1], "members.1.batch_ensemble=2"),
        "members: 3 students (2 members, BatchEnsembles counting each internal member) but teacher.run_dir "
        "{teacher} holds 2 teachers",
        "use at most 2 students, or teacher.mapping=mean",
    ),
    "batch_ensemble_teacher": Case(
        lambda b: student_of(b, edited_teacher(b, **{"members.0.batch_ensemble": 2})),
        "teacher.run_dir {teacher}'s member 0 is a BatchEnsemble",
        "train them as separate members",
    ),
    "batch_ensemble_below_one": Case(
        lambda b: b.train("members.0.batch_ensemble=0"),
        "members.0.batch_ensemble must be >= 1",
        "1: a plain network, n: n internal members",
    ),
    "batch_ensemble_of_an_architecture_it_cannot_wrap": Case(
        lambda b: b.train("members.0.arch=tv.convnext_tiny", "members.0.batch_ensemble=2"),
        "members.0.batch_ensemble 2: tv.convnext_tiny cannot be a BatchEnsemble: its layer",
        "choose an architecture of convolutions, linear layers and BatchNorm",
    ),
    "run_dir_under_a_symlink_loop": Case(
        run_dir_under_a_symlink_loop,
        "cannot create run_dir {run}: Too many levels of symbolic links",
        "choose another run_dir=",
    ),
    "data_out_under_a_symlink_loop": Case(
        lambda b: out_under_a_symlink_loop(b, "data"),
        "cannot create --out {run}: Too many levels of symbolic links",
        "choose another --out",
    ),
    "study_out_under_a_symlink_loop": Case(
        lambda b: out_under_a_symlink_loop(b, "study"),
        "cannot create --out {run}: Too many levels of symbolic links",
        "choose another --out",
    ),
    "run_dir_under_proc": Case(
        lambda b: under_proc(b, "run_dir"),
        "cannot create run_dir {where}: No such file or directory ({where}, proc file system at /proc)",
        "choose another run_dir=",
    ),
    "data_root_under_proc_for_the_digits": Case(
        lambda b: under_proc(b, "data.root"),
        "cannot create data.root {where}: No such file or directory",
        "set data.root to a folder that can be written",
    ),
    "beton_whose_image_field_was_renamed": Case(
        edited_beton("rename"),
        "{data}/train.beton has no field image: RGBImageField, which the loader reads (its fields: picture: "
        "RGBImageField, label: IntField)",
        "rewrite it with `cohort data digits --out {data}`",
    ),
    "beton_with_a_page_size_ffcv_never_writes": Case(
        edited_beton("page"),
        "{data}/train.beton is truncated or corrupt: its header's page size is 12345 bytes",
        "rewrite it with `cohort data digits --out {data}`",
    ),
    "report_of_predictions_holding_an_object_array": Case(
        lambda b: predictions_of_objects(b, "report"),
        "{file} is not the predictions cohort writes (logits is an object array",
        "evaluate that checkpoint again with `cohort eval {run} --checkpoint best`",
    ),
    "dee_test_cv_of_predictions_holding_an_object_array": Case(
        lambda b: predictions_of_objects(b, "dee"),
        "{file} is not the predictions cohort writes (logits is an object array",
        "evaluate that checkpoint again with `cohort eval {run} --checkpoint best`",
    ),
    "report_of_a_run_whose_final_rows_were_torn": Case(
        report_of_torn_final_rows,
        "{run}/metrics.jsonl has no test evaluation at epoch 1; if its last line was torn",
        "`cohort train {run}/config.yaml run_dir={run} resume=auto`",
    ),
    "resume_whose_checkpoints_is_a_file": Case(
        checkpoints_that_is_a_file,
        "{run}/checkpoints is a file, not a folder: {run} cannot be resumed",
        "move that file away",
    ),
    "teacher_run_that_did_not_finish": Case(
        teacher_that_did_not_finish,
        "teacher.run_dir {teacher} has not finished: its newest complete checkpoint (end of epoch 1) is short of "
        "its 2 epochs",
        "finish it with `cohort train {teacher}/config.yaml run_dir={teacher} resume=auto`, or distil it as it is "
        "with teacher.checkpoint=last",
    ),
    "teacher_predictions_holding_an_object_array": Case(
        teacher_predictions_of_objects,
        "{file} is not the predictions cohort writes (logits is an object array",
        "delete it (the students' reports then have no teachers' row)",
    ),
    "study_with_a_repeated_seed": Case(
        lambda b: repeated_seed(b, "study"), "--seeds lists seed 0 2 times (0 0)", "list each seed once"
    ),
    "submit_with_a_repeated_seed": Case(
        lambda b: repeated_seed(b, "submit"), "--seeds lists seed 1 2 times (1 0 1)", "list each seed once"
    ),
    "epochs_past_any_schedule": Case(
        lambda b: b.train("train.epochs=1000000000000"),
        "train.epochs 1000000000000 is more than 100,000 epochs",
        "set the epochs to train",
    ),
    "dist_timeout_of_more_than_a_day": Case(
        lambda b: b.train("train.dist_timeout_s=3e6"),
        "train.dist_timeout_s 3e+06 is more than a day (86400 s)",
        "give it in seconds",
    ),
    "threads_per_rank_past_any_node": Case(
        lambda b: b.train("train.threads_per_rank=20000"),
        "train.threads_per_rank must be >= 0 (0: the cores shared among the ranks) and at most 1,024",
        "got 20000",
    ),
    "ods_with_own_views": Case(
        lambda b: student_of(b, b.tmp / "teachers", "views=own", "teacher.perturbation=ods"),
        "teacher.perturbation ods",
        "set views=shared",
    ),
    "member_that_learns_from_itself": Case(
        lambda b: b.train("members.1.learns_from=[1]"),
        "members.1.learns_from names member 1 (m1) itself",
        "name others, or remove the key (every peer)",
    ),
    "member_that_learns_from_no_one_while_it_mimics": Case(
        lambda b: b.train("members.1.learns_from=[]"),
        "members.1.learns_from is empty, but member 1 (m1) reads its peers through loss.mimicry (weight 1)",
        "name a peer, or set members.1.loss.mimicry=0",
    ),
    "member_that_learns_from_an_unknown_peer": Case(
        lambda b: b.train("members.0.name=primary", "members.1.learns_from=[teacher]"),
        "members.1.learns_from: no member is named 'teacher'",
        "members are primary, m1 (or 0..1)",
    ),
    "csmac_without_a_baseline_accuracy": Case(
        lambda b: b.train("train.select_by=csmac"),
        "train.select_by csmac needs train.baseline_acc",
        "e.g. train.baseline_acc=0.7787",
    ),
    "reported_member_that_does_not_exist": Case(
        lambda b: b.train("reported_members=[primary]"),
        "reported_members: no member is named 'primary'",
        "members are m0, m1 (or 0..1)",
    ),
    "member_schedule_of_an_unknown_name": Case(
        lambda b: b.train("members.1.schedule={name: steplr}"),
        "members.1.schedule.name 'steplr' is not valid",
        "choose one of: step, step_lr, cosine",
    ),
}
IN_A_SUBPROCESS = {
    # Found by the workers, which `cohort train` has started by then.
    "resume_from_a_checkpoint_part_of_another_arch",
    # One case of each command (train, eval, report), so that the command line stays tested.
    "unknown_key",
    "eval_of_a_missing_checkpoint",
    "report_of_a_folder_that_is_not_a_run",
}
"""The cases that run ``cohort`` in a subprocess; the others call ``cohort.cli.main`` here."""
assert IN_A_SUBPROCESS <= CASES.keys(), IN_A_SUBPROCESS - CASES.keys()

# Not catalogued: a rendezvous port already in use. `cohort train` and `torchrun --standalone`
# let the c10d rendezvous bind a free port of its own choosing, so no input of ours can clash.


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes); empty if there is no folder."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_launcher_report(stderr: str) -> str:
    """stderr less the bare torchrun launcher's own report (a traceback of its agent ending in
    ChildFailedError), which it prints whenever a worker exits non-zero; `cohort train` does not."""
    start = stderr.rfind("Traceback (most recent call last):")
    if start >= 0 and "torch.distributed.elastic.multiprocessing.errors.ChildFailedError" in stderr[start:]:
        return stderr[:start]
    return stderr


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_the_culprit_and_the_fix(name, tmp_path, request, cli_here):
    case = CASES[name]
    situation = case.build(Bench(tmp_path, request))
    existed = situation.run_dir.exists()
    before = snapshot(situation.run_dir)

    if situation.torchrun:
        result = run_torchrun(situation.torchrun, *situation.args, timeout=300)
    elif name in IN_A_SUBPROCESS:
        result = run_cli(*situation.args, timeout=300)
    else:
        result = cli_here(*situation.args)

    stderr = without_launcher_report(result.stderr) if situation.torchrun else result.stderr
    fields = {"tmp": tmp_path, "run": situation.run_dir, **situation.paths}
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, stderr[-3000:]
    assert case.culprit.format(**fields) in lines[0]
    assert case.fix.format(**fields) in lines[0]
    if existed:
        after = snapshot(situation.run_dir)
        changed = sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
        assert not changed, f"{name} changed {changed} in {situation.run_dir}"
    else:
        assert not situation.run_dir.exists(), f"{name} left {situation.run_dir} behind"
