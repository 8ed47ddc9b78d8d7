"""The one pre-flight: a config becomes a run plan, or one error naming the culprit; no process needed."""

import numpy as np
import pytest

from cohort.config import load_config
from cohort.data.datasets import DataError
from cohort.preflight import plan_eval, plan_run
from cohort.run_dir import RunDir, RunDirError
from tests.conftest import tiny_config


def test_a_new_run_is_planned_with_its_data_and_nothing_else(tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root))
    plan = plan_run(config)
    assert plan.config is config and plan.meta["num_classes"] == 10
    assert plan.labelled is None and plan.teachers is None and plan.continues is False
    assert not (tmp_path / "run").exists()  # a plan writes nothing


def test_a_semi_supervised_run_is_planned_with_its_labelled_set(tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, data={"labelled_fraction": 0.1}))
    plan = plan_run(config)
    assert plan.labelled is not None and 0 < len(plan.labelled) < plan.meta["sizes"]["train"]
    assert np.all(np.diff(plan.labelled) > 0)


def test_the_run_directorys_verdict_continue_or_refuse(tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, resume="auto"))
    RunDir(config.run_dir).create(config)
    assert plan_run(config).continues is True
    fresh = load_config(tiny_config(tmp_path, digits_root))  # resume: never
    with pytest.raises(RunDirError, match="already holds a run; pass resume=auto"):
        plan_run(fresh)


def test_a_workers_plan_never_writes_the_data(tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, tmp_path / "digits"))
    with pytest.raises(DataError, match="meta.json is missing"):
        plan_run(config)  # the launchers pass write_data=True (ensure_data, tested with the data writers)
    assert not (tmp_path / "digits").exists()


def test_an_evaluation_needs_a_complete_checkpoint(tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root))
    RunDir(config.run_dir).create(config)
    with pytest.raises(RunDirError, match="holds no complete checkpoint; train first"):
        plan_eval(config.run_dir, "last")
    with pytest.raises(RunDirError, match="best/COMPLETE.json is missing"):
        plan_eval(config.run_dir, "best")
