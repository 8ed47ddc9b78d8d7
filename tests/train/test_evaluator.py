"""The evaluator's own work beyond its cadence (tests/train/test_trainer.py): an evaluation a
resumed run finds missing is done again, as it was. One member trained in this process."""

from __future__ import annotations

import numpy as np

from cohort.config import load_config
from cohort.run.directory import RunDir
from cohort.train.evaluator import SPLITS
from cohort.train.recorder import Recorder
from tests.conftest import tiny_config, train_here


def test_a_finished_run_whose_last_rows_were_torn_evaluates_them_again_bit_identical(digits_root, tmp_path, capfd):
    config = tiny_config(tmp_path, digits_root, members=1, loss={"mimicry": {"weight": 0}})
    run = RunDir(train_here(config, "train.max_steps_per_epoch=3"))
    whole = run.metrics_file.read_bytes()
    lines = whole.splitlines(keepends=True)
    assert len(lines) == 8  # 2 epochs × (val, test) × (member 0, ensemble)
    predictions = {split: np.load(run.prediction_file(split)) for split in ("val", "test")}
    # The last epoch's test rows lost: one whole, the other torn half-way (a crash inside the append).
    run.metrics_file.write_bytes(b"".join(lines[:-2]) + lines[-1][: len(lines[-1]) // 2])
    for split in predictions:
        run.prediction_file(split).unlink()  # rewritten by the evaluation done again
    capfd.readouterr()

    train_here(config, "train.max_steps_per_epoch=3", "resume=auto")
    out = capfd.readouterr().out
    assert "lacks rows of the evaluation of epoch 2" in out and "already finished its 2 epochs" in out, out
    assert run.metrics_file.read_bytes() == whole  # every row as it was, training figures included
    for split, before in predictions.items():
        after = np.load(run.prediction_file(split))
        assert np.array_equal(after["logits"], before["logits"]) and np.array_equal(after["labels"], before["labels"])

    # Nothing lost now: a further resume's rank 0 finds the evaluation whole and redoes nothing.
    recorder = Recorder(load_config(config, ["train.max_steps_per_epoch=3"]), run, True, [], None)
    assert recorder.evaluated(1, SPLITS) and run.metrics_file.read_bytes() == whole
