"""The run directory contract: what may start or resume where, and reading a finished run."""

import pytest
import yaml

from cohort.config import load_config
from cohort.run_dir import RunDir, RunDirError
from tests.conftest import REPO


def format_1_run(tmp_path):
    """A run directory as cohort wrote it before the objective's terms moved under loss:."""
    run = tmp_path / "old-run"
    run.mkdir()
    old = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    old["mimicry"] = old.pop("loss")["mimicry"]
    old["train"]["label_smoothing"] = 0.0
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    return run


def test_a_format_1_run_directory_is_refused_in_one_line_naming_the_format(tmp_path):
    run = format_1_run(tmp_path)
    before = (run / "config.yaml").read_text()
    config = load_config(REPO / "configs" / "demo.yaml", [f"run_dir={run}", "resume=auto"])
    expected = (
        rf"^{run}/config\.yaml is a config of format 1 \(it has mimicry:, now loss\.mimicry\), written by an "
        rf"earlier cohort; move those keys under loss: to read this run, and finish training it with the "
        rf"version that started it$"
    )
    with pytest.raises(RunDirError, match=expected):
        RunDir(run).check(config)
    with pytest.raises(RunDirError, match=expected):
        RunDir(run).load_config()
    assert (run / "config.yaml").read_text() == before


def test_a_finished_runs_config_is_read_as_the_typed_tree(tmp_path):
    run = tmp_path / "run"
    config = load_config(REPO / "configs" / "digits_independent.yaml", [f"run_dir={run}"])
    RunDir(run).create(config)
    again = RunDir(run).load_config()
    assert again == config and again.independent


def test_a_run_written_before_a_key_existed_resumes_with_that_key_at_its_default(tmp_path):
    run = tmp_path / "run"
    config = load_config(REPO / "configs" / "demo.yaml", [f"run_dir={run}"])
    RunDir(run).create(config)
    written = yaml.safe_load((run / "config.yaml").read_text())
    del written["train"]["members_per_gpu"], written["train"]["pin_cores"]  # as an earlier cohort wrote it
    (run / "config.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    RunDir(run).check(load_config(REPO / "configs" / "demo.yaml", [f"run_dir={run}", "resume=auto"]))
    with pytest.raises(RunDirError, match=r"different config \(train\.pin_cores: False there, True here\)"):
        RunDir(run).check(
            load_config(REPO / "configs" / "demo.yaml", [f"run_dir={run}", "resume=auto", "train.pin_cores=true"])
        )
