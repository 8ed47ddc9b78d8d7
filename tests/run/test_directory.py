"""The run directory contract: what may start or resume where, and reading a finished run."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cohort import cli
from cohort.config import load_config
from cohort.run.checkpoint_files import best_dir, checkpoint_dir, mark_complete
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, write_json
from tests.conftest import REPO, tiny_config


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


# --- files a crash can tear, and damaged ones ---------------------------------------------


def finished_run(tmp_path, data_root) -> tuple[Path, Path]:
    """A finished-looking K = 2 run written in-process, as training writes it: config.yaml, two
    evaluations in metrics.jsonl, selection.json, and complete checkpoints after each epoch
    (their parts empty files: the tools here read only the markers). (config file, run)."""
    config_path = tiny_config(tmp_path, data_root, train={"select_by": "val_ensemble_nll"})
    config = load_config(config_path)
    run = RunDir(config.run_dir)
    run.create(config)
    for epoch in (0, 1):
        run.append_metrics(
            [
                {"epoch": epoch, "split": split, "member": member, "acc": 0.5, "nll": 1.0, "ece": 0.1}
                for split in ("val", "test")
                for member in (0, 1, "ensemble")
            ]
        )
    write_json(run.path / "selection.json", {"select_by": "val_ensemble_nll", "epoch": 1, "value": 1.0})
    for folder, epoch, step in ((checkpoint_dir(run.path, 6), 1, 6), (checkpoint_dir(run.path, 12), 2, 12)):
        folder.mkdir(parents=True)
        for member in (0, 1):
            (folder / f"member-{member}.pt").touch()
        mark_complete(folder, 2, {"epoch": epoch, "batch": 0, "step": step})
    shutil.copytree(checkpoint_dir(run.path, 12), best_dir(run.path))
    return config_path, run.path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_error(argv: list[str], capsys) -> str:
    """Run ``cohort ARGV`` in this process; its one ``cohort: error:`` line (exit status 2, no traceback)."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("cohort: error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, (code, err)
    return errors[0].removeprefix("cohort: error: ")


TOOLS = {
    "status": lambda config, run: ["status", str(run)],
    "report": lambda config, run: ["report", str(run)],
    "eval last": lambda config, run: ["eval", str(run), "--checkpoint", "last"],
    "eval best": lambda config, run: ["eval", str(run), "--checkpoint", "best"],
    "train resume=auto": lambda config, run: ["train", str(config), "resume=auto"],
}
"""The entry points that read a finished (or resumed) run's files, as argv of ``cohort``."""

CONFIG_FIX = "; restore it from the config the run was started with (its overrides applied)"
NEWEST = "{run}/checkpoints/step-000000012"
DAMAGED_NEWEST = f"; the checkpoint is damaged; delete {NEWEST} to resume from an earlier one"
DAMAGES = {
    # case: (file, its damaged content, what the error says (with {run}), the tools that read it)
    "metrics.jsonl, a line before the last not JSON": (
        "metrics.jsonl",
        b'{"epoch": 0, "split": "val", "mem\n',
        ["{run}/metrics.jsonl line 2 is not a metrics row", "the file is damaged; delete that line"],
        ["status", "report", "train resume=auto"],
    ),
    "selection.json not JSON": (
        "selection.json",
        b'{"select_by": "val_ens',
        ["{run}/selection.json (the epoch train.select_by chose) is not valid JSON", "; delete it: `cohort report`"],
        ["report", "train resume=auto"],
    ),
    "selection.json, its epoch a string": (
        "selection.json",
        b'{"select_by": "val_ensemble_nll", "epoch": "1", "value": 1.0}',
        ["{run}/selection.json (the epoch train.select_by chose): epoch must be an integer, got '1'; delete it"],
        ["report"],
    ),
    "the newest COMPLETE.json not JSON": (
        "checkpoints/step-000000012/COMPLETE.json",
        b'{"members": 2, "ep',
        [f"{NEWEST}/COMPLETE.json is not valid JSON at line 1 column 16{DAMAGED_NEWEST}"],
        ["status", "eval last", "train resume=auto"],
    ),
    "the newest COMPLETE.json without its step": (
        "checkpoints/step-000000012/COMPLETE.json",
        b'{"members": 2, "epoch": 2, "batch": 0}',
        [f"{NEWEST}/COMPLETE.json has no key step{DAMAGED_NEWEST}"],
        ["status", "eval last", "train resume=auto"],
    ),
    "best's COMPLETE.json not an object": (
        "checkpoints/best/COMPLETE.json",
        b"[]",
        ["{run}/checkpoints/best/COMPLETE.json must hold a JSON object, not list", "delete {run}/checkpoints/best and"],
        ["eval best"],
    ),
    "config.yaml not YAML": (
        "config.yaml",
        b"name: [test\n",
        ["{run}/config.yaml is not valid YAML at line 2" + CONFIG_FIX],
        list(TOOLS),
    ),
    "config.yaml not a mapping": (
        "config.yaml",
        b"- 1\n- 2\n",
        ["{run}/config.yaml must hold a YAML mapping of config keys, not list" + CONFIG_FIX],
        list(TOOLS),
    ),
    "config.yaml not UTF-8": (
        "config.yaml",
        b"name: t\xffst\n",
        ["{run}/config.yaml is not UTF-8 text (byte 0xff on line 1)" + CONFIG_FIX],
        list(TOOLS),
    ),
    "config.yaml empty": ("config.yaml", b"", ["{run}/config.yaml is empty" + CONFIG_FIX], list(TOOLS)),
    "submission.json without its job_id": (
        "submission.json",
        b'{"logs": []}',
        ["{run}/submission.json (the SLURM job that trains the run) has no key job_id; delete it"],
        ["status"],
    ),
}


@pytest.mark.parametrize(
    "case, tool", [pytest.param(case, tool, id=f"{case} [{tool}]") for case, v in DAMAGES.items() for tool in v[3]]
)
def test_a_damaged_file_is_one_line_naming_it_in_every_tool_that_reads_it(case, tool, digits_root, tmp_path, capsys):
    config, run = finished_run(tmp_path, digits_root)
    assert cli.main(TOOLS["status"](config, run)) == 0, capsys.readouterr().err  # whole, it reads
    path, content, says, _ = DAMAGES[case]
    if path == "metrics.jsonl":  # the damaged line replaces the second of twelve
        lines = (run / path).read_bytes().splitlines(keepends=True)
        content = b"".join([lines[0], content, *lines[2:]])
    (run / path).write_bytes(content)
    before = snapshot(run)
    line = cli_error(TOOLS[tool](config, run), capsys)
    for part in says:
        assert part.format(run=run) in line, line
    assert snapshot(run) == before  # nothing written, nothing lost


TORN = b'{"epoch": 2, "split": "val", "member": 0, "ac'
"""A row cut short by a crash while it was appended (after two whole evaluations)."""


def test_a_torn_last_line_of_the_metrics_is_left_out_with_one_notice(digits_root, tmp_path, capsys):
    _, run = finished_run(tmp_path, digits_root)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(TORN)
    before = snapshot(run)
    assert cli.main(["status", str(run)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"cohort: {run}/metrics.jsonl ends in a torn line (a crash while it was written); reading the rows before it"
    ]
    assert out.splitlines()[-1] == "finished: yes (2 evaluation(s) logged)"
    assert snapshot(run) == before  # a reader leaves it as it is


def test_a_resumed_run_rewrites_its_metrics_without_the_torn_line(digits_root, tmp_path, capsys):
    from cohort.preflight import plan_run
    from cohort.train.checkpointer import Position
    from cohort.train.recorder import Recorder

    config_path, run = finished_run(tmp_path, digits_root)
    metrics = run / "metrics.jsonl"
    whole = metrics.read_bytes()
    metrics.write_bytes(whole + TORN)
    config = load_config(config_path, ["resume=auto"])
    assert plan_run(config).continues  # the check before any process starts reads past it, quietly
    assert capsys.readouterr().err == ""
    # Rank 0 of the resumed run, at the end of epoch 2 (step 12): the rows of epochs 0 and 1 stay.
    Recorder(config, RunDir(run), True, [], None).start((checkpoint_dir(run, 12), Position(2, 0, 12)))
    assert metrics.read_bytes() == whole
    assert capsys.readouterr().err.splitlines() == [
        f"cohort: {metrics} ended in a torn line (a crash while it was written); rewrote it without that line"
    ]
    assert not list(run.glob(".*.tmp"))


def contract_entries(text: str) -> list[str]:
    """The ``RUN_DIR/<entry>`` names a listing of the run directory gives, in order."""
    return re.findall(r"^\s*RUN_DIR/(\S+)", text, re.M)


def test_the_run_directory_is_documented_once_as_its_contract_says():
    """docs/usage.md lists what a run leaves as cohort.run.directory's docstring does, entry for
    entry, and every file the contract names is a property of RunDir."""
    import cohort.run.directory as directory

    code, docs = contract_entries(directory.__doc__), contract_entries((REPO / "docs" / "usage.md").read_text())
    assert sorted(code) == sorted(docs)
    run = RunDir("r")
    named = {
        run.config_file, run.metrics_file, run.predictions, run.checkpoints, run.selection_file,
        run.teacher_plan_file, run.teacher_metrics_file, run.tensorboard, run.trace, run.submission_file,
        run.slurm_logs, run.nodes_file, run.node_marker("n").parent, run.hold_file, run.evaluation("c").path.parent,
        run.report_file, run.tracking_file, run.wandb, run.mlruns, run.stalled_file,
    }  # fmt: skip
    tops = {entry.split("/")[0].split(",")[0] for entry in code}
    assert {p.name for p in named} == tops


def test_a_file_an_earlier_cohort_named_otherwise_is_still_read(tmp_path):
    run = RunDir(tmp_path)
    assert run.readable(run.teacher_plan_file) == run.teacher_plan_file  # neither exists: the new name
    (tmp_path / "teacher.json").write_text("{}")
    assert run.readable(run.teacher_plan_file) == tmp_path / "teacher.json"
    run.teacher_plan_file.write_text("{}")
    assert run.readable(run.teacher_plan_file) == run.teacher_plan_file  # the new one wins
