"""The one pre-flight: a config becomes a run plan, or one error naming the culprit; no process needed."""

import numpy as np
import pytest

from cohort.config import ConfigError, load_config
from cohort.data.folder import DataError
from cohort.preflight import plan_eval, plan_run
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError
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


# --- bad inputs refused before any process starts (issue 22) ---------------------------------


def edited_data(tmp_path, digits_root, meta=None):
    """A copy of the digits folder, its meta.json replaced by ``meta`` (None: kept)."""
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digits_root, data)
    if meta is not None:
        (data / "meta.json").write_text(json.dumps(meta))
    return data


def data_root_a_file(tmp_path, digits_root):
    (tmp_path / "notes.txt").write_text("not data")
    return [f"data.root={tmp_path / 'notes.txt'}"]


REFUSED = {
    "vit-on-32px": (
        lambda tmp, digits: ["members.0.arch=tv.vit_b_16"],
        DataError,
        r"^members\.0\.arch tv\.vit_b_16 cannot take 32 px images \(data\.root .*, image_size 32\): Wrong image "
        r"height! Expected 224 but got 32!; choose an architecture for 32 px images \(e\.g\. resnet56",
    ),
    "alexnet-pools-32px-away": (
        lambda tmp, digits: ["members.1.arch=tv.alexnet"],
        DataError,
        r"^members\.1\.arch tv\.alexnet cannot take 32 px images .*Output size is too small",
    ),
    "lenet5-on-32px": (
        lambda tmp, digits: ["members.0.arch=lenet5"],
        DataError,
        r"^members\.0\.arch lenet5 cannot take 32 px images .*\[1, 7680\] X \[5880, 84\].*"
        r"lenet5: 28 px, e\.g\. `cohort data fashion-mnist`",
    ),
    "data-root-a-file": (
        data_root_a_file,
        DataError,
        r"^data\.root .*notes\.txt is a file, not a folder; set data\.root to a folder written by `cohort data`",
    ),
    "meta-json-a-list": (
        lambda tmp, digits: [f"data.root={edited_data(tmp, digits, [])}"],
        DataError,
        r"data/meta\.json must hold a JSON object \(num_classes, image_size, mean, std, \.\.\.\), not list; rewrite",
    ),
    "meta-json-num-classes-a-string": (
        lambda tmp, digits: [f"data.root={edited_data(tmp, digits, {'num_classes': '10', 'image_size': 32})}"],
        DataError,
        r"data/meta\.json: num_classes must be an integer >= 1, got '10'; rewrite the folder with `cohort data",
    ),
    "run-dir-name-too-long": (
        lambda tmp, digits: [f"run_dir={tmp / ('r' * 300)}"],
        RunDirError,
        r"^run_dir .*\.\.\.: its folder name r{24}\.\.\. is 300 bytes, longer than the file system allows \(255\); "
        r"choose a shorter run_dir=$",
    ),
    "run-dir-path-too-long": (
        lambda tmp, digits: [f"run_dir={tmp / '/'.join(['r' * 250] * 17)}"],
        RunDirError,
        r"^run_dir .* is \d+ bytes long; the file system allows paths of 4096, less 128 for its files; choose a ",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_run_that_would_fail_after_launch_is_refused_in_one_line(tmp_path, digits_root, case):
    overrides, error, message = REFUSED[case]
    config = load_config(tiny_config(tmp_path, digits_root), overrides(tmp_path, digits_root))
    with pytest.raises(error, match=message) as raised:
        plan_run(config, write_data=True)
    assert "\n" not in str(raised.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["vit-on-32px", "data-root-a-file", "meta-json-a-list", "run-dir-name-too-long"])
def test_cohort_train_reports_them_in_one_line_and_starts_nothing(tmp_path, digits_root, monkeypatch, capsys, case):
    import re

    import cohort.cli
    import cohort.launch.torchrun

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cohort.launch.torchrun, "launch_local", lambda *a, **k: pytest.fail("the run was launched"))
    overrides, _, message = REFUSED[case]
    assert cohort.cli.main(["train", str(tiny_config(tmp_path, digits_root)), *overrides(tmp_path, digits_root)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cohort: error: ") and "Traceback" not in captured.err
    assert re.search(message.removeprefix("^"), lines[0]) and not (tmp_path / "run").exists()


def test_a_torchvision_network_that_takes_the_datas_size_is_accepted(tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root), ["members.0.arch=tv.resnet18"])
    assert plan_run(config).config is config


def test_a_local_launch_may_start_four_ranks_per_core_or_train_max_local_ranks(tmp_path, digits_root, monkeypatch):
    from cohort import preflight

    monkeypatch.setattr(preflight, "usable_cores", lambda: 2)
    eight, nine = (load_config(tiny_config(tmp_path, digits_root, members=k)) for k in (8, 9))
    assert plan_run(eight, local=True).config is eight
    with pytest.raises(
        ConfigError,
        match=r"^the cohort would start K×R = 9×1 = 9 processes on this machine, more than 8 \(4 per core, 2 cores\); "
        r"train fewer members or replicas, spread them over nodes with `cohort submit`, or raise "
        r"train\.max_local_ranks$",
    ):
        plan_run(nine, local=True)
    assert plan_run(nine).config is nine  # cohort submit and the workers: SLURM places the ranks
    three_by_two = load_config(tiny_config(tmp_path, digits_root, members=3, replicas=2, train={"max_local_ranks": 5}))
    with pytest.raises(ConfigError, match=r"K×R = 3×2 = 6 processes on this machine, more than 5 \(train\.max_local"):
        plan_run(three_by_two, local=True)
    nine.train.max_local_ranks = 9
    assert plan_run(nine, local=True).config is nine


def test_a_run_of_more_steps_than_checkpoint_folders_can_number_is_refused(tmp_path, digits_root):
    """``step-NNNNNNNNN``: past 10 ** 9 steps the newest checkpoint would sort before the older
    ones. ImageNet's 1,281,167 training images one at a time, for 1,000 epochs."""
    from cohort.preflight import check_run_length

    overrides = ["train.epochs=1000", "data.batch_size=1", "train.max_steps_per_epoch=0"]
    config = load_config(tiny_config(tmp_path, digits_root), overrides)
    imagenet = {"sizes": {"train": 1_281_167}}
    with pytest.raises(ConfigError, match=r"^train\.epochs 1000 × 1,281,167 steps per epoch = 1,281,167,000 steps, "):
        check_run_length(config, imagenet)
    config.train.max_steps_per_epoch = 1000
    check_run_length(config, imagenet)  # cut short: a million steps
    check_run_length(config, {})  # a folder written before sizes were recorded: nothing to count
