"""The teachers' run directory (``cohort.run.teacher_run``), read from a copy of the finished dml_pair run."""

from __future__ import annotations

import json
import shutil

import pytest

from cohort.config import load_config
from cohort.data.folder import read_meta
from cohort.run.checkpoint_files import MARKER, best_dir, latest_complete
from cohort.run.files import RunDirError
from cohort.run.teacher_run import check_teacher, check_teacher_record, teacher_predictions

pytestmark = pytest.mark.multiprocess  # dml_pair trains a real cohort (once per session)


def student_config(config, teacher, *overrides):
    return load_config(
        config,
        [f"teacher.run_dir={teacher}", "loss.distill.weight=0.9", "loss.mimicry.weight=0", "views=shared", *overrides],
    )


def test_auto_distils_the_selected_checkpoint_else_the_last_and_finds_its_predictions(dml_pair, tmp_path):
    config, run, _ = dml_pair
    teacher = tmp_path / "teacher"
    shutil.copytree(run, teacher)
    meta = read_meta(load_config(config).data.root)
    plan = check_teacher(student_config(config, teacher), meta)
    assert (
        plan.folder == best_dir(teacher) and plan.archs == ("small_cnn", "small_cnn") and plan.mapping == "one_to_one"
    )
    assert plan.epoch == json.loads((teacher / "selection.json").read_text())["epoch"]
    saved = teacher_predictions(plan)
    assert saved["test"][0].shape[0] == 2  # its two members' logits, from predictions/best
    last = check_teacher(student_config(config, teacher, "teacher.checkpoint=last", "members=[{}]"), meta)
    assert last.folder == latest_complete(teacher) and last.epoch == 1 and last.mapping == "mean"
    assert teacher_predictions(last) is not None  # its last evaluation is that checkpoint's epoch
    (best_dir(teacher) / MARKER).unlink()
    assert check_teacher(student_config(config, teacher), meta).folder == latest_complete(teacher)
    with pytest.raises(RunDirError, match="has no complete best checkpoint .* set teacher.checkpoint=last"):
        check_teacher(student_config(config, teacher, "teacher.checkpoint=best"), meta)


def test_a_resumed_student_refuses_teachers_other_than_those_it_started_with(dml_pair, tmp_path):
    config, run, _ = dml_pair
    meta = read_meta(load_config(config).data.root)
    best = check_teacher(student_config(config, run), meta)
    (tmp_path / "teacher_plan.json").write_text(json.dumps(best.record()))
    check_teacher_record(tmp_path, best)  # the same teachers: fine
    last = check_teacher(student_config(config, run, "teacher.checkpoint=last"), meta)
    with pytest.raises(RunDirError, match="teacher_plan.json says this run distils .*best"):
        check_teacher_record(tmp_path, last)


def test_an_unfinished_teacher_run_is_distilled_only_when_its_checkpoint_is_named(dml_pair, tmp_path):
    """``teacher.checkpoint: auto`` means the finished run's choice: a run killed in its second
    epoch is refused (``tests/test_bad_inputs.py``); naming ``last`` distils it as it is, and the
    plan the student records says so."""
    config, run, _ = dml_pair
    teacher = tmp_path / "teacher"
    shutil.copytree(run, teacher)
    shutil.rmtree(teacher / "checkpoints" / "step-000000012")  # killed before its final checkpoint
    meta = read_meta(load_config(config).data.root)
    with pytest.raises(RunDirError, match=r"has not finished: its newest complete checkpoint \(end of epoch 1\)"):
        check_teacher(student_config(config, teacher), meta)
    plan = check_teacher(student_config(config, teacher, "teacher.checkpoint=last"), meta)
    assert plan.folder == teacher / "checkpoints" / "step-000000006" and plan.epoch == 0
    assert plan.record()["finished"] is False
    assert check_teacher(student_config(config, run), meta).record()["finished"] is True
