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
