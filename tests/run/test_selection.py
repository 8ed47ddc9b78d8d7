import json

import pytest

from cohort.config import ConfigError, parse_select_by
from cohort.run.selection import Selection


def test_parse_select_by():
    assert parse_select_by("last") is None
    assert parse_select_by("val_ensemble_nll") == ("ensemble", "nll")
    assert parse_select_by("val_members_c_ece") == ("members", "c_ece")
    with pytest.raises(ConfigError, match="selects on test; select on val"):
        parse_select_by("test_ensemble_acc")
    with pytest.raises(ConfigError, match="metric one of: acc, nll"):
        parse_select_by("val_ensemble_loss")


def table(nll0, nll1, ens_acc):
    return {0: {"nll": nll0, "acc": 0.0}, 1: {"nll": nll1, "acc": 0.0}, "ensemble": {"nll": 0.0, "acc": ens_acc}}


def test_lower_nll_and_higher_accuracy_win(tmp_path):
    by_nll = Selection("val_members_nll", tmp_path)
    assert by_nll.offer(0, table(1.0, 3.0, 0.5))
    assert not by_nll.offer(1, table(2.0, 2.5, 0.5))  # mean 2.25 > 2.0
    assert by_nll.offer(2, table(1.0, 2.0, 0.5))
    assert json.loads((tmp_path / "selection.json").read_text()) == {
        "select_by": "val_members_nll",
        "epoch": 2,
        "value": 1.5,
    }
    by_acc = Selection("val_ensemble_acc", tmp_path / "b")
    (tmp_path / "b").mkdir()
    assert (
        by_acc.offer(0, table(0, 0, 0.5))
        and not by_acc.offer(1, table(0, 0, 0.4))
        and by_acc.offer(2, table(0, 0, 0.6))
    )


def test_restore_forgets_a_choice_from_epochs_being_redone(tmp_path):
    first = Selection("val_ensemble_acc", tmp_path)
    first.offer(3, table(0, 0, 0.9))
    again = Selection("val_ensemble_acc", tmp_path)
    again.restore(resumed_epoch=1)
    assert again.best is None and not (tmp_path / "selection.json").exists()


def diffdml_csmac(history, baseline_acc, acc_threshold):
    """The epochs whose checkpoint Diff-DML's ``train.py`` saves as ``model_A.overall.th`` (L488-531),
    transcribed for this test only, from its ``infos`` (L159-167; ``overall_acc`` starts as the tuple
    ``(0.,)`` there, which numpy compares as 0) and a history of (val acc, val ECE), in percent."""
    infos = {"overall_acc": 0.0, "overall_acc-ECE": -1e8, "stage2": 0}
    saved = []
    for epoch, (test_acc, test_ECE) in enumerate(history):
        if baseline_acc > 0:
            if infos["stage2"] == 0:
                if test_acc > infos["overall_acc"]:
                    infos["overall_acc"] = test_acc
                    infos["overall_acc-ECE"] = test_acc - test_ECE
                    saved.append(epoch)
                    if test_acc > baseline_acc - acc_threshold:
                        infos["stage2"] = 1
            else:
                if test_acc > baseline_acc - acc_threshold and test_acc - test_ECE > infos["overall_acc-ECE"]:
                    infos["overall_acc"] = test_acc
                    infos["overall_acc-ECE"] = test_acc - test_ECE
                    saved.append(epoch)
    return saved


# In 1/256ths, so that every difference is exact in both units (the code's percent, our fractions):
# a = 200, c = 4, a − c = 196.
UNIT = 1 / 256
HISTORY = [
    (128, 26),  # 0 stage 1: the first evaluation, kept
    (128, 3),  # 1 the same accuracy: not kept (ties keep the earlier), however low its ECE
    (180, 13),  # 2 better: kept
    (170, 1),  # 3 worse accuracy: not kept
    (197, 15),  # 4 better and above a − c: kept; stage 2 from here, acc − ECE 182
    (205, 24),  # 5 stage 2: more accurate, but acc − ECE 181 < 182: not kept
    (196, 0),  # 6 acc − ECE 196, but the accuracy does not exceed a − c: not kept
    (200, 10),  # 7 acc − ECE 190: kept
    (203, 13),  # 8 acc − ECE 190, a tie: not kept
    (201, 8),  # 9 acc − ECE 193: kept
]
KEPT = [0, 2, 4, 7, 9]


def val_table(acc, ece, other=(0.0, 1.0)):
    """Member 0 (the reported one) and a member 1 whose numbers must not count."""
    return {
        0: {"acc": acc * UNIT, "ece": ece * UNIT},
        1: {"acc": other[0], "ece": other[1]},
        "ensemble": {"acc": 0.0, "ece": 0.0},
    }


def test_csmac_keeps_what_diffdmls_train_py_keeps(tmp_path):
    percent = [(100 * acc * UNIT, 100 * ece * UNIT) for acc, ece in HISTORY]
    assert diffdml_csmac(percent, 100 * 200 * UNIT, 100 * 4 * UNIT) == KEPT
    csmac = Selection("csmac", tmp_path, reported=[0], baseline_acc=200 * UNIT, acc_threshold=4 * UNIT)
    assert [e for e, (acc, ece) in enumerate(HISTORY) if csmac.offer(e, val_table(acc, ece))] == KEPT
    assert json.loads((tmp_path / "selection.json").read_text()) == {
        "select_by": "csmac",
        "epoch": 9,
        "value": 193 * UNIT,
        "acc": 201 * UNIT,
        "stage": 2,
    }


def test_csmac_resumes_in_its_stage_and_reads_every_member_without_reported_ones(tmp_path):
    first = Selection("csmac", tmp_path, reported=[0], baseline_acc=200 * UNIT, acc_threshold=4 * UNIT)
    assert [e for e in range(5) if first.offer(e, val_table(*HISTORY[e]))] == [0, 2, 4]
    resumed = Selection("csmac", tmp_path, reported=[0], baseline_acc=200 * UNIT, acc_threshold=4 * UNIT)
    resumed.restore(resumed_epoch=5)
    assert (resumed.stage, resumed.acc, resumed.best) == (2, 197 * UNIT, 182 * UNIT)
    assert [e for e in range(5, 10) if resumed.offer(e, val_table(*HISTORY[e]))] == [7, 9]
    # An accuracy at a − c exactly does not exceed it: stage 1 goes on.
    at_floor = Selection("csmac", tmp_path / "floor", baseline_acc=200 * UNIT, acc_threshold=4 * UNIT)
    (tmp_path / "floor").mkdir()
    assert at_floor.offer(0, val_table(196, 0, other=(196 * UNIT, 0.0))) and at_floor.stage == 1
    # No reported members: the members' mean (here 196.5 > 196, stage 2).
    assert at_floor.offer(1, val_table(197, 0, other=(196 * UNIT, 0.0))) and at_floor.stage == 2


def test_csmac_needs_a_baseline_accuracy():
    from cohort.config import TrainConfig

    with pytest.raises(
        ConfigError, match=r"csmac needs train\.baseline_acc.*got 0; e\.g\. train\.baseline_acc=0\.7787$"
    ):
        TrainConfig(select_by="csmac").validate()
    with pytest.raises(ConfigError, match=r"\(77\.87 % is 0\.7787\)"):
        TrainConfig(select_by="csmac", baseline_acc=77.87).validate()
    assert parse_select_by("csmac") == ("csmac", "csmac")
