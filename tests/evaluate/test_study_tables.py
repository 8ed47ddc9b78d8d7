"""The tables of ``cohort study`` and ``cohort report``, from recorded metric rows (no process)."""

from cohort.evaluate.metrics import Binning
from cohort.evaluate.report import Run, binning_note, summary_row, summary_table
from cohort.evaluate.study import calibration_table, curve_table, study_table

METRICS = {"acc": 0.9, "nll": 0.3, "ece": 0.05, "mce": 0.2, "c_nll": 0.28, "c_ece": 0.02}


def curve_run(path, scale, members=2, epochs=10, every=1):
    """A run evaluated after every ``every``-th of ``epochs`` epochs (metrics.jsonl counts from 0)."""
    evaluated = [e for e in range(epochs) if (e + 1) % every == 0]
    rows = [{"epoch": e, "split": "test", "member": "ensemble", "disagreement": scale * e / 10} for e in evaluated]
    rows += [{"epoch": e, "split": "test", "member": m} for e in evaluated for m in range(members)]
    return Run(path, "c", False, rows, evaluated[-1], False)


def test_the_curve_reads_the_last_evaluation_at_each_fraction_of_training_and_names_it(tmp_path):
    runs = {"c": [curve_run(tmp_path, 1.0), curve_run(tmp_path, 3.0)], "single": [curve_run(tmp_path, 1.0, members=1)]}
    table = curve_table(["c", "single"], runs)
    assert "single" not in table
    row = table.splitlines()[2]
    # At 10 %, 25 %, 50 %, 75 %, 100 % of 10 epochs: epochs 1, 2, 5, 7, 10 (counted from 1); mean of the seeds (×1, ×3).
    assert row == (
        "| c | 0.0000 ± 0.0000 (epoch 1) | 0.2000 ± 0.1000 (epoch 2) | 0.8000 ± 0.4000 (epoch 5) "
        "| 1.2000 ± 0.6000 (epoch 7) | 1.8000 ± 0.9000 (epoch 10) |"
    )


def test_curve_columns_that_read_one_evaluation_say_so(tmp_path):
    # eval_every 5 over 30 epochs: 10 % (epoch 3) has no evaluation yet and 25 % (epoch 7.5) has epoch 5's.
    table = curve_table(["c"], {"c": [curve_run(tmp_path, 1.0, epochs=30, every=5)] * 2})
    cells = table.splitlines()[2].strip("|").split("|")[1:]
    assert [cell.split("(")[1].strip(" )") for cell in cells] == [
        "epoch 5",
        "epoch 5",
        "epoch 15",
        "epoch 20",
        "epoch 30",
    ]


def test_one_seed_or_one_member_prints_no_spread_instead_of_a_zero_std(tmp_path):
    def table(members, acc):
        rows = {m: {**METRICS, "acc": a} for m, a in zip(range(members), acc)}
        return {**rows, "ensemble": {**METRICS, "disagreement": 0.01}}

    def run(acc):
        rows = [{"epoch": 4, "split": "test", "member": m, **row} for m, row in table(2, acc).items()]
        return Run(tmp_path, "c", False, rows, 4, False)

    one_seed = study_table(["c"], {"c": [run([0.9, 0.8])]}).splitlines()[2]
    assert "± 0.0000" not in one_seed and one_seed.count("± —") == 8 and "| 0.8500 ± — |" in one_seed
    two_seeds = study_table(["c"], {"c": [run([0.9, 0.8]), run([0.7, 0.6])]}).splitlines()[2]
    assert two_seeds.count("± —") == 0 and "| 0.7500 ± 0.1000 |" in two_seeds
    one_member = summary_row("c", "4", table(1, [0.9]))
    assert "± 0.0000" not in one_member and one_member.count("± —") == 6
    assert summary_row("c", "4", table(2, [0.9, 0.8])).count("± —") == 0


def test_reported_members_come_first_marked_beside_every_member_and_the_ensemble(tmp_path):
    def run(primary, aux, folder):
        rows = [
            {"epoch": 3, "split": "test", "member": 0, **{**METRICS, "acc": primary}},
            {"epoch": 3, "split": "test", "member": 1, **{**METRICS, "acc": aux}},
            {"epoch": 3, "split": "test", "member": "ensemble", **METRICS, "disagreement": 0.1},
        ]
        rows += [{**row, "split": "val"} for row in rows]
        return Run(tmp_path / folder, "d", False, rows, 3, True, ("primary", "aux"), "last", (0,), Binning(10, "floor"))

    runs = {"d": [run(0.9, 0.5, "s0"), run(0.8, 0.7, "s1")]}
    reported, every = study_table(["d"], runs).splitlines()[2:4]
    assert reported.startswith("| ★ d, reported: primary | 2 | 0.8500 ± 0.0500 |") and reported.count("—") == 4
    assert every.startswith("| d | 2 | 0.7250 ± 0.0250 |") and every.endswith("| 0.1000 ± 0.0000 |")
    calibration = calibration_table(["d"], runs).splitlines()
    assert calibration[2].startswith("| ★ d, reported: primary | 0.8500 ± 0.0500 |") and calibration[3].startswith(
        "| d |"
    )
    report = summary_table([runs["d"][0]]).splitlines()
    assert report[2].startswith("| ★ d (s0), reported: primary | selected (last) | 4 | 0.9000 ± — |")
    assert report[3].startswith("| d (s0) | selected (last) | 4 |")
    assert (
        binning_note(runs["d"])
        == "ECE, MCE and the other calibration errors: 10 bins, floor(p·M), as Diff-DML's metric.py."
    )


def test_a_csmac_run_reports_its_best_val_accuracy_minus_ece_on_its_reported_members(tmp_path):
    """``cohort report``'s "best" row for a run selected by CSMAC: the epoch with the highest val
    accuracy − ECE of its reported members (CSMAC's score without its threshold), not a metric
    named ``csmac`` (the merge of reports' best rows with Diff-DML's selection once raised KeyError)."""
    rows = []
    for epoch, (acc, ece, aux_acc) in enumerate([(0.80, 0.05, 0.99), (0.85, 0.02, 0.50), (0.86, 0.08, 0.99)]):
        for split in ("val", "test"):
            rows += [
                {"epoch": epoch, "split": split, "member": 0, **{**METRICS, "acc": acc, "ece": ece}},
                {"epoch": epoch, "split": split, "member": 1, **{**METRICS, "acc": aux_acc, "ece": 0.0}},
                {"epoch": epoch, "split": split, "member": "ensemble", **METRICS},
            ]
    run = Run(tmp_path, "d", False, rows, 2, True, ["primary", "aux"], "csmac", (0,), Binning())
    assert run.epochs() == [("selected (csmac)", 2), ("best val acc − ECE", 1), ("last", 2)]
    assert "| d (" in summary_table([run]) and "| best val acc − ECE | 2 |" in summary_table([run])
