"""cohort eval, report and dee on a finished run (the session's dml_pair fixture)."""

import json
import shutil

import matplotlib.image
import numpy as np
import pytest
import yaml

from cohort.run.checkpoint_files import MARKER
from tests.conftest import run_cli

pytestmark = pytest.mark.multiprocess


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("cohort: error: "), result.stderr
    return lines[0]


def test_training_records_the_selected_epoch_and_its_checkpoint(dml_pair):
    _, run, _ = dml_pair
    selection = json.loads((run / "selection.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val_nll = {r["epoch"]: r["nll"] for r in rows if r["split"] == "val" and r["member"] == "ensemble"}
    assert selection["epoch"] == min(val_nll, key=val_nll.get)
    assert (run / "checkpoints" / "best" / MARKER).is_file()
    assert (run / "predictions" / "best" / "test.npz").is_file()
    ensemble = next(r for r in rows if r["member"] == "ensemble" and r["split"] == "test")
    assert {
        "brier",
        "ece",
        "cw_ece",
        "adaece",
        "c_nll",
        "c_ece",
        "temperature",
        "disagreement",
        "pairwise_kl",
        "subensembles",
    } <= set(ensemble)


def test_eval_reproduces_the_selected_epochs_test_metrics(dml_pair):
    _, run, _ = dml_pair
    result = run_cli("eval", str(run), "--checkpoint", "best")
    assert result.returncode == 0, result.stderr[-2000:]
    epoch = json.loads((run / "selection.json").read_text())["epoch"]
    trained = {
        r["member"]: r
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r["epoch"] == epoch and r["split"] == "test"
    }
    evaluated = {
        r["member"]: r
        for r in map(json.loads, (run / "eval" / "best" / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "test"
    }
    for member in (0, 1, "ensemble"):
        for key in ("acc", "nll", "ece", "c_nll"):
            assert evaluated[member][key] == pytest.approx(trained[member][key], abs=1e-5)
    saved = np.load(run / "eval" / "best" / "predictions" / "test.npz")
    np.testing.assert_allclose(saved["logits"], np.load(run / "predictions" / "best" / "test.npz")["logits"], atol=1e-5)


def test_eval_on_the_k_by_r_layout_gives_training_s_predictions(dml_pair, tmp_path):
    """K = 2 members × 2 replicas, four real processes: each loads its member's part and
    predicts its shard; the gathered logits are training's own for that checkpoint."""
    _, run, _ = dml_pair
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval"))
    result = run_cli("eval", str(copy), "--checkpoint", "best", "--distributed", "--replicas", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ensemble" in result.stdout and result.stdout.count("wrote ") == 1  # rank 0 alone writes
    for split in ("val", "test"):
        saved, trained = (
            np.load(folder / f"{split}.npz")
            for folder in (copy / "eval" / "best" / "predictions", run / "predictions" / "best")
        )
        assert saved["logits"].shape == trained["logits"].shape
        np.testing.assert_array_equal(saved["labels"], trained["labels"])
        np.testing.assert_allclose(saved["logits"], trained["logits"], atol=1e-5)


def test_report_writes_markdown_and_readable_figures(dml_pair, tmp_path):
    _, run, _ = dml_pair
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = run_cli("report", str(copy), str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    report = (copy / "report.md").read_text()
    # Two runs, three rows each: selected, best, last.
    assert report.count("| test (") == 6 and "members c_nll" in report and "![curves](curves.png)" in report
    for name in ("reliability.png", "curves.png", "ensemble_size.png"):
        image = matplotlib.image.imread(copy / name)
        assert image.shape[0] > 300 and image.shape[1] > 700
        assert image.std() > 0.05  # not a blank canvas


def test_dee_against_an_independent_reference(dml_pair, tmp_path, cli_here):
    _, run, _ = dml_pair
    independent = tmp_path / "independent"
    shutil.copytree(run, independent)
    config = yaml.safe_load((independent / "config.yaml").read_text())
    config["loss"]["mimicry"]["weight"] = 0.0
    (independent / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("dee", "--reference", str(independent), str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reference curve" in result.stdout and result.stdout.count("DEE") == 3
    line = one_error_line(cli_here("dee", "--reference", str(run), str(independent)))
    assert "the DEE reference must be an independent run" in line and "config.yaml" in line and "mimicry" in line
    # A run that names its reported members: they come first, marked, in dee and in report.
    reported = tmp_path / "reported"
    shutil.copytree(run, reported)
    config = yaml.safe_load((reported / "config.yaml").read_text())
    (reported / "config.yaml").write_text(yaml.safe_dump({**config, "reported_members": ["m1"]}))
    result = cli_here("dee", "--reference", str(independent), str(reported))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "DEE" in line and "c_nll" in line]
    assert [line.split()[1:3] for line in lines] == [["m1", "★"], ["m0", "c_nll"], ["ensemble", "c_nll"]]
    assert "★" in lines[0] and "★" not in lines[1]
    result = cli_here("report", str(reported))
    assert result.returncode == 0, result.stderr
    assert "| ★ test (reported), reported: m1 |" in result.stdout and "| test (reported) |" in result.stdout
    assert "ECE, MCE and the other calibration errors: 15 bins, (lo, hi]." in (reported / "report.md").read_text()


def test_bad_run_directories_are_one_line_errors(dml_pair, tmp_path, cli_here):
    _, run, _ = dml_pair
    assert "is not a cohort run directory" in one_error_line(cli_here("report", str(tmp_path)))
    broken = tmp_path / "broken"
    # Without eval/: `cohort eval`'s predictions of the same checkpoint (which an earlier test may
    # have written into the shared run) would stand in for the missing ones.
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("eval"))
    shutil.rmtree(broken / "predictions")
    assert "predictions/best/test.npz is missing" in one_error_line(cli_here("report", str(broken)))
    shutil.copytree(run / "predictions", broken / "predictions")
    best = broken / "predictions" / "best" / "test.npz"
    np.savez(best, logits=np.zeros((3, 5, 10), np.float32), labels=np.zeros(5))
    line = one_error_line(cli_here("report", str(broken)))
    assert f"{best} is not the predictions cohort writes (labels is float64 of shape (5,), not integers" in line
    np.savez(best, logits=np.zeros((3, 5, 10), np.float32), labels=np.zeros(5, np.int64))
    line = one_error_line(cli_here("report", str(broken)))
    assert "(logits of 3 networks, but the run has 2); delete it and evaluate that checkpoint again with " in line
    assert f"`cohort eval {broken} --checkpoint best`" in line
    best.unlink()  # the fix the line gives: cohort eval writes eval/best/predictions/, which report reads
    assert cli_here("eval", str(broken), "--checkpoint", "best").returncode == 0
    assert cli_here("report", str(broken)).returncode == 0 and not best.exists()
    shutil.rmtree(broken / "checkpoints")
    assert "holds no complete checkpoint" in one_error_line(cli_here("eval", str(broken), "--checkpoint", "last"))


def test_the_report_names_members_shows_histograms_and_the_best_and_last_epochs(dml_pair, tmp_path):
    """In process, on a copy of the saved run whose members are given names (names change nothing
    a run computes): the table's selected, best and last rows, the figures' names and histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cohort.evaluate.report import COLUMNS, Run, build_report, draw_curves, draw_reliability

    _, run, _ = dml_pair
    copy = tmp_path / "named"
    shutil.copytree(run, copy)
    raw = yaml.safe_load((copy / "config.yaml").read_text())
    raw["members"][0]["name"], raw["members"][1]["name"] = "crop-a", "plain"
    (copy / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    val_nll = {r["epoch"]: r["nll"] for r in rows if r["split"] == "val" and r["member"] == "ensemble"}
    best, last = min(val_nll, key=val_nll.get), max(val_nll)

    _, figures, table = build_report([str(copy)])
    lines = [line.split(" | ") for line in table.splitlines() if line.startswith("| test (named)")]
    assert [(line[1], line[2]) for line in lines] == [
        ("selected (val_ensemble_nll)", str(best + 1)),
        ("best val_ensemble_nll", str(best + 1)),
        ("last", str(last + 1)),
    ]
    test_at = {r["epoch"]: r for r in rows if r["split"] == "test" and r["member"] == "ensemble"}
    ensemble_acc = 3 + len(COLUMNS)  # run, at, epoch, the members' columns, then the ensemble's
    assert lines[2][ensemble_acc] == f"{test_at[last]['acc']:.4f}"  # the last row reads the last epoch's test

    saved = Run.load(copy)
    fig = draw_reliability(saved)
    diagrams, histograms = fig.axes[:3], fig.axes[3:]
    assert [ax.get_title().split("\n")[0] for ax in diagrams] == ["crop-a", "plain", "ensemble"]
    for ax in histograms:
        shares = [bar.get_height() for bar in ax.patches]
        assert len(shares) == 15 and sum(shares) == pytest.approx(1.0)  # every test sample in a bin
        assert ax.get_xlabel() == "confidence" and len(ax.get_lines()) == 2  # mean confidence, accuracy
    plt.close(fig)
    fig = draw_curves([saved])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["ensemble", "crop-a", "plain", "members (mean)"]
    plt.close(fig)
    assert [f.name for f in figures] == ["reliability.png", "curves.png", "ensemble_size.png"]
